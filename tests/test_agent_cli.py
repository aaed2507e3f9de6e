"""desktrace-agent: --help everywhere, settings errors, install/uninstall, simulate to JSON Lines, and `run`
with Kafka unreachable (events stay in the spool, a clean stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main
from agent.install_linux import desktop_entry
from agent.spool import Spool
from devstack.pipeline import free_port
from proto.codec import decode_event, read_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [[], ["run"], ["install"], ["uninstall"], ["simulate"]])
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: desktrace-agent" in capsys.readouterr().out


def test_bad_setting_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESKTRACE_HEARTBEAT_S", "often")
    assert main(["simulate", "--jsonl", "-", "--users", "1"]) == 2
    assert "heartbeat_s" in capsys.readouterr().err


def test_simulate_jsonl_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        args = ["simulate", "--users", "2", "--duration", "12h", "--start", "2024-03-04", "--seed", "5"]
        assert main([*args, "--jsonl", str(path)]) == 0
    assert a.read_bytes() == b.read_bytes()
    events = [e for _, e in read_jsonl(a.read_bytes().splitlines())]
    assert len(events) > 100 and all(not isinstance(e, Exception) for e in events)


def test_install_and_uninstall_autostart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform == "win32":
        pytest.skip("the Linux autostart entry is tested here; Windows uses schtasks")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    state = tmp_path / "state dir"
    assert main(["install", "--state-dir", str(state), "--heartbeat-s", "30"]) == 0
    entry = tmp_path / "cfg" / "autostart" / "desktrace-agent.desktop"
    text = entry.read_text()
    assert "[Desktop Entry]" in text and "Type=Application" in text
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    assert "-m agent.cli run" in exec_line and "--heartbeat-s 30" in exec_line
    assert f'"{state}"' in exec_line  # quoted: it has a space
    assert state.is_dir()
    assert main(["uninstall"]) == 0
    assert not entry.exists()
    assert main(["uninstall"]) == 0  # idempotent


def test_desktop_entry_quotes_reserved_characters() -> None:
    line = next(x for x in desktop_entry(["/opt/py", "a b", 'q"$x']).splitlines() if x.startswith("Exec="))
    # spec quoting, then the key-file escaping of the value doubles each backslash
    # (tests/test_install_linux.py launches such entries through GLib)
    assert line == 'Exec=/opt/py "a b" "q\\\\"\\\\$x"'


def simulated_agent_run(state: Path, bootstrap: str, *flags: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment (no ``DESKTRACE_*`` of the caller's) of ``desktrace-agent run`` with a
    synthetic user acting 30 times faster than real time, 1 s heartbeats and a 1 s HID interval."""
    cmd = [
        sys.executable,
        "-m",
        "agent.cli",
        "run",
        "--source",
        "simulated",
        "--sim-speed",
        "30",
        "--state-dir",
        str(state),
        "--kafka-bootstrap",
        bootstrap,
        "--heartbeat-s",
        "1",
        "--hid-interval-s",
        "1",
        *flags,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
    env["PYTHONPATH"] = str(ROOT)
    return cmd, env


def test_run_with_kafka_down_keeps_events_in_the_spool(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cmd, env = simulated_agent_run(state, f"127.0.0.1:{free_port()}")  # a port nobody listens on
    agent = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE)
    time.sleep(4)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err.decode()[-2000:]
    assert b"kafka unavailable" in err
    assert b"https://" not in err and b"Firefox" not in err  # logs carry counts, never titles or URLs
    spool = Spool(state / "spool.db")
    stored = [decode_event(s.value) for s in spool.peek(100_000)]
    assert [e.seq for e in stored] == list(range(spool.next_seq))
    assert stored[0].type == "AgentStart" and stored[-1].type == "AgentStop"
    assert any(e.type == "Heartbeat" for e in stored)
    assert (state / "agent_id").read_text().strip() == stored[0].agent_id == spool.agent_id
    spool.close()
