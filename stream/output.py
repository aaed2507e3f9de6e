"""Producing a batch's output (session records and dead letters) without ever stalling on one record.

:class:`OutputWriter` sends every message of a batch without waiting, then awaits them together. A send
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

log = logging.getLogger(__name__)

#: ``send(message)`` schedules one record and returns an awaitable of its acknowledgement.
Send = Callable[[Outgoing], Awaitable[Awaitable[Any]]]
Pending = list[tuple[Outgoing, "asyncio.Future[Any] | Awaitable[Any] | BaseException"]]


class OutputFailed(Exception):
    """Output could not be produced for a transient reason (broker or network): retry the whole batch."""


class OutputWriter:
    """Sends messages in batches; guarantees that a permanently refused record never fails the batch (it
    is replaced as described in the module docstring), and that a transient failure is raised, not hidden."""

    def __init__(self, send: Send, topics: Topics, metrics: StreamMetrics) -> None:
        self._send = send
        self.topics = topics
        self.metrics = metrics

    async def enqueue(self, messages: Sequence[Outgoing]) -> Pending:
        """Schedule every message; a permanent client-side refusal is kept for :meth:`settle` to replace."""
        pending: Pending = []
        for msg in messages:
            try:
                pending.append((msg, await self._send(msg)))
            except Exception as exc:
                if produce_error_kind(exc) is ProduceErrorKind.TRANSIENT:
                    raise OutputFailed(produce_error_name(exc)) from exc
                pending.append((msg, exc))
        return pending

    async def settle(self, pending: Pending) -> None:
        """Await every acknowledgement. A permanently refused record is sent again alone (the producer
        may have refused a whole batch for one record of it), then replaced, each try awaited alone."""
        refused: list[Outgoing] = []
        # Awaited one after the other, not gathered: the acknowledgements arrive by the producer's batch,
        # and a task per record cost more than the send itself (thousands of records per commit).
        for msg, fut in pending:
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
            refused.append(msg)
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


async def _awaited(fut: Any) -> Any:
    if isinstance(fut, BaseException):
        raise fut
    return await fut
