"""Two complete pipelines (stream, both sinks, gateway) on one broker, told apart by DESKTRACE_TOPIC_PREFIX
alone (application id, consumer groups, changelog topics and metrics ports at their defaults), fed the same
good events plus records of 1,000,000 and 1,048,000 bytes on every raw topic and on the sessions topic
(and one at the broker's own limit). Both complete: no service dies or stalls, every good event is stored
once, the sessions equal the offline tool's, and the big records are in each pipeline's dead-letter topic
with their reason."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from devstack.topics import delete_topics, ensure_topics
from proto.deadletter import header_map
from proto.sessions import make_session
from proto.topics import Topics
from stream.settings import default_app_id
from tests.support.databases import drop_database, fresh_database
from tests.support.events import generate_events
from tests.support.kafka import at_least, consume_until, publish_events
from tests.support.pipeline import Pipeline, stored
from tests.support.stream import delete_internal_topics, offline_sessions

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BROKER_LIMIT = 1_048_588


def sized(build: Any, size: int) -> bytes:
    """``build(pad)`` bytes padded to exactly ``size`` bytes (``build`` pads with ``pad`` characters)."""
    first = build(size)
    value = build(size - (len(first) - size))
    assert len(value) == size, (len(value), size)
    return value


def at_limit(key: bytes) -> int:
    """The largest value size the broker accepts in a record with ``key`` (one record per batch)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    overhead = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"x" * 1_000_000, []) - 1_000_000
    return BROKER_LIMIT - overhead


def big_records(topics: Topics, template: Any) -> list[tuple[str, bytes, bytes, str]]:
    """(topic, key, value, error class expected from the sinks)."""
    good = msgspec.to_builtins(template)
    out: list[tuple[str, bytes, bytes, str]] = []
    for i, topic in enumerate(topics.raw):
        key = b"corp\\user0"
        junk = b"\xc1" + bytes([i]) * (1_000_000 - 1)
        huge = sized(lambda n, i=i: msgspec.msgpack.encode({**good, "seq": 90_000 + i, "user": "u" * n}),
                     1_048_000)
        out += [(topic, key, junk, "undecodable"), (topic, key, huge, "invalid")]
    # A session record (JSON) whose user key is far too long for the sessions table's index.
    base = msgspec.to_builtins(make_session("corp\\user0", "active", template.ts, template.ts, ["PC"]))
    huge_session = sized(lambda n: json.dumps({**base, "user_key": "k" * n}).encode(), 1_048_000)
    out += [
        (topics.sessions, b"corp\\user0", b"\xc1" + b"s" * (1_000_000 - 1), "undecodable"),
        (topics.sessions, b"corp\\user0", huge_session, "constraint"),
        (topics.presence, b"corp\\user1", b"\xc1" + b"\x00" * (at_limit(b"corp\\user1") - 1), "undecodable"),
    ]
    return out


@pytest.fixture
def two_pipelines(kafka_bootstrap: str, pg_dsn: str, tmp_path: Path) -> Iterator[list[Pipeline]]:
    pipelines = []
    try:
        for name in ("a", "b"):
            prefix = f"t{uuid.uuid4().hex[:10]}{name}."
            asyncio.run(ensure_topics(kafka_bootstrap, Topics(prefix), partitions=3))
            p = Pipeline(kafka_bootstrap, fresh_database(pg_dsn), prefix, tmp_path / name)
            pipelines.append(p)
        for p in pipelines:
            p.start()
        for p in pipelines:
            p.wait_ready(120)
        yield pipelines
    finally:
        for p in pipelines:
            p.stop()
        for p in pipelines:
            drop_database(pg_dsn, p.dsn)
            try:
                asyncio.run(asyncio.wait_for(delete_topics(kafka_bootstrap, p.topics), 10))
                asyncio.run(asyncio.wait_for(
                    delete_internal_topics(kafka_bootstrap, default_app_id(p.topics.prefix)), 10))
            except Exception:  # best effort
                pass


