"""The consume -> write -> commit loop shared by both sinks (one consumer group per table, like a Kafka
Connect worker).

Guarantees of :class:`SinkRunner`:

- **at least once into an idempotent table**: Kafka offsets are committed only after the database
  transaction holding their rows committed and their dead letters were acknowledged, so a crash at any
  point redelivers, and the writers make redelivery harmless;
- **backpressure**: on a connection/timeout error the runner pauses its partitions (no fetching), keeps
  its group membership alive, and retries the same batch with exponential backoff until it succeeds;
- **poison isolation**: a record that can never be written (undecodable, schema-invalid, refused by a
  constraint) is dead-lettered with the reason in headers and counted; the rest of its batch is written
  (a failing batch is bisected down to the offending record). Dead letters are sent as one batch (no
  wait per record) and bounded (``proto.deadletter.deadletter_record``); one Kafka refuses for good is
  re-sent as its head or skipped with a counted, logged reason, never retried as is, so it never stalls
  the sink.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from common.kafka import (
    MAX_REQUEST_SIZE,
    KafkaAuthenticationFailed,
    ProduceErrorKind,
    client_options,
    connection_problem,
    is_authentication_problem,
    produce_error_kind,
    produce_error_name,
)
from proto.codec import EventDecodeError
from proto.deadletter import DeadLetter, deadletter_headers, deadletter_record
from proto.topics import Topics
from sinks.errors import ErrorKind, Reject, classify, reason_of
from sinks.metrics import SinkMetrics
from sinks.migrations import MigrationError, apply_migrations
from sinks.settings import SinkSettings
from sinks.writers import Writer

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The dead-letter producer's per-partition batch size: many dead letters per request (aiokafka's default
#: of 16 KiB holds a few dozen), so a garbage-heavy batch is dead-lettered at tens of thousands per second.
DEADLETTER_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class Rejected:
    """One record that goes to the dead-letter topic, and why."""

    record: ConsumerRecord[bytes, bytes]
    error_class: str
    reason: str


#: One fetched batch: the records, the decoded items (with their record) and the records rejected by decoding.
_Record: TypeAlias = ConsumerRecord[bytes, bytes]
_Fetched: TypeAlias = tuple[list[_Record], list[tuple[_Record, Any]], list[Rejected]]


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


class Stopped(Exception):
    """Raised inside the loop when a stop was requested while waiting to retry."""


class Backoff:
    """Exponential backoff delays: ``initial``, doubling, capped at ``maximum``; :meth:`reset` on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = max(initial, 0.01)
        self.maximum = max(maximum, self.initial)
        self._next = self.initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def group_id_for(settings: SinkSettings, writer_name: str) -> str:
    """The consumer group: ``group_id`` when set, else ``<topic prefix>desktrace-sink-<name>`` (the
    prefix isolates groups exactly as it isolates topics)."""
    return settings.group_id or f"{settings.topic_prefix}desktrace-sink-{writer_name}"


