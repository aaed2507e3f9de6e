"""JSON Schemas of the published records, generated from the Structs.

``python -m proto.schema --write`` regenerates ``proto/schemas/``; ``--check`` exits 1 when a kept file is
stale (the test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
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
    out = []
    for name, tp in PUBLISHED.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(tp):
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proto.schema", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate proto/schemas/")
    group.add_argument("--check", action="store_true", help="exit 1 when a schema file is stale")
    args = parser.parse_args(argv)
    if args.write:
        SCHEMA_DIR.mkdir(exist_ok=True)
        for name, tp in PUBLISHED.items():
            (SCHEMA_DIR / name).write_text(render(tp), encoding="utf-8")
            print(f"wrote {SCHEMA_DIR / name}", file=sys.stderr)
        return 0
    stale = stale_files()
    for name in stale:
        print(f"stale: proto/schemas/{name}: run `python -m proto.schema --write`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
