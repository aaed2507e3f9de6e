"""Dead-lettering for the sink runner: rejected records sent to the dead-letter topic as batches while the
rows are written, every one acknowledged (or re-sent as its head, or skipped with a counted, logged reason)
before the offsets are committed. :class:`DeadLettering` is a part of :class:`sinks.runner.SinkRunner`."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from aiokafka import AIOKafkaProducer, ConsumerRecord

from common.backoff import Backoff
from common.kafka import (
    ProduceErrorKind,
    produce_error_kind,
    produce_error_name,
)
from proto.deadletter import DeadLetter, deadletter_headers, deadletter_record
from proto.topics import Topics
from sinks.metrics import SinkMetrics
from sinks.settings import SinkSettings
from sinks.writers import Writer

#: The sink runner's logger: one name for all its parts.
log = logging.getLogger("sinks.runner")

#: The dead-letter producer's per-partition batch size: many dead letters per request (aiokafka's default
#: of 16 KiB holds a few dozen), so a garbage-heavy batch is dead-lettered at tens of thousands per second.
DEADLETTER_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class Rejected:
    """One record that goes to the dead-letter topic, and why."""

    record: ConsumerRecord[bytes, bytes]
    error_class: str
    reason: str


@dataclass(frozen=True)
class _Letter:
    """A dead letter on its way: the rejected record, what was sent, and its acknowledgement (a future)
    or the exception ``send`` raised."""

    rejected: Rejected
    letter: DeadLetter
    pending: Any
    alone: bool = False  # sent as the only record of its batch


def _error_of(pending: Any) -> BaseException | None:
    """The exception of a finished send (``None`` when acknowledged)."""
    if isinstance(pending, BaseException):
        return pending
    if pending.cancelled():
        return asyncio.CancelledError()
    exc: BaseException | None = pending.exception()
    return exc


#: One fetched batch: the records, the decoded items (with their record) and the records rejected by decoding.
Record: TypeAlias = ConsumerRecord[bytes, bytes]
Fetched: TypeAlias = tuple[list[Record], list[tuple[Record, Any]], list[Rejected]]


class DeadLettering:
    """Sends, bounds and settles the dead letters of one batch (part of :class:`sinks.runner.SinkRunner`,
    which owns the producer, the settings and the metrics declared here)."""

    _producer: AIOKafkaProducer | None
    metrics: SinkMetrics
    settings: SinkSettings
    topics: Topics
    writer: Writer

    if TYPE_CHECKING:  # defined by SinkRunner

        async def _sleep_unless_stopped(self, delay: float) -> None: ...

    async def _dead_letter(self, rejected: list[Rejected]) -> None:
        """Dead-letter ``rejected`` as one batch (:meth:`_send_dead_letters`, then
        :meth:`_settle_dead_letters`)."""
        await self._settle_dead_letters(await self._send_dead_letters(rejected))

    async def _send_dead_letters(self, rejected: Sequence[Rejected]) -> list[_Letter]:
        """Send a bounded dead letter (:func:`proto.deadletter.deadletter_record`) for every rejected
        record without waiting for its acknowledgement."""
        table = self.writer.table
        pairs: list[tuple[Rejected, DeadLetter]] = []
        for rej in rejected:
            rec = rej.record
            headers = deadletter_headers(
                rej.reason, rej.error_class, self.writer.service, rec.topic, rec.partition, rec.offset
            )
            dl = deadletter_record(rec.key, rec.value, headers)
            if dl.truncated:
                self.metrics.dead_letters_truncated.labels(table).inc()
            pairs.append((rej, dl))
        return await self._send_batched(pairs)

    async def _send_batched(
        self, pairs: Sequence[tuple[Rejected, DeadLetter]], alone: bool = False
    ) -> list[_Letter]:
        """Fill record batches (a dead letter goes to dead-letter partition ``source partition % count``,
        so one source partition's dead letters stay in order) and submit each without waiting: one future
        per batch, shared by its dead letters; an exception in place of the future when submitting failed."""
        if not pairs:
            return []
        producer = self._producer
        assert producer is not None
        topic = self.topics.deadletter
        try:
            count = len(await producer.partitions_for(topic))
        except Exception as exc:
            return [_Letter(rej, dl, exc, alone) for rej, dl in pairs]
        groups: dict[int, list[tuple[Rejected, DeadLetter]]] = {}
        for rej, dl in pairs:
            groups.setdefault(rej.record.partition % count, []).append((rej, dl))
        out: list[_Letter] = []
        if alone:  # one record per batch: a refusal concerns that record only
            for rej, dl in pairs:
                batch = producer.create_batch()
                batch.append(key=dl.key, value=dl.value, timestamp=None, headers=dl.headers)
                partition = rej.record.partition % count
                out.append(_Letter(rej, dl, await self._submit(batch, topic, partition), True))
            return out
        for partition, group in groups.items():
            batch = producer.create_batch()
            members: list[tuple[Rejected, DeadLetter]] = []
            for rej, dl in group:
                if batch.append(key=dl.key, value=dl.value, timestamp=None, headers=dl.headers) is None:
                    pending = await self._submit(batch, topic, partition)
                    out += [_Letter(r, d, pending) for r, d in members]
                    batch, members = producer.create_batch(), []
                    batch.append(key=dl.key, value=dl.value, timestamp=None, headers=dl.headers)
                members.append((rej, dl))
            pending = await self._submit(batch, topic, partition)
            out += [_Letter(r, d, pending) for r, d in members]
        return out

    async def _submit(self, batch: Any, topic: str, partition: int) -> Any:
        """The acknowledgement future of one record batch, or the exception submitting it raised."""
        assert self._producer is not None
        try:
            return await self._producer.send_batch(batch, topic, partition=partition)
        except Exception as exc:
            return exc

    async def _settle_dead_letters(self, letters: list[_Letter]) -> None:
        """Await every dead letter sent. Permanently refused ones (:func:`common.kafka.produce_error_kind`)
        are re-sent alone (the refusal of a shared batch may be one record's), then as their bounded head,
        and skipped (counted, logged) when even that is refused; only transient failures are retried as
        they are, with backoff, until they succeed or the sink stops."""
        table = self.writer.table
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        total, skipped = len(letters), 0
        classes = sorted({letter.rejected.error_class for letter in letters})
        while letters:
            futures: list[Any] = []
            for x in letters:  # letters of one batch are consecutive and share its future
                if not isinstance(x.pending, BaseException) and (not futures or x.pending is not futures[-1]):
                    futures.append(x.pending)
            if futures:
                await asyncio.wait(futures)
            retry: list[tuple[Rejected, DeadLetter]] = []
            isolate: list[tuple[Rejected, DeadLetter]] = []  # refused in a shared batch: find the culprit
            transient: BaseException | None = None
            done: collections.Counter[str] = collections.Counter()
            for letter in letters:
                rej, dl = letter.rejected, letter.letter
                result = _error_of(letter.pending)
                if result is None:
                    done[rej.error_class] += 1
                elif produce_error_kind(result) is ProduceErrorKind.TRANSIENT:
                    transient = result
                    retry.append((rej, dl))
                elif not letter.alone:
                    isolate.append((rej, dl))
                elif not dl.truncated:
                    self.metrics.dead_letters_refused.labels(table, produce_error_name(result), "head").inc()
                    self.metrics.dead_letters_truncated.labels(table).inc()
                    rec = rej.record
                    isolate.append((rej, deadletter_record(rec.key, rec.value, dl.headers, force_head=True)))
                else:
                    reason = produce_error_name(result)
                    self.metrics.dead_letters_refused.labels(table, reason, "skipped").inc()
                    self.metrics.rows_rejected.labels(table, rej.error_class).inc()
                    skipped += 1
                    log.error(
                        "dead letter refused by Kafka even as a bounded head; record skipped",
                        extra={"kv": {"table": table, "reason": reason, "topic": rej.record.topic,
                                      "partition": rej.record.partition, "offset": rej.record.offset}},
                    )
            for error_class, n in done.items():  # counted per class, not per record (20,000/s)
                self.metrics.rows_rejected.labels(table, error_class).inc(n)
            self.metrics.dead_letters.labels(table).inc(sum(done.values()))
            if transient is not None:
                self.metrics.retries.labels(table, "kafka").inc()
                delay = backoff.next()
                log.warning(
                    "dead-letter publish failed; retrying",
                    extra={"kv": {"error": produce_error_name(transient), "records": len(retry),
                                  "retry_in_s": delay}},
                )
                await self._sleep_unless_stopped(delay)
            letters = await self._send_batched(retry) + await self._send_batched(isolate, alone=True)
        if total:
            log.warning(
                "records dead-lettered",
                extra={"kv": {"table": table, "count": total - skipped, "skipped": skipped,
                              "classes": classes}},
            )
