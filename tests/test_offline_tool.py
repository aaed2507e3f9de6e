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

    run = _Run(Sessionizer(SessionizerConfig(retention_s=retention_s)), max_buffered, spill_at, per_user=0)
    for n, e in enumerate(events, 1):
        run.add(n, e)
        assert run.buffered < max(max_buffered, 1)
    run.finish()
    early = run.spill.written
    out = list(run.results())
    return out, early, run.spill.written


def test_bounded_buffers_and_spilled_sessions_give_the_same_output() -> None:
    """How often users are settled and the final sessions spilled to sorted runs do not change the output:
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
    # What is late depends on the input order, not on the buffers: three days held in one buffer give
    # the same sessions (the first two days are not late behind the third).
    whole, _, _ = _run_all(events, 10**9, 10**9, 86400)
    assert whole == kept


def test_when_users_are_settled_does_not_change_the_output() -> None:
    """Each event is taken into its user's facts as it is read and the sessions are recomputed now and then
    (per user every ``BATCH`` events, for every user once ``max_buffered`` are taken): settling after every
    event gives the sessions of settling only at the end, on out-of-order input with duplicates."""
    import random

    from bench.bench_offline import disorder
    from tests.support.events import generate_events

    events = disorder(sorted(generate_events(seed=3, users=5, hours=3), key=lambda e: e.ts), random.Random(4))
    every_event, _, _ = _run_all(events, 1, 10**9, 86400)
    at_the_end, _, _ = _run_all(events, 10**9, 10**9, 86400)
    assert len(at_the_end) > 50
    assert every_event == at_the_end


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


def _mixed_corpus(tmp_path: Path) -> list[Path]:
    """Two files of twelve users over two days (out of order, duplicated), with every kind of bad line: not
    JSON, blank, no identity, a valid identity in an invalid event, and events older than a one-day
    retention horizon (late); the second file with CRLF line ends."""
    import random
    from datetime import UTC, datetime, timedelta

    from bench.bench_offline import disorder
    from tests.support.events import generate_events

    events = []
    for d in range(2):
        start = datetime(2026, 3, 2, 7, 30, tzinfo=UTC) + timedelta(days=d)
        events += generate_events(seed=40 + d, users=12, hours=3, start=start)
    events.sort(key=lambda e: e.ts)
    lines = [event_to_json(e) for e in disorder(events, random.Random(3))]
    # Late: the first user's first events once more, with new sequence numbers, at the very end.
    first = [e for e in events if e.user == events[0].user][:3]
    import msgspec

    lines += [event_to_json(msgspec.structs.replace(e, seq=10**9 + i)) for i, e in enumerate(first)]
    lines.insert(10, b"not json at all")
    lines.insert(20, b"")
    lines.insert(30, b'{"type":"Heartbeat"}')
    lines.insert(40, b'{"type":"Heartbeat","domain":"CORP","user":"u3","seq":"secret-title"}')
    half = len(lines) // 2
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"\n".join(lines[:half]) + b"\n")
    b.write_bytes(b"\r\n".join(lines[half:]) + b"\r\n\r\n")  # as written on Windows
    return [a, b]


def test_jobs_give_the_output_and_messages_of_one_process(tmp_path: Path) -> None:
    """``--jobs N`` splits the users between N processes; the sessions on stdout, the rejected and late
    lines on stderr (in input order) and the exit status are those of one process, whatever N."""
    files = [str(f) for f in _mixed_corpus(tmp_path)]
    one = run("--jobs", "1", "--retention", "86400", *files)
    assert one.returncode == 1, one.stderr
    err = one.stderr.decode()
    assert f"{files[0]}:11: rejected (undecodable)" in err
    assert f"{files[0]}:31: rejected" in err and f"{files[0]}:41: rejected" in err
    assert err.count("rejected (late)") == 3
    assert "secret-title" not in err
    users = {s.user_key for s in sessions_of(one.stdout)}
    assert len(users) >= 12
    for jobs in ("2", "3", "5"):
        many = run("--jobs", jobs, "--retention", "86400", *files)
        assert (many.returncode, many.stdout, many.stderr) == (one.returncode, one.stdout, one.stderr), jobs
    env = run(*files, env={"DESKTRACE_JOBS": "3", "DESKTRACE_RETENTION": "86400"})
    assert (env.stdout, env.stderr) == (one.stdout, one.stderr)
    # stdin is read by one process whatever --jobs says; the same sessions.
    whole = b"".join(Path(f).read_bytes() for f in files)
    piped = run("--jobs", "3", "--retention", "86400", "-", stdin=whole)
    assert piped.stdout == one.stdout


def test_files_with_a_byte_order_mark_give_the_sessions_of_plain_utf8(tmp_path: Path) -> None:
    """Windows tools write JSON Lines with a byte order mark: Notepad and ``Out-File -Encoding utf8`` a
    UTF-8 one, Windows PowerShell 5.1's ``>`` UTF-16LE with CRLF line ends. Each file gives the sessions and
    the messages (same line numbers) of its plain UTF-8 copy, in one process and in jobs; before, the first
    line of each was rejected (and with UTF-16 every line)."""
    a, b = _mixed_corpus(tmp_path)
    win = tmp_path / "win"
    win.mkdir()
    (win / a.name).write_bytes(b"\xef\xbb\xbf" + a.read_bytes())
    (win / b.name).write_bytes(b.read_bytes().decode("utf-8").encode("utf-16"))  # BOM + native (LE) order
    assert (win / b.name).read_bytes()[:2] == b"\xff\xfe"
    plain = run("--jobs", "1", "--retention", "86400", str(a), str(b))
    for jobs in ("1", "2"):
        got = run("--jobs", jobs, "--retention", "86400", str(win / a.name), str(win / b.name))
        assert got.returncode == plain.returncode
        assert got.stdout == plain.stdout, jobs
        assert got.stderr.replace(str(win).encode(), str(tmp_path).encode()) == plain.stderr, jobs


def test_a_user_belongs_to_one_job_whatever_its_spelling() -> None:
    from stream.offline_jobs import owner_of, owner_of_key

    upper = b'{"type":"Heartbeat","domain":"CORP","user":"Ann","seq":1}'
    lower = b'{"user":"ann","domain":"corp","type":"Heartbeat"}'
    for jobs in (2, 3, 7):
        assert owner_of(upper, jobs) == owner_of(lower, jobs) == owner_of_key("corp\\ann", jobs)
        assert owner_of(b"{not json", jobs) == owner_of(b"", jobs) == owner_of(b'{"user":"x"}', jobs) == 0
    spread = {owner_of_key(f"corp\\user{i}", 4) for i in range(40)}
    assert spread == {0, 1, 2, 3}


def test_the_spellings_of_one_user_are_one_user() -> None:
    """The user key is ``domain\\login`` lower-cased (sessions.md): events spelled ``CORP``/``Ann`` and
    ``corp``/``ann``, alternating, are one user's, with the sessions of the same events spelled one way."""
    import msgspec

    from tests.support.events import generate_events

    events = sorted(generate_events(seed=7, users=1, hours=2), key=lambda e: e.ts)
    events = [e for e in events if e.user != "legacy"] or events
    assert len({(e.domain, e.user) for e in events}) == 1
    mixed = [
        msgspec.structs.replace(e, domain=e.domain.upper(), user=e.user.title()) if i % 2 else e
        for i, e in enumerate(events)
    ]
    assert len({(e.domain, e.user) for e in mixed}) == 2
    one_way, _, _ = _run_all(events, 10**9, 10**9, 86400)
    both_ways, _, _ = _run_all(mixed, 10**9, 10**9, 86400)
    assert len(one_way) > 5
    assert both_ways == one_way


