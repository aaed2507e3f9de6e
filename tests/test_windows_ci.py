"""The Windows CI workflow: what it runs (the agent's tests, a 30 s smoke run with JSONL output checked by
event type) on windows-latest, and actionlint's verdict on it. It cannot run here; this keeps it correct."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ops_helpers import tool

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "windows-agent.yml"


def test_workflow_runs_the_agent_tests_and_the_smoke_run_on_windows() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == "windows-latest"
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'pip install -e ".[agent]"' in runs and "pytest" in runs
    tests = {p.name for p in (ROOT / "tests").glob("test_windows_*.py")} - {"test_windows_ci.py"}
    assert all(f"tests/{name}" in runs for name in tests), "every Windows test file runs on Windows"
    assert "scripts/windows_smoke.py --seconds 30 --jsonl" in runs
    assert (ROOT / "scripts" / "windows_smoke.py").exists()


def test_actionlint_accepts_the_workflow() -> None:
    exe = tool("actionlint", str(Path.home() / "go" / "bin"))
    done = subprocess.run([exe, str(WORKFLOW)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="on Windows the smoke script runs for real (CI)")
def test_smoke_script_says_it_needs_windows_elsewhere() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "windows_smoke.py"), "--seconds", "1"],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    assert done.returncode == 2 and "needs Windows" in done.stderr
