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

Its parts: this module is the lifecycle (clients, migrations, the retry helpers, readiness, the loop);
:mod:`sinks.batches` one batch (fetch, decode, write and isolate, back off, commit) and the lag;
:mod:`sinks.deadletters` dead-lettering; :mod:`sinks.retry` backoff and error predicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from common.backoff import Backoff
from common.kafka import (
    MAX_REQUEST_SIZE,
    KafkaAuthenticationFailed,
    client_options,
    connection_problem,
    is_authentication_problem,
)
from proto.topics import Topics
from sinks.batches import BatchLoop, WriteSlot
from sinks.deadletters import DEADLETTER_BATCH_BYTES, Fetched
from sinks.errors import ErrorKind, classify
from sinks.metrics import SinkMetrics
from sinks.migrations import MigrationError, apply_migrations
from sinks.retry import Stopped, is_kafka_trouble
from sinks.settings import SinkSettings
from sinks.writers import Writer

log = logging.getLogger(__name__)

T = TypeVar("T")


class _HandOver(ConsumerRebalanceListener):
    """Tells the runner when the group is about to move partitions (aiokafka awaits it first)."""

    def __init__(self, runner: SinkRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._runner.hand_over(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Nothing to do: a partition assigned starts from its committed offset."""


def group_id_for(settings: SinkSettings, writer_name: str) -> str:
    """The consumer group: ``group_id`` when set, else ``<topic prefix>desktrace-sink-<name>`` (the
    prefix isolates groups exactly as it isolates topics)."""
    return settings.group_id or f"{settings.topic_prefix}desktrace-sink-{writer_name}"


class SinkRunner(BatchLoop):
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
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self._failing = False
        self._batches_retrying = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._ahead: list[tuple[int, asyncio.Task[Fetched]]] = []  #: the next batches, fetched ahead
        self._taking: asyncio.Task[Fetched] | None = None
        self._generation = 0
        #: Batches written at once: one at a time, in order, for a writer that needs it (sessions).
        self.concurrent_writes = 1 if writer.ordered else settings.raw_concurrent_writes
        self._all_slots = [WriteSlot() for _ in range(self.concurrent_writes)]
        self._slots: asyncio.Queue[WriteSlot] = asyncio.Queue()
        for slot in self._all_slots:
            self._slots.put_nowait(slot)
        self._handling: list[tuple[int, asyncio.Task[bool]]] = []
        self._committing: asyncio.Task[None] | None = None  #: the last batch's offsets, on their way
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
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(self.settings.kafka_session_timeout_ms // 4, 500),
            max_poll_records=self.settings.batch_size,
            max_partition_fetch_bytes=self.settings.kafka_fetch_partition_bytes,
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
        self._consumer.subscribe(self.writer.topics(self.topics), listener=_HandOver(self))
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
        await self._close_connections()

    async def run(self) -> None:
        """Start, loop until :meth:`stop`, close. The next batches (:data:`sinks.batches.AHEAD_BATCHES`) are
        fetched and decoded while the current ones are written (the database works in its own process
        meanwhile; :attr:`concurrent_writes` batches at once), and a batch's offsets travel to Kafka while
        the next one is written; offsets are still committed one batch after the other, each only after
        its batch and every one before it were written, and the last ones before the consumer closes."""
        try:
            await self.start()
            while not self.stopping:
                slot = await self._slots.get()  # a free slot first: no batch waits in hand for one
                if self._batches_retrying:
                    # A batch is being retried and its give-back sought the partitions back: nothing is
                    # fetched until it is written. A batch fetched now, past the records given back, and
                    # given back in turn, would seek past them.
                    self._slots.put_nowait(slot)
                    await self._writable.wait()
                    continue
                try:
                    fetched, generation = await self._next_batch()
                except BaseException:
                    self._slots.put_nowait(slot)
                    raise
                if not self.stopping and not self._batches_retrying:
                    self._fetch_ahead()
                await self._start_handle(slot, fetched, generation)
            await self._finish_handling()
        except Stopped:
            log.info("stopped while retrying; uncommitted records will be redelivered")
        finally:
            ahead, self._ahead = self._ahead, []
            for _, task in ahead:
                task.cancel()
            for _, task in ahead:
                with contextlib.suppress(BaseException):
                    await task  # their records are not committed: they will be redelivered
            handling, self._handling = self._handling, []
            for _, handle in handling:
                with contextlib.suppress(BaseException):
                    await handle  # ends at its next retry once stopping
            try:
                await self._commit_sent()
            except Exception as exc:  # _commit logs the failures it expects; close all the same
                log.warning("last offset commit failed", extra={"kv": {"error": type(exc).__name__}})
            await self.close()


    async def _retry_kafka(self, fn: Callable[[], Awaitable[Any]], what: str) -> None:
        """``fn`` until it succeeds; after each failure the cause is diagnosed (a refused login is named,
        with the setting to check, in the log and in ``/readyz``)."""

        async def attempt() -> Any:
            try:
                result = await fn()
            except Exception as exc:
                if is_kafka_trouble(exc):
                    problem = await connection_problem(self.settings, wait_s=5.0)
                    if problem != self.kafka_problem and problem:
                        log.error("kafka refuses the connection", extra={"kv": {"problem": problem}})
                    self.kafka_problem = problem
                raise
            self.kafka_problem = ""
            return result

        await self._retrying(attempt, is_kafka_trouble, "kafka", f"kafka {what} failed; retrying")

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


