"""Producing a batch's output (session records and dead letters) without ever stalling on one record.

:class:`OutputWriter` sends every message of a batch without waiting (in record batches, one per topic
partition, when it is given the producer), then awaits them together. A send
that fails for good (:func:`common.kafka.produce_error_kind` says permanent: too large, invalid,
unauthorized topic) is sent once more on its own (a batch can be refused for one of its records), then
replaced, never retried as is: a dead letter by its bounded head
(:func:`proto.deadletter.deadletter_record`), any other record by a dead letter of it; what cannot be
produced even then is skipped, counted (``desktrace_stream_output_refused_total``) and logged with its
reason. A transient failure raises :class:`OutputFailed`: the caller must not commit the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from common.kafka import ProduceErrorKind, produce_error_kind, produce_error_name
from proto.deadletter import HEADER_TRUNCATED, deadletter_headers, deadletter_record
from proto.topics import Topics
from stream.metrics import StreamMetrics
from stream.processor import SERVICE, Outgoing
from stream.record_batches import Record, send_in_batches

log = logging.getLogger(__name__)

#: ``send(message)`` schedules one record and returns an awaitable of its acknowledgement.
Send = Callable[[Outgoing], Awaitable[Awaitable[Any]]]
#: Messages sent together (one record, or one record batch) and their acknowledgement, or the error.
Pending = list[tuple[tuple[Outgoing, ...], "asyncio.Future[Any] | Awaitable[Any] | BaseException"]]


class OutputFailed(Exception):
    """Output could not be produced for a transient reason (broker or network): retry the whole batch."""


class OutputWriter:
    """Sends messages in batches; guarantees that a permanently refused record never fails the batch (it
    is replaced as described in the module docstring), and that a transient failure is raised, not hidden."""

    def __init__(
        self,
        send: Send,
        topics: Topics,
        metrics: StreamMetrics,
        batch_producer: Callable[[], Any] | None = None,
    ) -> None:
        self._send = send
        self.topics = topics
        self.metrics = metrics
        #: An ``aiokafka.AIOKafkaProducer`` to send record batches with; None: one record at a time.
        self._batch_producer = batch_producer
        #: Per topic: its partition count and the partition of each key seen (the partitioner is a
        #: pure-Python murmur2 hash, a cost per record otherwise).
        self._partitions: dict[str, tuple[int, dict[bytes | None, int]]] = {}

    async def enqueue(self, messages: Sequence[Outgoing]) -> Pending:
        """Schedule every message; a permanent client-side refusal is kept for :meth:`settle` to replace.

        With a batch producer, the messages go in one record batch per topic partition (partitioned as the
        producer's own ``send`` would: the same partitioner, so a key's records stay on one partition and
        in order), one producer call per batch instead of per record."""
        pending: Pending = []
        if self._batch_producer is not None:
            await self._enqueue_batches(self._batch_producer(), messages, pending)
            return pending
        for msg in messages:
            try:
                pending.append(((msg,), await self._send(msg)))
            except Exception as exc:
                if produce_error_kind(exc) is ProduceErrorKind.TRANSIENT:
                    raise OutputFailed(produce_error_name(exc)) from exc
                pending.append(((msg,), exc))
        return pending

    async def _enqueue_batches(self, producer: Any, messages: Sequence[Outgoing], pending: Pending) -> None:
        groups: dict[tuple[str, int], list[Outgoing]] = {}
        try:
            cached: dict[str, dict[bytes | None, int]] = {}
            for topic in {m.topic for m in messages}:
                await producer.client._wait_on_metadata(topic)
                count = len(producer._metadata.partitions_for_topic(topic))
                known = self._partitions.get(topic)
                if known is None or known[0] != count:  # first use, or the topic's partitions changed
                    known = self._partitions[topic] = (count, {})
                cached[topic] = known[1]
            for msg in messages:
                by_key = cached[msg.topic]
                partition = by_key.get(msg.key) if msg.key is not None else None
                if partition is None:
                    partition = producer._partition(msg.topic, None, None, None, msg.key, msg.value)
                    if msg.key is not None and len(by_key) < _PARTITION_CACHE_KEYS:
                        by_key[msg.key] = partition
                groups.setdefault((msg.topic, partition), []).append(msg)
            for (topic, partition), msgs in groups.items():
                for held, fut in await send_in_batches(producer, topic, partition, msgs, _record):
                    pending.append((tuple(held), fut))
        except Exception as exc:
            if produce_error_kind(exc) is ProduceErrorKind.TRANSIENT:
                raise OutputFailed(produce_error_name(exc)) from exc
            raise

    async def settle(self, pending: Pending) -> None:
        """Await every acknowledgement. A permanently refused record is sent again alone (the producer
        may have refused a whole batch for one record of it), then replaced, each try awaited alone."""
        refused: list[Outgoing] = []
        # Awaited one after the other, not gathered: the acknowledgements arrive by the producer's batch,
        # and a task per record cost more than the send itself (thousands of records per commit).
        for msgs, fut in pending:
            if isinstance(fut, BaseException):
                result: BaseException = fut
            else:
                try:
                    await fut
                    continue
                except Exception as exc:
                    result = exc
            if produce_error_kind(result) is ProduceErrorKind.TRANSIENT:
                raise OutputFailed(produce_error_name(result)) from result
            refused.extend(msgs)
        for msg in refused:  # rare: one at a time, so a refusal concerns that record only
            await self._alone(msg)

    async def _alone(self, msg: Outgoing) -> None:
        """Send ``msg`` awaited on its own; on a permanent refusal its replacement, at most twice."""
        current: Outgoing | None = msg
        for _ in range(3):
            if current is None:
                return
            try:
                await _awaited(await self._send(current))
                return
            except Exception as exc:
                if produce_error_kind(exc) is ProduceErrorKind.TRANSIENT:
                    raise OutputFailed(produce_error_name(exc)) from exc
                current = self._replacement(current, exc)
        if current is not None:  # unreachable in practice: a head-only dead letter is small
            self._skip(current, "replacement refused")

    def _replacement(self, msg: Outgoing, exc: BaseException) -> Outgoing | None:
        reason = produce_error_name(exc)
        headers = msg.headers or []
        if msg.topic == self.topics.deadletter:
            if any(name == HEADER_TRUNCATED for name, _ in headers):
                self._skip(msg, reason)
                return None
            dl = deadletter_record(msg.key, msg.value, headers, force_head=True)
            self.metrics.output_refused.labels(reason, "deadletter_head").inc()
            self.metrics.deadletters_truncated.inc()
            log.warning("dead letter refused by Kafka; sending its bounded head", extra={"kv": {
                "reason": reason, "bytes": len(msg.value)}})
            return Outgoing(msg.topic, dl.key, dl.value, dl.headers)
        self.metrics.output_refused.labels(reason, "deadletter").inc()
        self.metrics.deadlettered.labels("other").inc()
        log.error("output record refused by Kafka; dead-lettered instead", extra={"kv": {
            "reason": reason, "topic": msg.topic, "bytes": len(msg.value)}})
        error = f"{msg.topic} refused this record: {reason}"
        dl = deadletter_record(msg.key, msg.value, deadletter_headers(error, "other", SERVICE, msg.topic))
        if dl.truncated:
            self.metrics.deadletters_truncated.inc()
        return Outgoing(self.topics.deadletter, dl.key, dl.value, dl.headers)

    def _skip(self, msg: Outgoing, reason: str) -> None:
        self.metrics.output_refused.labels(reason, "skipped").inc()
        log.error("record refused by Kafka even as a bounded dead letter; skipped", extra={"kv": {
            "reason": reason, "topic": msg.topic, "bytes": len(msg.value)}})


_PARTITION_CACHE_KEYS = 200_000  #: keys whose partition is remembered, per topic


def _record(msg: Outgoing) -> Record:
    return msg.key, msg.value, msg.headers or []


async def _awaited(fut: Any) -> Any:
    if isinstance(fut, BaseException):
        raise fut
    return await fut
