"""Poison records on the real broker: records of 1,000,000 and 1,048,000 bytes (and one at the broker's own
limit) on every raw topic among good events. The stream worker neither dies nor stalls, the sessions equal
the offline tool's, and the big records are in the dead-letter topic with their reason (whole when they fit,
else their head with size and digest)."""

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
from stream.testing import (
    SessionView,
    WorkerProcess,
    delete_internal_topics,
    describe_difference,
    generate_events,
    offline_sessions,
    publish,
    worker_env,
)

pytestmark = pytest.mark.kafka

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
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + within_s
        while len(records) < want and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def worker(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[WorkerProcess]:
    # Default app id and metrics address: both derive from the test's topic prefix.
    env = worker_env(kafka_bootstrap, topics, tmp_path / "data")
    del env["DESKTRACE_STREAM_APP_ID"]
    w = WorkerProcess(env, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()
    try:
        asyncio.run(asyncio.wait_for(
            delete_internal_topics(kafka_bootstrap, f"desktrace-stream-{topics.prefix}"), 10))
    except Exception:  # best effort
        pass


async def test_stream_dead_letters_records_up_to_the_broker_limit_without_dying(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, worker: WorkerProcess
) -> None:
    events = generate_events(seed=31, users=2, hours=2)
    expected = offline_sessions(events, tmp_path)
    big = [*big_records(topics, events[0]), at_broker_limit(topics.hid, b"corp\\user1")]
    half = len(events) // 2
    await publish(kafka_bootstrap, topics, events[:half])
    await publish_big(kafka_bootstrap, [b[:3] for b in big])
    await publish(kafka_bootstrap, topics, events[half:])

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