async def publish_big(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=BROKER_LIMIT, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, want: int, within_s: float) -> list[Any]:
    return await consume_until(bootstrap, topic, at_least(want), within_s, max_partition_fetch_bytes=4 << 20)


async def legacy_users(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT user_key FROM raw_events WHERE type = 'StateChange' AND user_key LIKE '%.gw%'"
        )
    finally:
        await conn.close()
    return [r["user_key"] for r in rows]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return r.read().decode()


def test_two_prefixed_pipelines_complete_with_big_records_among_good_events(
    kafka_bootstrap: str, tmp_path: Path, two_pipelines: list[Pipeline]
) -> None:
    events = generate_events(seed=41, users=3, hours=2)
    expected = {
        sid: (s.kind, s.start, s.end, s.user_key) for sid, s in offline_sessions(events, tmp_path).items()
    }
    assert expected
    half = len(events) // 2
    for p in two_pipelines:
        big = big_records(p.topics, events[0])
        asyncio.run(publish_events(kafka_bootstrap, p.topics, events[:half]))
        asyncio.run(publish_big(kafka_bootstrap, [b[:3] for b in big]))
        asyncio.run(publish_events(kafka_bootstrap, p.topics, events[half:]))

    for p in two_pipelines:
        deadline = time.monotonic() + 180
        got: tuple[int, int, dict[str, Any]] = (0, 0, {})
        while time.monotonic() < deadline:
            got = asyncio.run(stored(p.dsn))
            if got[0] == len(events) and got[2] == expected:
                break
            assert not p.dead(), p.logs()
            time.sleep(1)
        raw, distinct, sessions = got
        assert raw == distinct == len(events), p.logs()
        assert sessions == expected, p.logs()
        # Each stream keeps its own default data directory, under its working directory.
        assert (p.cwd / f"{default_app_id(p.topics.prefix)}-data").is_dir()

    for p in two_pipelines:
        big = big_records(p.topics, events[0])
        raw_big = [b for b in big if b[0] != p.topics.sessions]
        # raw records are dead-lettered by the stream and by the raw sink, session records by the session sink
        want = 2 * len(raw_big) + (len(big) - len(raw_big))
        dead = asyncio.run(read_all(kafka_bootstrap, p.topics.deadletter, want, 60))
        seen: dict[tuple[str, str, int], str] = {}
        for r in dead:
            h = header_map(r.headers)
            size = int(h.get("desktrace-original-size", len(r.value)))
            seen[(h["desktrace-service"], h["desktrace-source-topic"], size)] = h["desktrace-error-class"]
        for topic, _, value, error_class in big:
            where = (topic, len(value), seen)
            if topic == p.topics.sessions:
                assert seen.get(("sink-sessions", topic, len(value))) == error_class, where
            else:
                assert seen.get(("sink-raw", topic, len(value))) == error_class, where
                # the stream finds the oversized user invalid too (identity limit), the junk undecodable
                assert seen.get(("stream", topic, len(value))) == error_class, where
        assert len(dead) == want
        assert not p.dead(), p.logs()
        for name in ("stream", "sink-raw", "sink-sessions"):
            with urllib.request.urlopen(p.urls[name] + "/readyz", timeout=10) as r:
                assert r.status == 200, name
        assert "desktrace_stream_deadlettered_total" in scrape(p.urls["stream"])

    # Each gateway publishes to its own pipeline only: a legacy report reaches that pipeline's database.
    for i, p in enumerate(two_pipelines):
        body = json.dumps({"user": f"legacy.gw{i}", "state": "working"}).encode()
        req = urllib.request.Request(p.urls["gateway"] + "/api/report", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read()) == {"success": True}
    for i, p in enumerate(two_pipelines):
        deadline = time.monotonic() + 60
        users: set[str] = set()
        while time.monotonic() < deadline:
            users = set(asyncio.run(legacy_users(p.dsn)))
            if users:
                break
            time.sleep(1)
        assert len(users) == 1 and f"gw{i}" in next(iter(users)), (users, p.logs())
