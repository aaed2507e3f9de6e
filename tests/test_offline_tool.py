"""``desktrace-sessionize`` end to end: the console script on JSON Lines files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from proto.codec import decode_session_message, event_to_json
from proto.sessions import Session
from tests.sessionizer_helpers import Builder, at, brief
from tests.test_sessionizer_examples import EXAMPLE1, example1

SCRIPT = Path(sys.executable).parent / "desktrace-sessionize"


def run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
    full_env.update(env or {})
    return subprocess.run([str(SCRIPT), *args], input=stdin, capture_output=True, timeout=60, env=full_env)


def sessions_of(out: bytes) -> list[Session]:
    records = [decode_session_message(line) for line in out.splitlines()]
    assert all(isinstance(r, Session) for r in records)
    return records  # type: ignore[return-value]


def write_example1(path: Path, bad_line_at: int | None = None) -> int:
    b = Builder()
    example1(b)
    # A second user on another machine, to check the output order (user_key, then start).
    b2 = Builder()
    b2.add("HardwareMouseClick", at(8, 0), input_="hardware", host="pc9")
    lines = [event_to_json(e).replace(b'"user":"bob"', b'"user":"ann"') for e in b2.events]
    lines += [event_to_json(e) for e in reversed(b.events)]  # any order
    if bad_line_at is not None:
        lines.insert(bad_line_at - 1, b'{"type":"Heartbeat","seq":"secret-title"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def test_example_1_from_a_file(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    write_example1(f)
    proc = run(str(f))
    assert proc.returncode == 0, proc.stderr
    got = sessions_of(proc.stdout)
    assert [s.user_key for s in got] == ["corp\\ann"] + ["corp\\bob"] * 3
    assert brief(got[1:]) == EXAMPLE1
    assert brief(got[:1]) == [("active", None, "08:00:00", "08:00:00")]
    assert got[0].hosts == ["pc9"]
    # stdin gives the same output
    assert run("-", stdin=f.read_bytes()).stdout == proc.stdout


def test_a_bad_line_is_reported_and_the_rest_processed(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    write_example1(f, bad_line_at=5)
    proc = run(str(f))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"{f}:5: rejected (invalid)" in err
    assert "secret-title" not in err
    assert "1 rejected" in err
    assert brief(sessions_of(proc.stdout)[1:]) == EXAMPLE1


def test_gap_from_the_environment_and_flag(tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    write_example1(f)
    # With G = 3 min, 09:02 and 09:06 are 4 minutes apart: two active sessions.
    env_proc = run(str(f), env={"DESKTRACE_GAP": "180"})
    flag_proc = run("--gap", "180", str(f))
    assert env_proc.returncode == flag_proc.returncode == 0
    assert env_proc.stdout == flag_proc.stdout
    assert brief(sessions_of(flag_proc.stdout)[1:]) == [
        ("inactive", "idle", "08:59:00", "09:00:00"),
        ("active", None, "09:00:00", "09:02:00"),
        ("inactive", "idle", "09:02:00", "09:06:00"),
        ("active", None, "09:06:00", "09:06:00"),
        ("inactive", "idle", "09:06:00", "09:20:00"),
    ]


def test_help_and_bad_settings() -> None:
    assert run("--help").returncode == 0
    proc = run("--gap", "-5")
    assert proc.returncode == 2
    assert b"gap" in proc.stderr


def _run_all(
    events: list, max_buffered: int, spill_at: int, retention_s: float
) -> tuple[list[bytes], int, int]:
    """The offline run's output lines, the sorted runs spilled before the end and in all."""
    from stream.core import Sessionizer, SessionizerConfig
    from stream.offline import _Run

    run = _Run(Sessionizer(SessionizerConfig(retention_s=retention_s)), max_buffered, spill_at)
    for n, e in enumerate(events, 1):
        run.add(n, e)
        assert run.buffered <= max_buffered
    run.finish()
    early = run.spill.written
    out = list(run.results())
    return out, early, run.spill.written


def test_bounded_buffers_and_spilled_sessions_give_the_same_output() -> None:
    """The memory bounds (buffered events, final sessions spilled to sorted runs) do not change the output:
    three days of four users, in order."""
    from datetime import UTC, datetime, timedelta

    from tests.support.events import generate_events

    events = []
    for d in range(3):
        start = datetime(2026, 3, 2, 7, 30, tzinfo=UTC) + timedelta(days=d)
        events += generate_events(seed=d, users=4, hours=4, start=start)
    events.sort(key=lambda e: e.ts)
    # Retention longer than the input: the batching cannot change what is late.
    reference, _, runs = _run_all(events, 10**9, 10**9, 4 * 86400)
    assert runs == 0
    bounded, _, runs = _run_all(events, 300, 7, 4 * 86400)
    assert runs > 3
    assert bounded == reference
    got = [decode_session_message(line) for line in bounded]
    assert [(s.user_key, s.start) for s in got] == sorted((s.user_key, s.start) for s in got)
    assert len({s.user_key for s in got}) == 5  # four users and the legacy client
    # One-day retention: sessions before a user's pruned floor are final and leave memory early.
    kept, _, runs = _run_all(events, 300, 10**9, 86400)
    assert runs == 0
    spilled, early, _ = _run_all(events, 300, 7, 86400)
    assert early > 3
    assert spilled == kept


def test_legacy_max_span_from_the_environment_and_flag(tmp_path: Path) -> None:
    """Worked example 4 (L = 4 h) through ``desktrace-sessionize``; the default L is 4 h too, and a
    shorter L given by flag or DESKTRACE_LEGACY_MAX_SPAN caps the spans the same way."""
    from tests.test_sessionizer_legacy import EXAMPLE4, example4, span

    f = tmp_path / "legacy.jsonl"
    f.write_bytes(b"\n".join(event_to_json(e) for e in reversed(example4())) + b"\n")
    week = "604800"
    default = run("--retention", week, str(f))
    assert default.returncode == 0, default.stderr
    assert [span(s) for s in sessions_of(default.stdout)] == EXAMPLE4
    flag = run("--retention", week, "--legacy-max-span", "3600", str(f))
    env = run(str(f), env={"DESKTRACE_RETENTION": week, "DESKTRACE_LEGACY_MAX_SPAN": "3600"})
    assert flag.returncode == env.returncode == 0
    assert flag.stdout == env.stdout
    got = [span(s) for s in sessions_of(flag.stdout)]
    assert got[0] == ("active", None, "Fri 09:00", "Fri 10:00")
    assert ("active", None, "Tue 08:00", "Tue 09:00") in got
    assert run("--legacy-max-span", "0").returncode == 2
