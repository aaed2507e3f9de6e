"""Poison records on the real broker: records of 1,000,000 and 1,048,000 bytes (and one at the broker's own
limit) on every raw topic among good events. The stream worker neither dies nor stalls, the sessions equal
the offline tool's, and the big records are in the dead-letter topic with their reason (whole when they fit,
else their head with size and digest). A sink whose dead letters the broker refuses for good keeps going.
(The whole pipeline, sinks included, with two topic prefixes: tests/test_resilience_pipeline.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from proto.deadletter import header_map
from proto.topics import Topics
from tests.support.events import generate_events
from tests.support.kafka import at_least, consume_until, publish_events
from tests.support.process import ServiceHandle, worker_process
from tests.support.stream import (
    SessionView,
    delete_internal_topics,
    describe_difference,
    offline_sessions,
    worker_env,
)

pytestmark = pytest.mark.kafka

async def topics_with_small_deadletter(bootstrap: str, topics: Topics) -> None:
    """``topics``, the dead-letter topic refusing records over 20,000 bytes (one partition)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from devstack.topics import ensure_topics

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        small = NewTopic(topics.deadletter, 1, 1, topic_configs={"max.message.bytes": "20000"})
        await admin.create_topics([small])
    finally:
        await admin.close()
    await ensure_topics(bootstrap, topics, partitions=3)


#: The broker's (and the topics') record batch limit in devstack: Kafka's default message.max.bytes.
BROKER_LIMIT = 1_048_588


