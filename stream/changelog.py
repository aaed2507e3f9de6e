"""Writing the changed users' table values to the table's changelog topic a record batch at a time.

Faust's ``Table.send_changelog`` sends one record at a time through its buffered producer path (a future
message, a channel, the monitor's callbacks, one producer call): with thousands of changed users per
commit that cost more than encoding them (``docs/stream-performance.md``). :class:`ChangelogWriter` sends
them in record batches per changelog partition (:func:`stream.record_batches.send_in_batches`); the
records, keys, values and partitions are exactly those ``send_changelog`` would have written, so Faust's
recovery reads them as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from stream.live import Flushed
from stream.record_batches import BatchProducer, Record, send_in_batches


class ChangelogWriter:
    """Sends table values to the changelog in per-partition record batches.

    Guarantees: the values of one partition are written in the order given (so the latest value of a key
    is the last one written), and :meth:`write` returns the futures of every batch sent, which the caller
    awaits before committing offsets.
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
            sent = await send_in_batches(producer, topic, partition, records, _record)
            futures.extend(fut for _, fut in sent)
        return futures


def _record(f: Flushed) -> Record:
    return f.key, f.value, []
