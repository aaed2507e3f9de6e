"""desktrace-replay against a real Kafka: valid lines arrive on the right raw topics with the agents' codec
and key; invalid lines are reported (file:line, error class, never the content) and counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

import proto
from proto import Topics
from tests.support.events import sample_event, sample_fields

pytestmark = pytest.mark.kafka

SECRET = "Quarterly-Salaries-Secret.xlsx"


def run_replay(
    args: list[str],
    bootstrap: str,
    prefix: str,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap, "DESKTRACE_TOPIC_PREFIX": prefix}
    return subprocess.run(
        [sys.executable, "-m", "stream.replay", *args],
        env=env,
        capture_output=True,
        input=stdin.decode() if stdin is not None else None,
        text=True,
        timeout=60,
        check=False,
    )


def consume_all(bootstrap: str, topics: Topics, count: int) -> dict[str, list[tuple[bytes, bytes]]]:
    async def go() -> dict[str, list[tuple[bytes, bytes]]]:
        consumer = AIOKafkaConsumer(
            *topics.raw,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        out: dict[str, list[tuple[bytes, bytes]]] = {}
        n = 0
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while n < count and loop.time() < deadline:
                for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                    out.setdefault(tp.topic, []).extend((r.key, r.value) for r in recs)
                    n += len(recs)
            # anything beyond the expected count would be a bug: give it a moment to show up
            for tp, recs in (await consumer.getmany(timeout_ms=300)).items():
                out.setdefault(tp.topic, []).extend((r.key, r.value) for r in recs)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def test_replay_publishes_valid_lines_and_reports_invalid_ones(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    heartbeat = sample_fields("Heartbeat", 3, user="Bob", domain="Lab")
    missing_user = sample_fields("Lock", 5)
    del missing_user["user"]
    naive = sample_fields("Unlock", 6)
    naive["ts"] = "2024-03-04T09:00:00"
    future = sample_fields("Logon", 7)
    future["type"] = "TeleportEvent"
    lines = [
        json.dumps(sample_fields("WindowSwitch", 1)),  # 1 ui
        json.dumps(sample_fields("HardwareKeyboardEvent", 2)),  # 2 hid
        "",  # 3 blank: ignored, not an error
        json.dumps(heartbeat),  # 4 presence, other user
        '{"type": "WindowSwitch", "title": "' + SECRET + '", ',  # 5 truncated JSON
        json.dumps(missing_user),  # 6 missing field
        json.dumps(naive),  # 7 naive time
        json.dumps(future),  # 8 unknown type
        json.dumps(sample_fields("Lock", 9)),  # 9 presence
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")

    proc = run_replay([str(src)], kafka_bootstrap, topics.prefix)

    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    err = proc.stderr
    assert f"{src}:5: rejected (undecodable)" in err
    assert f"{src}:6: rejected (invalid)" in err and "missing required field `user`" in err
    assert f"{src}:7: rejected (invalid)" in err and "timezone" in err
    assert f"{src}:8: rejected (unknown_type)" in err and "TeleportEvent" in err
    assert ":3:" not in err and ":1:" not in err
    assert SECRET not in err
    assert "published 4 events, rejected 4 lines" in err

    got = consume_all(kafka_bootstrap, topics, 4)
    assert sorted((t, len(v)) for t, v in got.items()) == sorted(
        [(topics.ui, 1), (topics.hid, 1), (topics.presence, 2)]
    )
    assert got[topics.ui] == [(b"corp\\alice", proto.encode_event(sample_event("WindowSwitch", 1)))]
    assert got[topics.hid] == [(b"corp\\alice", proto.encode_event(sample_event("HardwareKeyboardEvent", 2)))]
    presence = {proto.decode_event(v).seq: (k, proto.decode_event(v)) for k, v in got[topics.presence]}
    assert presence[3][0] == b"lab\\bob" and presence[3][1].type == "Heartbeat"
    assert presence[9] == (b"corp\\alice", sample_event("Lock", 9))


def test_replay_all_valid_from_stdin_exits_0(kafka_bootstrap: str, topics: Topics) -> None:
    data = "".join(json.dumps(sample_fields(t, i)) + "\n" for i, t in enumerate(("Logon", "WindowOpen")))
    proc = run_replay(["-"], kafka_bootstrap, topics.prefix, stdin=data.encode())
    assert proc.returncode == 0, proc.stderr
    assert "published 2 events, rejected 0 lines" in proc.stderr
    got = consume_all(kafka_bootstrap, topics, 2)
    assert {t: len(v) for t, v in got.items()} == {topics.presence: 1, topics.ui: 1}


def test_replay_usage_and_connection_errors_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps(sample_fields("Logon", 1)) + "\n", encoding="utf-8")
    unreachable = run_replay([str(src), "--max-wait", "2"], "127.0.0.1:1", "x.")
    assert unreachable.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in unreachable.stderr
    missing = run_replay([str(tmp_path / "nope.jsonl")], "127.0.0.1:1", "x.")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    usage = run_replay([], "127.0.0.1:1", "x.")
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_replay_broker_outage_says_where_to_resume_and_resuming_completes(tmp_path: Path) -> None:
    """A private broker stops while desktrace-replay publishes: after retrying for --max-wait the tool exits
    2 naming how many events were published and the line to resume from; resuming there once the broker
    is back publishes every event (a few again at most, never one missing)."""
    from devstack.kafka import KafkaInstance
    from devstack.pipeline import free_port
    from devstack.topics import ensure_topics

    kafka = KafkaInstance(tmp_path / "kafka", free_port(), free_port(), partitions=3,
                          heap=("-Xms128m", "-Xmx384m"), progress=lambda _: None)
    kafka.start(timeout=120)
    try:
        topics = Topics("r.")
        asyncio.run(ensure_topics(kafka.bootstrap, topics, partitions=3))
        lines = [json.dumps(sample_fields("HardwareKeyboardEvent", i)) + "\n" for i in range(1, 8001)]
        src = tmp_path / "events.jsonl"
        src.write_text("".join(lines), encoding="utf-8")
        env = {**os.environ, "DESKTRACE_KAFKA_BOOTSTRAP": kafka.bootstrap, "DESKTRACE_TOPIC_PREFIX": "r."}
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.replay", "-", "--max-wait", "3"], env=env,
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write("".join(lines[:5000]))  # five chunks, acknowledged before the next line is read
        proc.stdin.flush()
        assert len(consume_all(kafka.bootstrap, topics, 5000).get(topics.hid, [])) == 5000
        kafka.stop()
        stopped_at = time.monotonic()

        def feed_rest() -> None:  # the tool stops reading while it retries: do not block the test on it
            with contextlib.suppress(OSError):
                proc.stdin.write("".join(lines[5000:]))  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]

        threading.Thread(target=feed_rest, daemon=True).start()
        try:
            _, err = proc.communicate(timeout=180)
        finally:
            proc.kill()
        gave_up_after = time.monotonic() - stopped_at
        assert proc.returncode == 2, err
        # --max-wait bounds the attempt that first fails and then the retries: at most two of it, plus the
        # diagnosis (5 s) and the producer's stop (at most 10 s). Each attempt used to wait 20 s whatever
        # --max-wait said: the tool gave up after 60 s.
        assert gave_up_after < 2 * 3 + 5 + 10 + 5, (gave_up_after, err)
        assert "TimeoutError" in err and "CancelledError" not in err, err  # the reason, not its mechanics
        match = re.search(
            r"(\d+) events were published .* resume with --from-line (\d+)", err
        )
        assert match, err
        published, resume = int(match.group(1)), int(match.group(2))
        assert published >= 5000 and 5000 < resume <= published + 1, err
        assert "retrying" in err
        kafka.start(timeout=120)
        again = run_replay([str(src), "--from-line", str(resume)], kafka.bootstrap, "r.")
        assert again.returncode == 0, again.stderr
        assert f"published {len(lines) - resume + 1} events" in again.stderr
        got = consume_all(kafka.bootstrap, topics, len(lines))[topics.hid]
        seqs = {proto.decode_event(v).seq for _, v in got}
        assert seqs == set(range(1, len(lines) + 1))  # nothing missing
        assert len(got) <= len(lines) + (published - (resume - 1))  # repeats: only lines after the resume
    finally:
        kafka.stop()


def test_retry_budget_bounds_each_attempt_and_the_retries_by_max_wait() -> None:
    """``--max-wait`` 3: the first attempt waits at most 3 s for acknowledgements; after it failed, the
    retries (each at least ``MIN_ATTEMPT_S``) and their backoff end 3 s later; a success starts afresh."""
    from stream.replay import MIN_ATTEMPT_S, RetryBudget

    now = [100.0]
    budget = RetryBudget(3.0, 0.5, 10.0, clock=lambda: now[0])
    assert budget.wait_bound(20.0) == 3.0  # the first attempt
    assert RetryBudget(60.0, 0.5, 10.0).wait_bound(20.0) == 20.0  # the client's own cap when shorter
    now[0] += 3.0  # it failed
    assert budget.next_delay() == 0.5
    now[0] += 0.5
    assert budget.wait_bound(20.0) == 2.5  # a retry: what is left
    now[0] += 2.5
    assert budget.next_delay() is None  # spent: give up
    assert budget.wait_bound(20.0) == MIN_ATTEMPT_S
    budget.reset()
    assert budget.wait_bound(20.0) == 3.0
    assert budget.next_delay() == 0.5


Letter = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


def publish_with_headers(bootstrap: str, records: list[Letter]) -> None:
    from aiokafka import AIOKafkaProducer

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2**20)
        await producer.start()
        try:
            for topic, key, value, headers in records:
                await (await producer.send(topic, value, key=key, headers=headers))
        finally:
            await producer.stop()

    asyncio.run(go())


def test_dead_letters_go_back_to_their_raw_topic_whole_and_as_selected(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """``desktrace-replay --dead-letters`` publishes the dead letters of the selected error classes (and
    services) to the raw topic each names, key and bytes unchanged, and skips, counting them, the ones of
    other classes or services, the truncated ones (only their head is left) and those of another topic (a
    session record the broker refused). ``--dry-run`` publishes nothing."""
    from proto.codec import encode_event
    from proto.deadletter import deadletter_headers, deadletter_record

    def letter(event_seq: int, type_name: str, error_class: str, service: str, source: str | None = None,
               pad: int = 0) -> Letter:
        ev = sample_event(type_name, event_seq)
        value = encode_event(ev) + b"\0" * pad
        dl = deadletter_record(b"corp\\alice", value, deadletter_headers(
            "sessionizer failed: X", error_class, service, source or topics.for_event(ev), 0, event_seq))
        return topics.deadletter, dl.key, dl.value, dl.headers

    again = [letter(1, "Logon", "other", "stream"), letter(2, "WindowOpen", "other", "stream")]
    invalid = letter(3, "Logon", "invalid", "stream")
    by_sink = letter(4, "WindowOpen", "other", "sink-raw")
    truncated = letter(5, "Logon", "other", "stream", pad=1_100_000)
    session = letter(6, "Logon", "other", "stream", source=topics.sessions)
    assert len(truncated[2]) < 100_000  # deadletter_record kept its head only
    publish_with_headers(kafka_bootstrap, [*again, invalid, by_sink, truncated, session])

    dry = run_replay(["--dead-letters", "--dry-run"], kafka_bootstrap, topics.prefix)
    assert dry.returncode == 0, dry.stderr
    assert "read 6 dead letters: would publish 3 events again" in dry.stderr, dry.stderr
    assert consume_all(kafka_bootstrap, topics, 0) == {}

    stream_only = run_replay(["--dead-letters", "--service", "stream"], kafka_bootstrap, topics.prefix)
    assert stream_only.returncode == 0, stream_only.stderr
    summary = stream_only.stderr
    assert "read 6 dead letters: published 2 events again" in summary, summary
    for reason, n in (("error class not selected", 1), ("service not selected", 1),
                      ("truncated (only its head was kept)", 1), ("not from a raw topic", 1)):
        assert f"{reason}: {n}" in summary, summary
    got = consume_all(kafka_bootstrap, topics, 2)
    assert sorted(v for recs in got.values() for v in recs) == sorted((k, v) for _, k, v, _ in again)
    assert {t: len(v) for t, v in got.items()} == {topics.presence: 1, topics.ui: 1}

    both = run_replay(["--dead-letters", "--error-class", "invalid", "--error-class", "other"],
                      kafka_bootstrap, topics.prefix)
    assert both.returncode == 0 and "published 4 events again" in both.stderr, both.stderr
    got = consume_all(kafka_bootstrap, topics, 6)
    assert sorted(v for recs in got.values() for v in recs) == sorted(
        (k, v) for _, k, v, _ in [*again, *again, invalid, by_sink])

    none = run_replay(["--dead-letters", "--until", "2000-01-01T00:00:00Z"], kafka_bootstrap, topics.prefix)
    assert none.returncode == 0 and "published 0 events again" in none.stderr, none.stderr
    later = run_replay(["--dead-letters", "--since", "2999-01-01T00:00:00+01:00"], kafka_bootstrap,
                       topics.prefix)
    assert later.returncode == 0 and "read 0 dead letters" in later.stderr, later.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--dead-letters", "events.jsonl"], "not both"),
    (["--since", "2026-11-30T08:00:00Z", "events.jsonl"], "only go with --dead-letters"),
    (["--dead-letters", "--since", "2026-11-30T08:00:00"], "has no UTC offset"),
    (["--dead-letters", "--error-class", "bogus"], "invalid choice"),
    (["--dead-letters", "--from-line", "3"], "run a redrive again instead"),
])
def test_dead_letter_options_used_wrongly_exit_2_saying_why(args: list[str], message: str) -> None:
    proc = run_replay(args, "127.0.0.1:1", "x.")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
