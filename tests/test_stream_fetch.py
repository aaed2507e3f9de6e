"""The worker's fetches against a real broker: the consumer Faust builds for it holds a fetch at most
``fetch_max_wait_s`` (Faust fixes 1.5 s; see ``stream.batching._FetchWaitConsumerThread`` for why that stalls
a worker whose other topics are caught up), and changelog records it fetched but could not deliver are
fetched again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from common.kafka import position_now
from proto.topics import Topics
from stream.app import ClusterInfo, StreamApp
from stream.batching import BatchConsumer, _FetchWaitConsumerThread, put_back_unmoved
from stream.gather import BatchGather
from stream.settings import load_settings

pytestmark = pytest.mark.kafka


async def _started_fetch_wait_ms(kafka_bootstrap: str, data: Path, env: dict[str, str]) -> tuple[int, int]:
    base = {"DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DESKTRACE_STREAM_DATA_DIR": str(data)}
    settings, _ = load_settings([], env={**base, **env})
    worker = StreamApp(settings, ClusterInfo(partitions=6, replication=1), CollectorRegistry())
    faust_consumer = worker.app.consumer
    consumer = faust_consumer._thread._create_worker_consumer(worker.app.transport)
    await consumer.start()  # the fetcher is built here, from the consumer's settings
    try:
        return consumer._fetch_max_wait_ms, consumer._fetcher._fetch_max_wait_ms
    finally:
        await consumer.stop()


async def test_the_worker_fetches_with_the_configured_wait_not_fausts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    assert await _started_fetch_wait_ms(kafka_bootstrap, tmp_path, {}) == (100, 100)
    env = {"DESKTRACE_FETCH_MAX_WAIT_S": "0.25"}
    assert await _started_fetch_wait_ms(kafka_bootstrap, tmp_path, env) == (250, 250)



async def test_changelog_records_a_rebalance_kept_from_the_recovery_are_fetched_again(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """A fetch in flight when a rebalance stops the flow can return the changelog records of a partition the
    recovery has just sought. The worker does not deliver them then; unless the partition is put back, the
    recovery never sees them and waits for that partition for ever (seen as "No event received for active
    tp ... since recovery start"). Put back only if nothing sought the partition elsewhere since.

    The records are written in a transaction: its commit marker takes offset 12, so a fetch leaves the
    position at 13, not at the last record's offset + 1 (as gaps of compaction do)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{topics.prefix}tx")
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(12):
                await producer.send(topics.sessions, key=b"user", value=b"%d" % i)
    finally:
        await producer.stop()
    settings, _ = load_settings([], env={
        "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DESKTRACE_STREAM_DATA_DIR": str(tmp_path)})
    worker = StreamApp(settings, ClusterInfo(partitions=3, replication=1), CollectorRegistry())
    batch_consumer = cast(BatchConsumer, worker.app.consumer)
    thread = cast(_FetchWaitConsumerThread, batch_consumer._thread)
    consumer = thread._create_worker_consumer(worker.app.transport)
    await consumer.start()
    thread._consumer = consumer

    async def in_this_loop(fun: Any, *args: Any) -> Any:  # the hop to the consumer's thread: not needed here
        return await fun(*args)

    thread.call_thread = in_this_loop  # type: ignore[method-assign]
    partitions = {TopicPartition(topics.sessions, p) for p in range(3)}

    async def fetch(n: int) -> tuple[TopicPartition, list[Any]]:
        got: dict[TopicPartition, list[Any]] = {}
        while sum(map(len, got.values())) < n:
            fetched = await thread._fetch_records(consumer, partitions, timeout=5.0, max_records=100)
            for tp, recs in fetched.items():
                got.setdefault(tp, []).extend(recs)
        ((tp, recs),) = got.items()
        return tp, recs

    try:
        consumer.assign(list(partitions))
        for _ in range(100):  # the commit marker is written after the commit returns
            if 13 in (await consumer.end_offsets(list(partitions))).values():
                break
            await asyncio.sleep(0.05)
        await consumer.seek_to_beginning(*partitions)
        batch_consumer.resume_flow()
        tp, recs = await fetch(12)
        assert [r.offset for r in recs] == list(range(12))
        assert thread.fetched_to[tp] == position_now(consumer, tp) == 13

        # The fetch returned while the flow was stopped: none delivered, all fetched again.
        batch_consumer.stop_flow()
        await batch_consumer._drop_fetch({tp: recs})
        assert position_now(consumer, tp) == 0
        batch_consumer.resume_flow()
        tp, again = await fetch(12)
        assert [r.offset for r in again] == list(range(12))

        # The partition was no longer active when they came: from the first not delivered.
        await batch_consumer._take({tp: again[4:]}, set(), BatchGather(100, 0.0), 0.0, 0)
        assert position_now(consumer, tp) == 4
        tp, again = await fetch(8)
        assert [r.offset for r in again] == list(range(4, 12))

        # Sought elsewhere since that fetch (the recovery's own seek): left there.
        consumer.seek(tp, 9)
        assert put_back_unmoved(consumer, {tp: (4, 13)}) == 0
        assert position_now(consumer, tp) == 9
        # Not assigned: nothing to do.
        assert put_back_unmoved(consumer, {TopicPartition(topics.presence, 0): (0, 1)}) == 0
    finally:
        await consumer.stop()
