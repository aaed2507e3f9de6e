"""JSON Schemas of the published records, generated from the Structs.

``python -m proto.schema --write`` regenerates ``proto/schemas/``; ``--check`` exits 1 when a kept file is
stale (the test suite runs the same comparison).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from proto.events import RawEvent
from proto.sessions import Session, SessionRetraction

SCHEMA_DIR = Path(__file__).with_name("schemas")

#: File name -> type whose schema it holds.
PUBLISHED: dict[str, Any] = {
    "raw-event.schema.json": RawEvent,
    "session.schema.json": Session,
    "session-retraction.schema.json": SessionRetraction,
}


def render(tp: Any) -> str:
    """The schema of ``tp`` as stable, pretty JSON text."""
    schema = msgspec.json.schema(tp)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the Structs generate."""
    from common.generated import stale

    return [p.name for p in stale(outputs(directory))]


def outputs(directory: Path = SCHEMA_DIR) -> dict[Path, str]:
    """Every published schema file and its wanted text."""
    return {directory / name: render(tp) for name, tp in PUBLISHED.items()}


def main(argv: list[str] | None = None) -> int:
    from common.generated import generated_files_main

    return generated_files_main("python -m proto.schema", __doc__, outputs, argv)


if __name__ == "__main__":
    raise SystemExit(main())
