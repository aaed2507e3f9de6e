"""Sending records to one topic partition as whole Kafka record batches.

The producer's ``send`` costs a future, a metadata check and a partitioner call per record (and through
Faust a channel and the monitor's callbacks too): with thousands of records per commit that cost more than
the records. :func:`send_in_batches` fills aiokafka record batches (``create_batch``, up to the producer's
``max_batch_size``) and hands each one to ``send_batch`` whole. Used for the state changelog
(``stream.changelog``) and the session output and dead letters (``stream.output``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

#: The worker's producer batch size (Faust's ``producer_max_batch_size``): record batches stay well below
#: the broker's ``message.max.bytes`` (1,048,588 by default), which limits a whole batch. A record larger
#: than this still goes alone in its own batch (aiokafka always takes a first record).
BATCH_BYTES: Final = 512 * 1024

T = TypeVar("T")
#: ``(key, value, headers)`` of one record.
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class BatchProducer(Protocol):
    """What :func:`send_in_batches` needs of an ``aiokafka.AIOKafkaProducer``."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...


async def send_in_batches(
    producer: BatchProducer, topic: str, partition: int, items: Sequence[T], record: Callable[[T], Record]
) -> list[tuple[list[T], asyncio.Future[Any]]]:
    """Send ``items`` (``record(item)`` gives each one's key, value and headers) to ``topic``/``partition``
    in order, as few record batches as the batch size allows; returns each batch's items and the future
    of its acknowledgement."""
    sent: list[tuple[list[T], asyncio.Future[Any]]] = []
    batch = producer.create_batch()
    held: list[T] = []
    for item in items:
        key, value, headers = record(item)
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full
            sent.append((held, await producer.send_batch(batch, topic, partition=partition)))
            batch, held = producer.create_batch(), []
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                raise RuntimeError("aiokafka refused a record in an empty record batch")
        held.append(item)
    if held:
        sent.append((held, await producer.send_batch(batch, topic, partition=partition)))
    return sent
