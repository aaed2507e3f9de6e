"""Shared helpers of the operations tests: building the Kubernetes overlays and finding tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.ci import fail_or_skip

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def tool(name: str, *extra_dirs: str) -> str:
    """Path of a command-line tool; fails under CI (where scripts/setup.sh installs it), skips elsewhere."""
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).exists()), None
    )
    if found:
        return found
    message = f"{name} is not installed: run scripts/setup.sh (make setup)"
    fail_or_skip(message)


def kustomize_build(overlay: str) -> list[dict]:
    """The documents of `kustomize build` of one overlay of deploy/k8s."""
    exe = tool("kustomize", str(Path.home() / "go" / "bin"))
    out = subprocess.run(
        [
            exe,
            "build",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(DEPLOY / "k8s" / "overlays" / overlay),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]
