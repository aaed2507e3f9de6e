"""The gateway's OpenAPI description, kept in the repo as ``gateway/openapi.json``.

``python -m gateway.openapi --write`` regenerates it; ``--check`` exits 1 when it is stale (the test suite
runs the same comparison). The served copy is ``/schema/openapi.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

KEPT = Path(__file__).with_name("openapi.json")


def render() -> str:
    """The description the code generates, as stable, pretty JSON text."""
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(), start_kafka=False)
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    from common.generated import generated_files_main

    return generated_files_main("python -m gateway.openapi", __doc__, lambda: {KEPT: render()}, argv)


if __name__ == "__main__":
    raise SystemExit(main())
