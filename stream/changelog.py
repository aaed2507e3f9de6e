"""Writing the changed users' table values to the table's changelog topic a record batch at a time.

Faust's ``Table.send_changelog`` sends one record at a time through its buffered producer path (a future
message, a channel, the monitor's callbacks, one producer call): with thousands of changed users per
commit that cost more than encoding them (``docs/stream-performance.md``). :class:`ChangelogWriter` fills
one Kafka record batch per changelog partition (split when it reaches ``batch_bytes``) and hands each to
the producer whole; the records, keys, values and partitions are exactly those ``send_changelog`` would
have written, so Faust's recovery reads them as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from stream.live import Flushed

#: Record batches stay well below the broker's ``message.max.bytes`` (1,048,588 by default), which
#: limits a whole batch; a single record larger than this still goes alone in its own batch.
BATCH_BYTES: Final = 512 * 1024


class BatchProducer(Protocol):
    """What :class:`ChangelogWriter` needs of an ``aiokafka.AIOKafkaProducer``."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...


class ChangelogWriter:
    """Sends table values to the changelog in per-partition record batches.

    Guarantees: every value passed to :meth:`write` is appended to its partition's batch in the order
    given (so the latest value of a key is the last one written), and :meth:`write` returns the futures of
    every batch sent, which the caller awaits before committing offsets.
    """

    def __init__(self, producer: Callable[[], BatchProducer], topic: Callable[[], str]) -> None:
        self._producer = producer
        self._topic = topic

    async def write(self, values: Iterable[Flushed]) -> list[asyncio.Future[Any]]:
        """Send ``values``; returns one future per record batch sent."""
        by_partition: dict[int, list[Flushed]] = {}
        for f in values:
            by_partition.setdefault(f.partition, []).append(f)
        if not by_partition:
            return []
        producer = self._producer()
        topic = self._topic()
        futures: list[asyncio.Future[Any]] = []
        for partition, records in sorted(by_partition.items()):
            batch = producer.create_batch()
            size = 0
            for f in records:
                if size and size + len(f.value) > BATCH_BYTES:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch, size = producer.create_batch(), 0
                if batch.append(key=f.key, value=f.value, timestamp=None) is None:
                    # Full by aiokafka's own count (its batch_size): send it, start a new one.
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch, size = producer.create_batch(), 0
                    if batch.append(key=f.key, value=f.value, timestamp=None) is None:
                        raise RuntimeError("a changelog record does not fit an empty record batch")
                size += len(f.value) + len(f.key)
            if size:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures
