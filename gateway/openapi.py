"""The gateway's OpenAPI description, kept in the repo as ``gateway/openapi.json``.

``python -m gateway.openapi --write`` regenerates it; ``--check`` exits 1 when it is stale (the test suite
runs the same comparison). The served copy is ``/schema/openapi.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEPT = Path(__file__).with_name("openapi.json")


def render() -> str:
    """The description the code generates, as stable, pretty JSON text."""
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    app = create_app(GatewaySettings(), start_kafka=False)
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True) + "\n"


def is_stale(path: Path = KEPT) -> bool:
    return not path.exists() or path.read_text(encoding="utf-8") != render()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.openapi", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate gateway/openapi.json")
    group.add_argument("--check", action="store_true", help="exit 1 when gateway/openapi.json is stale")
    args = parser.parse_args(argv)
    if args.write:
        KEPT.write_text(render(), encoding="utf-8")
        print(f"wrote {KEPT}", file=sys.stderr)
        return 0
    if is_stale():
        print("stale: gateway/openapi.json: run `python -m gateway.openapi --write`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
