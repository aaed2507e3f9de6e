"""Files generated from code and kept in the repo (JSON Schemas, the OpenAPI description, dashboards and
rules): one ``--write`` / ``--check`` command for all of them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def stale(outputs: Mapping[Path, str]) -> list[Path]:
    """The files of ``outputs`` (path -> wanted text) that are missing or differ."""
    return [p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def generated_files_main(
    prog: str, description: str | None, outputs: Callable[[], Mapping[Path, str]],
    argv: Sequence[str] | None = None,
) -> int:
    """``prog --write`` regenerates every file of ``outputs()``; ``prog --check`` exits 1 naming each stale
    one and the command that mends it (what the test suite and CI rely on)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the files")
    group.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    args = parser.parse_args(argv)
    files = outputs()
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
        return 0
    old = stale(files)
    for path in old:
        print(f"stale: {path}: run `{prog} --write`", file=sys.stderr)
    return 1 if old else 0
