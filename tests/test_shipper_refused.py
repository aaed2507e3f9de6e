"""The agent's shipper against the real broker: an event Kafka refuses for good (over its 1 MiB request
limit) is dropped and counted, and never stalls the events spooled behind it (it used to be retried for
ever, so nothing after it left the workstation)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from agent.shipper import Shipper, producer_factory
from agent.spool import Spool, SpoolRecord
from common.backoff import Backoff
from proto.topics import Topics

pytestmark = pytest.mark.kafka


async def _consume(bootstrap: str, topic: str, want: int, timeout_s: float = 60.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_bytes=4 * 1024 * 1024)
    await consumer.start()
    got: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(got) < want and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            got += [m.value for msgs in batches.values() for m in msgs if m.value is not None]
    finally:
        await consumer.stop()
    return got


async def test_a_refused_event_is_dropped_counted_and_the_rest_shipped(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    topic = topics.presence
    spool = Spool(tmp_path / "spool.db")
    good = [f"good-{i}".encode() for i in range(6)]
    huge = os.urandom(1_100_000)  # over the producer's and the broker's 1 MiB limit, incompressible
    records = [SpoolRecord(topic, b"corp\\alice", v, seq=i) for i, v in enumerate(good[:3])]
    records.append(SpoolRecord(topic, b"corp\\alice", huge, seq=3))
    records += [SpoolRecord(topic, b"corp\\alice", v, seq=4 + i) for i, v in enumerate(good[3:])]
    spool.append(records, next_seq=len(records))
    shipper = Shipper(
        spool, producer_factory({"bootstrap_servers": kafka_bootstrap}), batch_size=500, poll_s=0.1,
        backoff=Backoff(0.1, 0.5, jitter=True),
    )
    task = asyncio.create_task(shipper.run())
    try:
        got = await _consume(kafka_bootstrap, topic, len(good))
    finally:
        shipper.stop(drain_s=5)
        await asyncio.wait_for(task, 30)
    assert got == good  # every good event, in spool order, none lost behind the refused one
    assert len(spool) == 0
    stats = spool.stats()
    assert stats.refused_by_broker == 1 and stats.dropped_unreported == 1  # the next heartbeat reports it
    assert shipper.stats.refused_events == 1 and shipper.stats.sent_events == len(good)
    spool.close()
