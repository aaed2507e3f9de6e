"""End to end on Linux: the real agent (`desktrace-agent run`) in an X11 session under Xvfb with openbox, a
private D-Bus with a stand-in logind, and the real Kafka. A window titled with an e-mail address, a URL with
credentials and a query token: what reaches Kafka holds none of them, the window is still recorded (cleaned),
the session's lock and unlock arrive as events, and the agent's log names no title."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proto.codec import decode_event
from proto.topics import Topics
from tests.test_linux_presence import SESSION, FakeLogind, bus  # noqa: F401 (the fixture)
from tests.test_shipper_kafka import consume_all
from tests.test_sources_x11 import _await, _xdotool, xserver  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[1]

EMAIL = "alice.smith@example.com"
CREDENTIALS = "alice:S3cr3t@"
TITLE = (
    f"Statement for {EMAIL} - https://{CREDENTIALS}bank.example/acct?token=SECRET123#top - Mozilla Firefox"
)
SECRETS = (b"alice", b"S3cr3t", b"SECRET123", b"smith", b"token=", b"#top")


@pytest.mark.x11
@pytest.mark.kafka
async def test_titles_with_credentials_never_reach_kafka(
    xserver: str,  # noqa: F811
    bus: str,  # noqa: F811
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
) -> None:
    logind = await asyncio.to_thread(FakeLogind, bus, False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKTRACE_", "DBUS_", "XDG_SESSION"))}
    env.update({
        "PYTHONPATH": str(ROOT), "DISPLAY": xserver, "XDG_SESSION_TYPE": "x11", "XDG_SESSION_ID": "c7",
        "DBUS_SESSION_BUS_ADDRESS": bus, "DBUS_SYSTEM_BUS_ADDRESS": bus,
    })
    log = tmp_path / "agent.log"
    cmd = [sys.executable, "-m", "agent.cli", "run", "--kafka-bootstrap", kafka_bootstrap,
           "--topic-prefix", topics.prefix, "--state-dir", str(tmp_path / "state"), "--linger-s", "0",
           "--heartbeat-s", "2"]
    with log.open("wb") as err:
        agent = await asyncio.to_thread(subprocess.Popen, cmd, env=env, cwd=ROOT, stderr=err)
    term: asyncio.subprocess.Process | None = None
    try:
        await _await(lambda: log.read_bytes().count(b"presence watcher subscribed") >= 2, 60,
                     "the agent's presence watchers did not subscribe")
        term = await asyncio.create_subprocess_exec(
            "xterm", "-T", TITLE, "-e", "sleep", "120", env={**os.environ, "DISPLAY": xserver},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wid = await _xdotool(xserver, "search", "--sync", "--name", "^Statement for")
        await _xdotool(xserver, "windowactivate", "--sync", wid)
        await _xdotool(xserver, "key", "a")
        logind.signal(SESSION, "org.freedesktop.login1.Session", "Lock")
        await asyncio.sleep(0.5)
        logind.signal(SESSION, "org.freedesktop.login1.Session", "Unlock")
        await asyncio.sleep(3)  # a heartbeat or two, shipped with linger 0
    finally:
        agent.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(agent.wait, 60)
        if term is not None and term.returncode is None:
            term.terminate()
            await term.wait()
        await asyncio.to_thread(logind.close)
    stderr = log.read_bytes()
    assert code == 0, stderr.decode()[-3000:]

    records = await asyncio.to_thread(consume_all, kafka_bootstrap, topics)
    events = sorted((decode_event(value) for _, _, value, _ in records), key=lambda e: e.seq)
    assert [e.seq for e in events] == list(range(len(events)))  # every event arrived, once
    types = [e.type for e in events]
    assert types[0] == "AgentStart" and "AgentStop" in types, types
    assert events[0].session_type == "x11"  # type: ignore[union-attr]
    for _, _, value, _ in records:
        for secret in SECRETS:
            assert secret not in value, (secret, value)
    windows = [e for e in events if getattr(e, "title", "").startswith("Statement for")]
    assert windows, f"the window was not recorded: {types}"
    assert windows[0].title == (  # type: ignore[attr-defined]
        "Statement for [redacted] - https://bank.example/acct - Mozilla Firefox"
    )
    assert "Lock" in types and "Unlock" in types and types.index("Lock") < types.index("Unlock")
    assert any(t == "InjectedKeyboardEvent" for t in types)
    # the log carries counts and kinds, never a title or a URL
    assert b"bank.example" not in stderr and b"Statement" not in stderr and b"S3cr3t" not in stderr
