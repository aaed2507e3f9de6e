"""Kafka I/O for tests and benchmarks: publish records, and the one consumer-until-done helper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from proto import events as E
from proto.codec import encode_event
from proto.keys import event_user_key
from proto.topics import Topics

Record = tuple[str, bytes | None, bytes | None]


def event_records(topics: Topics, events: Iterable[E.Envelope]) -> list[Record]:
    """Each event as ``(its raw topic, user key, msgpack bytes)``, as the agent's shipper sends it."""
    return [(topics.for_event(e), event_user_key(e).encode(), encode_event(e)) for e in events]


async def publish(bootstrap: str, records: Iterable[Record], **options: Any) -> int:
    """Publish ``(topic, key, value)`` records in order (acks=all); returns how many."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **options)
    await producer.start()
    n = 0
    try:
        futures = []
        for topic, key, value in records:
            futures.append(await producer.send(topic, value=value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def publish_events(
    bootstrap: str, topics: Topics, items: Iterable[E.Envelope | Record], **options: Any
) -> int:
    """Publish events (to their raw topic, keyed by user key) and literal ``(topic, key, value)`` records."""
    records = [item if isinstance(item, tuple) else event_records(topics, [item])[0] for item in items]
    return await publish(bootstrap, records, **options)


async def consume_until(
    bootstrap: str,
    topics: str | Sequence[str],
    done: Callable[[Sequence[Any]], bool],
    within: float = 15.0,
    settle_s: float = 0.0,
    **options: Any,
) -> list[Any]:
    """The records of ``topics`` from their start (no consumer group), read until ``done(records so far)``
    or ``within`` seconds; then, with ``settle_s``, on until ``settle_s`` pass without a record (so that a
    test sees what came beyond what it expected). ``options`` go to the consumer."""
    from aiokafka import AIOKafkaConsumer

    names = (topics,) if isinstance(topics, str) else tuple(topics)
    consumer = AIOKafkaConsumer(
        *names, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, **options,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while not done(out) and loop.time() < end:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(recs)
        while settle_s > 0 and loop.time() < end + settle_s:
            batch = await consumer.getmany(timeout_ms=int(settle_s * 1000))
            got = [r for recs in batch.values() for r in recs]
            if not got:
                break
            out.extend(got)
    finally:
        await consumer.stop()
    return out


def at_least(n: int) -> Callable[[Sequence[Any]], bool]:
    """A ``done`` for :func:`consume_until`: ``n`` records or more."""
    return lambda got: len(got) >= n


async def committed_offsets(bootstrap: str, group: str, topics: Sequence[str]) -> dict[Any, int]:
    """The offsets consumer group ``group`` has committed on ``topics`` now (none: an empty dict)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic in topics and meta.offset >= 0}


async def wait_committed(bootstrap: str, group: str, topics: Sequence[str], within: float = 15.0) -> bool:
    """Whether consumer group ``group`` has committed every partition of ``topics`` up to its end offset
    within ``within`` seconds (partitions with no records need no commit)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        assert partitions, f"no partitions known for {topics}"
        ends = {tp: end for tp, end in (await consumer.end_offsets(partitions)).items() if end > 0}
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                committed = await admin.list_consumer_group_offsets(group, partitions=list(ends))
            except KafkaError as err:  # a fresh broker has no group coordinator for a moment
                if not err.retriable:
                    raise
                committed = {}
            if all(tp in committed and committed[tp].offset >= end for tp, end in ends.items()):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
        await consumer.stop()