def test_jobs_started_by_spawn_give_the_same_output(tmp_path: Path) -> None:
    """Where there is no fork (Windows, and macOS by default) the jobs are spawned: fresh interpreters that
    import the job function and get its arguments pickled. The same sessions and messages."""
    import io

    from stream.core import SessionizerConfig
    from stream.offline_jobs import run_jobs

    files = [str(f) for f in _mixed_corpus(tmp_path)]
    one = run("--jobs", "1", "--retention", "86400", *files)
    out, err = io.BytesIO(), io.BytesIO()
    lines, rejected, count = run_jobs(2, files, SessionizerConfig(retention_s=86400), out, err, "spawn")
    assert out.getvalue() == one.stdout
    summary = f"desktrace-sessionize: {lines} lines, {rejected} rejected, {count} sessions\n"
    assert err.getvalue() + summary.encode() == one.stderr


def test_a_failed_job_is_an_error_not_a_partial_output(tmp_path: Path) -> None:
    import io

    import pytest

    from stream.core import SessionizerConfig
    from stream.offline_jobs import run_jobs

    out = io.BytesIO()
    with pytest.raises(RuntimeError, match=r"job \d of 2 failed \(exit status 1; its error is above\)"):
        run_jobs(2, [str(tmp_path / "vanished.jsonl")], SessionizerConfig(), out, io.BytesIO())
    assert out.getvalue() == b""
