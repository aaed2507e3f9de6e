"""The alert rules pass promtool's checks and unit tests; generated ops files are fresh."""

from __future__ import annotations

import subprocess
import sys

from tests.ops_helpers import DEPLOY, ROOT, tool


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    out = _promtool("check", "rules", str(DEPLOY / "prometheus/rules/desktrace.rules.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_test_rules() -> None:
    out = _promtool("test", "rules", str(DEPLOY / "prometheus/tests/desktrace.test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_summary_that_says_what_to_do() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus/rules/desktrace.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    names = {r["alert"] for r in alerts}
    assert {
        "DesktraceServiceDown",
        "DesktraceConsumerLagGrowing",
        "DesktraceDeadLetters",
        "DesktraceSinkWriteFailures",
        "DesktraceNoEventsFromFleet",
        "DesktraceSessionCloseLagHigh",
    } <= names
    for r in alerts:
        assert r["annotations"]["summary"] and len(r["annotations"]["description"]) > 40, r["alert"]


def test_generated_dashboards_and_prometheusrule_are_fresh() -> None:
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