class SinkRunner:
    """Runs one writer: consumes its topics, writes batches, dead-letters poison, commits offsets."""

    def __init__(
        self,
        writer: Writer,
        settings: SinkSettings,
        metrics: SinkMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.writer = writer
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metrics = metrics or SinkMetrics(writer.table)
        self.clock = clock
        self.group_id = group_id_for(settings, writer.name)
        self._conn: asyncpg.Connection | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self._failing = False
        self._ahead: asyncio.Task[_Fetched] | None = None  #: the next batch, fetched while one is written
        self._migrated = False
        #: Why Kafka refuses us (from common.kafka.connection_problem), "" when it does not.
        self.kafka_problem = ""

    # ---- lifecycle -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def migrate(self) -> list[str]:
        """Apply pending migrations (once per runner), retrying while the database is unreachable."""
        if self._migrated:
            return []

        def unreachable(exc: Exception) -> bool:
            return classify(exc) is ErrorKind.RETRY and not isinstance(exc, MigrationError)

        applied = await self._retrying(
            lambda: apply_migrations(self.settings.pg_dsn),
            unreachable,
            "postgres",
            "database unreachable at start-up; retrying",
        )
        self._migrated = True
        return applied

    async def _retrying(
        self,
        fn: Callable[[], Awaitable[T]],
        retryable: Callable[[Exception], bool],
        target: str,
        message: str,
    ) -> T:
        """``await fn()`` until it succeeds, backing off (own :class:`Backoff`) after each ``retryable``
        failure, counted under ``target`` and logged as ``message``; raises :class:`Stopped` on stop."""
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                return await fn()
            except Exception as exc:
                if not retryable(exc):
                    raise
                self.metrics.retries.labels(self.writer.table, target).inc()
                delay = backoff.next()
                log.warning(message, extra={"kv": {"error": type(exc).__name__, "retry_in_s": delay}})
                await self._sleep_unless_stopped(delay)

    async def _sleep_unless_stopped(self, delay: float) -> None:
        """Sleep ``delay`` seconds; raise :class:`Stopped` at once when :meth:`stop` is called (SIGTERM)."""
        if self.stopping:
            raise Stopped
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return
        raise Stopped

    async def start(self) -> None:
        """Apply migrations, then start the consumer and the dead-letter producer."""
        applied = await self.migrate()
        if applied:
            log.info("migrations applied", extra={"kv": {"versions": applied}})
        opts = client_options(self.settings)
        self._consumer = AIOKafkaConsumer(
            *self.writer.topics(self.topics),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(self.settings.kafka_session_timeout_ms // 4, 500),
            max_poll_records=self.settings.batch_size,
            **opts,
        )
        self._producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=DEADLETTER_BATCH_BYTES,
            max_request_size=MAX_REQUEST_SIZE,
            **opts,
        )
        await self._retry_kafka(self._consumer.start, "consumer start")
        await self._retry_kafka(self._producer.start, "producer start")
        log.info(
            "sink started",
            extra={
                "kv": {
                    "table": self.writer.table,
                    "group": self.group_id,
                    "topics": self.writer.topics(self.topics),
                }
            },
        )

    async def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        await self._close_conn()

    async def run(self) -> None:
        """Start, loop until :meth:`stop`, close. The next batch is fetched and decoded while the current one
        is written (the database works in its own process meanwhile); offsets are still committed one batch
        after the other, each only after its batch was written."""
        try:
            await self.start()
            while not self.stopping:
                ahead, self._ahead = self._ahead, None
                fetched = await (ahead if ahead is not None else self._fetch())
                if not self.stopping:
                    self._ahead = asyncio.create_task(self._fetch())
                await self._handle(fetched)
        except Stopped:
            log.info("stopped while retrying; uncommitted records will be redelivered")
        finally:
            ahead, self._ahead = self._ahead, None
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead  # its records are not committed: they will be redelivered
            await self.close()

    async def _rewind_ahead(self) -> None:
        """A write failed: give back the batch fetched ahead (seek its partitions to its first offsets), so
        that nothing more is consumed while the database is unavailable and the lag shows it."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or self._consumer is None:
            return
        try:
            records, _, _ = await ahead
        except Exception:
            return
        first: dict[TopicPartition, int] = {}
        for rec in records:
            first.setdefault(TopicPartition(rec.topic, rec.partition), rec.offset)
        assigned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)

    async def _retry_kafka(self, fn: Callable[[], Awaitable[Any]], what: str) -> None:
        """``fn`` until it succeeds; after each failure the cause is diagnosed (a refused login is named,
        with the setting to check, in the log and in ``/readyz``)."""

        async def attempt() -> Any:
            try:
                result = await fn()
            except Exception as exc:
                if _kafka_trouble(exc):
                    problem = await connection_problem(self.settings, wait_s=5.0)
                    if problem != self.kafka_problem and problem:
                        log.error("kafka refuses the connection", extra={"kv": {"problem": problem}})
                    self.kafka_problem = problem
                raise
            self.kafka_problem = ""
            return result

        await self._retrying(attempt, _kafka_trouble, "kafka", f"kafka {what} failed; retrying")

    # ---- readiness -----------------------------------------------------------------------------------
    async def check_kafka(self) -> bool:
        """Readiness: the cluster answers a metadata request."""
        if is_authentication_problem(self.kafka_problem):
            raise KafkaAuthenticationFailed(self.kafka_problem)
        if self._consumer is None:
            return False
        await self._consumer.topics()
        return True

    async def check_postgres(self) -> bool:
        """Readiness: a fresh connection answers ``SELECT 1``."""
        conn = await asyncpg.connect(self.settings.pg_dsn, timeout=3)
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close()

    # ---- one batch -----------------------------------------------------------------------------------
    async def step(self) -> int:
        """Collect one batch (bounded by size and time), write it, dead-letter its poison, commit its
        offsets; returns the number of records handled (0 when idle)."""
        return await self._handle(await self._fetch())

    async def _fetch(self) -> _Fetched:
        """Collect one batch and decode it."""
        records = await self._collect()
        await self._update_lag()
        items: list[tuple[ConsumerRecord[bytes, bytes], Any]] = []
        rejected: list[Rejected] = []
        if not records:
            return records, items, rejected
        self.writer.refresh(datetime.fromtimestamp(self.clock(), UTC))
        for rec in records:
            try:
                items.append((rec, self.writer.decode(rec.value)))
            except (EventDecodeError, Reject) as exc:
                rejected.append(Rejected(rec, exc.error_class, str(exc)))
        return records, items, rejected

    async def _handle(self, fetched: _Fetched) -> int:
        """Write a fetched batch, dead-letter its poison, commit its offsets."""
        records, items, rejected = fetched
        if not records:
            return 0
        self.metrics.records.labels(self.writer.table).inc(len(records))
        # The decoder's dead letters travel while the rows are written; all are acknowledged before the
        # commit.
        letters = await self._send_dead_letters(rejected)
        if items:
            refused = await self._write_with_retry(items)
            rejected += refused
            letters += await self._send_dead_letters(refused)
        if rejected:
            await self._settle_dead_letters(letters)
        await self._commit(records)
        return len(records)

    async def _collect(self) -> list[ConsumerRecord[bytes, bytes]]:
        assert self._consumer is not None
        size, wait = self.settings.batch_size, self.settings.batch_wait_ms / 1000
        out: list[ConsumerRecord[bytes, bytes]] = []
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while len(out) < size and not self.stopping:
            remaining = wait if deadline is None else deadline - loop.time()
            if remaining <= 0:
                break
            try:
                got = await self._consumer.getmany(
                    timeout_ms=int(remaining * 1000), max_records=size - len(out)
                )
            except KafkaError as exc:
                self.metrics.retries.labels(self.writer.table, "kafka").inc()
                log.warning("kafka fetch failed", extra={"kv": {"error": type(exc).__name__}})
                await asyncio.sleep(self._backoff.next())
                break
            for recs in got.values():
                out.extend(recs)
            if not out:
                break  # idle: let the caller refresh lag and check for stop
            if deadline is None:
                deadline = loop.time() + wait
        return out

    async def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                pos = await asyncio.wait_for(self._consumer.position(tp), 1.0)
            except (KafkaError, TimeoutError, IllegalStateError):
                continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - pos, 0))

    # ---- database ------------------------------------------------------------------------------------
    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.settings.pg_dsn, timeout=10, command_timeout=self.settings.pg_command_timeout_s
            )
            await self.writer.prepare(self._conn)
        return self._conn

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:
                conn.terminate()

    async def _write_once(self, items: Sequence[Any]) -> None:
        """One attempt: ensure DDL, then the writer's statements in one transaction."""
        conn = await self._connection()
        await self.writer.before_write(conn, items)
        started = time.perf_counter()
        async with conn.transaction():
            changed, duplicates = await self.writer.write(conn, items)
        table = self.writer.table
        self.metrics.write_seconds.labels(table).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(table).observe(len(items))
        self.metrics.rows_written.labels(table).inc(changed)
        if duplicates:
            self.metrics.rows_duplicate.labels(table).inc(duplicates)
        self.metrics.last_write.labels(table).set(self.clock())
        self.metrics.db_up.labels(table).set(1)

    async def _write_isolating(self, items: list[tuple[ConsumerRecord[bytes, bytes], Any]]) -> list[Rejected]:
        """Write ``items``; on a data error bisect until the poison records are found. Connection errors
        propagate (the caller retries everything: the writes are idempotent)."""
        try:
            await self._write_once([item for _, item in items])
            return []
        except Exception as exc:
            kind = classify(exc)
            if kind is ErrorKind.PARTITION:
                self.writer.on_partition_missing()
                raise
            if kind is not ErrorKind.DATA:
                raise
            if self._conn is not None and not self._conn.is_closed() and self._conn.is_in_transaction():
                await self._close_conn()  # a client-side failure mid-COPY may leave the session unusable
            if len(items) == 1:
                rec = items[0][0]
                return [Rejected(rec, "constraint", reason_of(exc))]
        mid = len(items) // 2
        first = await self._write_isolating(items[:mid])
        return first + await self._write_isolating(items[mid:])

    async def _write_with_retry(
        self, items: list[tuple[ConsumerRecord[bytes, bytes], Any]]
    ) -> list[Rejected]:
        partition_retries = 0
        while True:
            try:
                rejected = await self._write_isolating(items)
                if self._failing:
                    log.info("database writes recovered", extra={"kv": {"table": self.writer.table}})
                    self._failing = False
                self._backoff.reset()
                self._resume()
                return rejected
            except Exception as exc:
                kind = classify(exc)
                await self._close_conn()
                self._failing = True
                self.metrics.db_up.labels(self.writer.table).set(0)
                if kind is ErrorKind.PARTITION and partition_retries < 3:
                    partition_retries += 1
                    continue
                self.metrics.retries.labels(self.writer.table, "postgres").inc()
                delay = self._backoff.next()
                level = logging.WARNING if kind is not ErrorKind.RETRY or _expected(exc) else logging.ERROR
                log.log(
                    level,
                    "database write failed; pausing consumption and retrying",
                    extra={
                        "kv": {
                            "table": self.writer.table,
                            "error": type(exc).__name__,
                            "retry_in_s": delay,
                            "rows": len(items),
                        }
                    },
                )
                await self._rewind_ahead()
                await self._paused_wait(delay)
                if self.stopping:
                    raise Stopped from exc

    # ---- backpressure --------------------------------------------------------------------------------
    async def _paused_wait(self, delay: float) -> None:
        """Wait ``delay`` seconds with every partition paused, polling so the group keeps us; anything
        fetched anyway (partitions newly assigned by a rebalance) is rewound, not processed."""
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while not self.stopping:
            self._consumer.pause(*self._consumer.assignment())
            remaining = end - loop.time()
            if remaining <= 0:
                return
            try:
                got = await self._consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            except KafkaError:
                await asyncio.sleep(min(remaining, 1.0))
                continue
            for tp, recs in got.items():
                if recs:
                    self._consumer.seek(tp, recs[0].offset)
            await self._update_lag()  # lag keeps growing while paused: show it

    def _resume(self) -> None:
        assert self._consumer is not None
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)

    # ---- dead letters and offsets --------------------------------------------------------------------
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

    async def _commit(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        assigned = self._consumer.assignment()
        owned = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not owned:
            return
        try:
            await self._consumer.commit(owned)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Rebalanced away (or broker trouble): the new owner re-reads from the last commit; the
            # writes are idempotent, so nothing is lost or doubled.
            log.warning(
                "offset commit failed; records will be redelivered",
                extra={"kv": {"error": type(exc).__name__}},
            )


def _kafka_trouble(exc: Exception) -> bool:
    """A Kafka client or network failure: retried while starting the clients."""
    return isinstance(exc, KafkaError | OSError)


def _expected(exc: BaseException) -> bool:
    """Connection-type failures are expected operations events (WARNING); any other retried error is an
    ERROR. Only asked about errors :func:`classify` already called ``RETRY``."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.OperatorInterventionError,
    )