def big_records(topics: Topics, template: Any) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, error class): per raw topic, 1,000,000 bytes of garbage and an event of
    1,048,000 bytes whose user name is far over the identity limit."""
    good = msgspec.to_builtins(template)
    out = []
    rng = random.Random(7)
    for topic in topics.raw:
        key = b"corp\\user0"
        junk = b"\xc1" + rng.randbytes(1_000_000 - 1)
        event = msgspec.msgpack.encode({**good, "seq": 50_000 + len(out), "user": ""})
        pad = 1_048_000 - len(event)
        huge = msgspec.msgpack.encode({**good, "seq": 50_000 + len(out), "user": "u" * pad})
        huge = msgspec.msgpack.encode(
            {**good, "seq": 50_000 + len(out), "user": "u" * (pad - (len(huge) - 1_048_000))}
        )
        assert len(junk) == 1_000_000 and len(huge) == 1_048_000
        out += [(topic, key, junk, "undecodable"), (topic, key, huge, "invalid")]
    return out


def at_broker_limit(topic: str, key: bytes) -> tuple[str, bytes, bytes, str]:
    """A record as large as the broker accepts: its dead-letter copy (plus headers) cannot be whole."""
    overhead = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"x" * 1_000_000, []) - 1_000_000
    size = BROKER_LIMIT - overhead
    return (topic, key, b"\xc1" + b"\x00" * (size - 1), "undecodable")


async def publish_big(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=BROKER_LIMIT, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, want: int, within_s: float) -> list[Any]:
    return await consume_until(bootstrap, topic, at_least(want), within_s, settle_s=0.3)


@pytest.fixture
def worker(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[ServiceHandle]:
    # Default app id and metrics address: both derive from the test's topic prefix.
    env = worker_env(kafka_bootstrap, topics, tmp_path / "data")
    del env["DESKTRACE_STREAM_APP_ID"]
    w = worker_process(env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()
    try:
        asyncio.run(asyncio.wait_for(
            delete_internal_topics(kafka_bootstrap, f"desktrace-stream-{topics.prefix}"), 10))
    except Exception:  # best effort
        pass


async def test_stream_dead_letters_records_up_to_the_broker_limit_without_dying(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, worker: ServiceHandle
) -> None:
    events = generate_events(seed=31, users=2, hours=2)
    expected = offline_sessions(events, tmp_path)
    big = [*big_records(topics, events[0]), at_broker_limit(topics.hid, b"corp\\user1")]
    half = len(events) // 2
    await publish_events(kafka_bootstrap, topics, events[:half])
    await publish_big(kafka_bootstrap, [b[:3] for b in big])
    await publish_events(kafka_bootstrap, topics, events[half:])

    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, 90)
        assert ok, describe_difference(view.sessions, expected) + "\n" + worker.tail()

    dead = await read_topic(kafka_bootstrap, topics.deadletter, len(big), 60)
    assert len(dead) == len(big), worker.tail()
    by_digest = {hashlib.sha256(v).hexdigest(): (t, k, v, c) for t, k, v, c in big}
    whole = 0
    for r in dead:
        headers = header_map(r.headers)
        digest = headers.get("desktrace-original-sha256") or hashlib.sha256(r.value).hexdigest()
        topic, key, value, error_class = by_digest.pop(digest)
        assert headers["desktrace-error-class"] == error_class
        assert headers["desktrace-source-topic"] == topic and headers["desktrace-service"] == "stream"
        assert headers["desktrace-error"]
        assert r.key == key
        if "desktrace-original-size" in headers:
            assert int(headers["desktrace-original-size"]) == len(value)
            assert value.startswith(r.value) and len(r.value) == int(headers["desktrace-truncated"])
        else:
            whole += 1
            assert r.value == value
    assert by_digest == {}
    assert whole == 6  # the 1,000,000 and 1,048,000-byte records are copied whole; the largest is not
    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
    assert worker.get("/readyz")[0] == 200
    assert worker.metric("desktrace_stream_deadletters_truncated_total") == 1


@pytest.mark.postgres
async def test_sink_skips_dead_letters_the_broker_refuses_for_good_and_keeps_writing(
    kafka_bootstrap: str, fresh_pg_dsn: str
) -> None:
    """A dead-letter topic whose max.message.bytes is below even a dead letter's head: the raw sink
    neither retries for ever nor stops; it counts and logs the refusal and writes every good row."""
    import uuid

    from devstack.topics import delete_topics
    from sinks.writers import RawWriter
    from tests.support.events import event_mix
    from tests.support.kafka import event_records
    from tests.support.sinks import fetchval, running, settings_for, wait_until

    topics = Topics(f"t{uuid.uuid4().hex[:12]}.")
    await topics_with_small_deadletter(kafka_bootstrap, topics)
    try:
        events = event_mix(300, agents=3)
        records: list[Any] = event_records(topics, events)
        records.insert(100, (topics.hid, b"corp\\user0", b"\xc1" + b"x" * 200_000))  # head 64 KiB > 20,000
        records.insert(200, (topics.ui, b"corp\\user1", b"\xc1 small junk"))  # fits: dead-lettered
        await publish_big(kafka_bootstrap, records)
        settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=128)
        async with running(RawWriter(), settings) as runner:

            async def done() -> bool:
                rows = await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events")
                reg = runner.metrics.registry
                skipped = reg.get_sample_value("desktrace_sink_dead_letters_refused_total", {
                    "table": "raw_events", "reason": "MessageSizeTooLargeError", "action": "skipped"})
                # The rows of a batch are in the table before its dead letters are acknowledged (and
                # counted), and two batches are written at once: wait for the count too.
                letters = reg.get_sample_value("desktrace_sink_dead_letters_total", {"table": "raw_events"})
                return rows == len(events) and skipped == 1 and letters == 1

            assert await wait_until(done, 60), "sink stalled on a dead letter the broker refuses"
            reg = runner.metrics.registry
            assert reg.get_sample_value("desktrace_sink_dead_letters_refused_total", {
                "table": "raw_events", "reason": "MessageSizeTooLargeError", "action": "head"}) == 1
            assert reg.get_sample_value(
                "desktrace_sink_rows_rejected_total", {"table": "raw_events", "reason": "undecodable"}
            ) == 2
        dead = await read_topic(kafka_bootstrap, topics.deadletter, 1, 10)
        assert [r.value for r in dead] == [b"\xc1 small junk"]
    finally:
        await delete_topics(kafka_bootstrap, topics)


async def test_failover_with_the_default_session_timeout_and_readiness_during_it(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """Two workers with the default 10 s session timeout; one is SIGKILLed mid-stream. The survivor is not
    ready while the dead member's partitions move (rebalance), ready again once it owns them, and the
    sessions still equal the offline tool's, within the session timeout plus a margin."""
    events = generate_events(seed=12, users=6, hours=2)
    expected = offline_sessions(events, tmp_path)
    workers = []
    for name in ("a", "b"):
        env = worker_env(kafka_bootstrap, topics, tmp_path / f"data-{name}",
                         DESKTRACE_BATCH_SIZE="20", DESKTRACE_BATCH_WITHIN="0.05")
        del env["DESKTRACE_SESSION_TIMEOUT"], env["DESKTRACE_STREAM_APP_ID"]  # defaults: 10 s, from prefix
        workers.append(worker_process(env, tmp_path / f"worker-{name}.log"))
    a, b = workers
    try:
        a.start(ready_timeout=90)
        b.start(ready_timeout=90)
        await publish_events(kafka_bootstrap, topics, events[: len(events) // 2])
        await asyncio.sleep(3)
        await publish_events(kafka_bootstrap, topics, events[len(events) // 2:])
        a.kill()
        killed = time.monotonic()
        states: list[tuple[float, int]] = []
        while time.monotonic() - killed < 40:
            states.append((time.monotonic() - killed, b.get("/readyz", timeout=2)[0]))
            if any(code != 200 for _, code in states) and states[-1][1] == 200:
                break
            await asyncio.sleep(0.2)
        not_ready = [t for t, code in states if code != 200]
        assert not_ready, f"the survivor never reported the rebalance: {states[-5:]}\n{b.tail()}"
        assert states[-1][1] == 200, f"not ready again within 40 s: {states[-5:]}\n{b.tail()}"
        async with SessionView(kafka_bootstrap, topics) as view:
            ok = await view.wait_equal(expected, 60)
            assert ok, describe_difference(view.sessions, expected) + "\n" + b.tail()
        assert b.proc is not None and b.proc.poll() is None
    finally:
        for w in workers:
            w.stop()
        try:
            await asyncio.wait_for(
                delete_internal_topics(kafka_bootstrap, f"desktrace-stream-{topics.prefix}"), 10)
        except Exception:  # best effort
            pass


async def test_stream_skips_output_the_broker_refuses_for_good_and_keeps_running(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The dead-letter topic refuses anything over 20,000 bytes: a 200 kB garbage record's dead letter and
    even its 64 KiB head are refused. The worker does not exit (it would meet the record again after a
    restart): it counts and logs the refusal and the good events' sessions still equal the offline tool's."""
    import uuid

    from devstack.topics import delete_topics

    topics = Topics(f"t{uuid.uuid4().hex[:12]}.")
    await topics_with_small_deadletter(kafka_bootstrap, topics)
    env = worker_env(kafka_bootstrap, topics, tmp_path / "data")
    del env["DESKTRACE_STREAM_APP_ID"]
    worker = worker_process(env, tmp_path / "worker.log")
    try:
        worker.start(ready_timeout=90)
        events = generate_events(seed=17, users=2, hours=2)
        expected = offline_sessions(events, tmp_path)
        half = len(events) // 2
        await publish_events(kafka_bootstrap, topics, events[:half])
        await publish_big(kafka_bootstrap, [(topics.ui, b"corp\\user0", b"\xc1" + b"g" * 200_000),
                                            (topics.hid, b"corp\\user1", b"\xc1 small")])
        await publish_events(kafka_bootstrap, topics, events[half:])
        async with SessionView(kafka_bootstrap, topics) as view:
            ok = await view.wait_equal(expected, 90)
            assert ok, describe_difference(view.sessions, expected) + "\n" + worker.tail()
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        refused = "desktrace_stream_output_refused_total"
        assert worker.metric(refused, reason="MessageSizeTooLargeError", action="deadletter_head") == 1
        assert worker.metric(refused, reason="MessageSizeTooLargeError", action="skipped") == 1
        dead = await read_topic(kafka_bootstrap, topics.deadletter, 1, 10)
        assert [r.value for r in dead] == [b"\xc1 small"]
        assert "record refused by Kafka even as a bounded dead letter; skipped" in worker.tail(200)
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(delete_topics(kafka_bootstrap, topics), 10)
            await asyncio.wait_for(
                delete_internal_topics(kafka_bootstrap, f"desktrace-stream-{topics.prefix}"), 10)
        except Exception:  # best effort
            pass


@pytest.mark.postgres
def test_a_broker_outage_is_two_log_lines_per_service(tmp_path: Path, fresh_pg_dsn: str) -> None:
    """A private broker stops for 15 s under a running raw sink: the sink's log shows one line when the
    connection starts failing and one with the outage's length when it recovers, not one per attempt;
    every line is JSON without terminal controls."""
    import json
    import subprocess

    from devstack.kafka import KafkaInstance
    from devstack.topics import ensure_topics
    from tests.support.process import free_port, script

    kafka = KafkaInstance(tmp_path / "kafka", free_port(), free_port(), partitions=3,
                          heap=("-Xms128m", "-Xmx384m"), progress=lambda _: None)
    kafka.start(timeout=120)
    log = tmp_path / "sink.log"
    sink = None
    try:
        topics = Topics("o.")
        asyncio.run(ensure_topics(kafka.bootstrap, topics, partitions=3))
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("DESKTRACE_")}
        env.update({"DESKTRACE_KAFKA_BOOTSTRAP": kafka.bootstrap, "DESKTRACE_PG_DSN": fresh_pg_dsn,
                    "DESKTRACE_TOPIC_PREFIX": "o.", "DESKTRACE_METRICS_ADDR": f"127.0.0.1:{free_port()}"})
        with open(log, "wb") as out:
            sink = subprocess.Popen([script("desktrace-sink"), "raw"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "sink started" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "sink started" in log.read_text(errors="replace"), log.read_text(errors="replace")
        kafka.stop()
        time.sleep(15)
        kafka.start(timeout=120)
        deadline = time.monotonic() + 60
        while "Kafka connection recovered" not in log.read_text(errors="replace") \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert "\x1b" not in text
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        failing = [x for x in lines if x["msg"].startswith("Kafka connection failing")]
        recovered = [x for x in lines if x["msg"].startswith("Kafka connection recovered")]
        assert len(failing) == 1 and len(recovered) == 1, text[-3000:]
        assert recovered[0]["outage_s"] >= 5 and recovered[0]["suppressed_lines"] >= 1
        started = next(i for i, x in enumerate(lines) if x["msg"] == "sink started")
        during = [x for x in lines[started:] if x["logger"].startswith("aiokafka")
                  and not x["msg"].startswith("Kafka connection failing")]
        assert len(during) <= 2, during[:5]  # instead of one per attempt (hundreds in 15 s)
        assert sink.poll() is None
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=20)
        kafka.stop()
