"""One batch of the sink runner: fetch (the next ones while this one is written), decode, write in one
transaction (bisecting a failing batch down to its poison records), back off with the partitions paused
while the database or Kafka is down, dead-letter the rejected, then commit the offsets.
:class:`BatchLoop` is a part of :class:`sinks.runner.SinkRunner`.

A writer whose batches may land in any order (``Writer.ordered`` False: the raw sink, whose rows are
keyed and written idempotently) has up to ``raw_concurrent_writes`` batches written at once, each in
its own transaction on its own connection (a :class:`WriteSlot`), so that the database works on one
batch while it commits another. Offsets are still committed in batch order, each only once its batch
and every batch before it were written."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from common.backoff import Backoff
from common.kafka import position_now
from proto.codec import EventDecodeError
from sinks.deadletters import DeadLettering, Fetched, Rejected, log
from sinks.errors import ErrorKind, Reject, classify, reason_of
from sinks.metrics import SinkMetrics
from sinks.retry import Stopped, is_expected_failure
from sinks.settings import SinkSettings
from sinks.writers import Writer

#: Records decoded between two yields to the event loop while a batch is fetched ahead (about 2 ms of work).
DECODE_SLICE = 200
#: Batches fetched and decoded ahead of the one being written, one after the other.
AHEAD_BATCHES = 2


class HandedOver(Exception):
    """The partitions of the batch being retried were handed over to other consumers: give it up."""


class WriteSlot:
    """One of the batches a sink may write at once: the database connection it is written on (opened
    when first needed, closed after a failure)."""

    def __init__(self) -> None:
        self.conn: asyncpg.Connection | None = None


class BatchLoop(DeadLettering):
    """Consume -> write -> dead-letter -> commit for one batch (part of :class:`sinks.runner.SinkRunner`,
    which owns the clients, the lifecycle and the retry helpers declared here)."""

    _ahead: list[tuple[int, asyncio.Task[Fetched]]]  #: (generation when fetched, the batch)
    _taking: asyncio.Task[Fetched] | None  #: the batch fetched ahead that the loop waits for
    _committing: asyncio.Task[None] | None
    _generation: int  #: counts the revocations: a batch fetched in an older one is not written
    _slots: asyncio.Queue[WriteSlot]  #: the slots no batch is being written in
    _all_slots: list[WriteSlot]
    #: The batches being written (or waiting to commit), in batch order, with the generation each was
    #: fetched in; True once written and its offsets handed to Kafka.
    _handling: list[tuple[int, asyncio.Task[bool]]]
    _backoff: Backoff
    _consumer: AIOKafkaConsumer | None
    _failing: bool
    _batches_retrying: int  #: batches being retried (the database failed them)
    _writable: asyncio.Event  #: set while no batch is being retried
    clock: Callable[[], float]
    metrics: SinkMetrics
    settings: SinkSettings
    writer: Writer

    if TYPE_CHECKING:  # defined by SinkRunner

        @property
        def stopping(self) -> bool: ...

    async def step(self) -> int:
        """Collect one batch (bounded by size and time), write it, dead-letter its poison, commit its
        offsets; returns the number of records handled (0 when idle)."""
        generation = self._generation
        fetched = await self._fetch()
        slot = await self._slots.get()
        try:
            done = await self._handle(fetched, generation, slot, None)
        finally:
            self._slots.put_nowait(slot)
        await self._commit_sent()
        return len(fetched[0]) if done else 0

    async def _start_handle(self, slot: WriteSlot, fetched: Fetched, generation: int) -> None:
        """Write ``fetched`` in ``slot`` (taken by the caller before it took the batch, so that no batch
        waits in hand for a slot), in a task of its own, which gives the slot back. It commits after the
        batch before it, when that one is of the same generation (a batch of an older one was finished
        or given up by the hand-over)."""
        if self._batches_retrying:
            # The database failed a batch while this one was being taken: nothing more is taken until
            # that one is written. This batch goes back to Kafka, so that the lag shows it (the loop
            # fetches nothing more meanwhile: ``SinkRunner.run``).
            self._slots.put_nowait(slot)
            if generation == self._generation:
                await self._rewind_ahead(fetched[0])
            # Set once that batch is written, given up at a hand-over, or stopped (its paused wait ends
            # at a stop): never waits for longer than the retry itself.
            await self._writable.wait()
            return
        self._reap()
        previous = None
        if self._handling and self._handling[-1][0] == generation:
            previous = self._handling[-1][1]

        async def handle() -> bool:
            try:
                return await self._handle(fetched, generation, slot, previous)
            finally:
                self._slots.put_nowait(slot)

        self._handling.append((generation, asyncio.create_task(handle())))

    def _reap(self) -> None:
        """Forget the batches finished, raising what one of them raised (:class:`Stopped` included); the
        last one is kept, for the next batch to wait for."""
        while len(self._handling) > 1 and self._handling[0][1].done():
            _, task = self._handling.pop(0)
            if not task.cancelled():
                task.result()

    async def _finish_handling(self) -> None:
        """Wait for every batch being written; raise what the first one that failed raised."""
        handling, self._handling = self._handling, []
        if not handling:
            return
        tasks = [task for _, task in handling]
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.result()

    def _fetch_ahead(self) -> None:
        """Keep :data:`AHEAD_BATCHES` batches coming while one is written: each is fetched once the one
        before it was, so their records follow each other as the consumer returns them."""
        while len(self._ahead) < AHEAD_BATCHES:
            before = self._ahead[-1][1] if self._ahead else None
            self._ahead.append((self._generation, asyncio.create_task(self._fetch_after(before))))

    async def _next_batch(self) -> tuple[Fetched, int]:
        """The oldest batch fetched ahead and the generation it was fetched in; a batch cancelled by a
        hand-over comes back empty. Every fetch is a task a hand-over can cancel, so that none returns
        records of the next assignment under the generation of the one before."""
        if not self._ahead:
            self._fetch_ahead()
        generation, task = self._ahead.pop(0)
        self._taking = task
        try:
            await asyncio.wait([task])
        finally:
            self._taking = None
        if task.cancelled():
            return ([], [], []), generation
        return task.result(), generation

    async def hand_over(self, revoked: Collection[TopicPartition]) -> None:
        """Partitions (``revoked``) are about to move to other consumers (a rebalance; aiokafka awaits this
        before the group hands them out again). The batches fetched ahead are dropped: every partition's
        next owner, this one included, reads on from the committed offsets. The batches being written are
        finished (or, while the database is down, given up at their next retry) and their offsets
        committed (in order, up to the first one given up), so the new owner starts after them. Written
        later, one could overwrite what the new owner wrote meanwhile: a session's newer version with an
        older one. Joining with nothing assigned yet (the first join) hands nothing over."""
        if not revoked:
            return
        self._generation += 1
        # aiokafka gives no records while the group reassigns, then only the next assignment's, which
        # starts every partition at its committed offset. A fetch of this generation, cancelled now,
        # gives none of those; a batch it fetched before is not written (its partitions start again from
        # the committed offsets), so nothing needs seeking back.
        fetching = [task for _, task in self._ahead] + ([self._taking] if self._taking else [])
        self._ahead = []
        for task in fetching:
            task.cancel()
        if fetching:
            await asyncio.wait(fetching)
        handling = [task for _, task in self._handling]
        if handling:
            await asyncio.wait(handling)  # each batch written (or given up) and its offsets handed over
        await self._commit_sent()

    async def _fetch_after(self, before: asyncio.Task[Fetched] | None) -> Fetched:
        if before is not None:
            await asyncio.wait([before])
        return await self._fetch()

    async def _fetch(self) -> Fetched:
        """Collect one batch and decode it."""
        records = await self._collect()
        await self._update_lag()
        items: list[tuple[ConsumerRecord[bytes, bytes], Any]] = []
        rejected: list[Rejected] = []
        if not records:
            return records, items, rejected
        self.writer.refresh(datetime.fromtimestamp(self.clock(), UTC))
        decode = self.writer.decode
        for start in range(0, len(records), DECODE_SLICE):
            if start:
                # Let the batch being written go on: its next statement waits for this loop otherwise,
                # and the database would sit idle while this batch is decoded.
                await asyncio.sleep(0)
            for rec in records[start:start + DECODE_SLICE]:
                try:
                    items.append((rec, decode(rec.value)))
                except (EventDecodeError, Reject) as exc:
                    rejected.append(Rejected(rec, exc.error_class, str(exc)))
        return records, items, rejected

    async def _handle(
        self, fetched: Fetched, generation: int, slot: WriteSlot, previous: asyncio.Task[bool] | None
    ) -> bool:
        """Write a batch fetched in ``generation`` in ``slot`` and dead-letter its poison; once
        ``previous`` (the batch before it) is done, commit its offsets. Returns True when it was written
        and committed, and so was every batch before it. A batch fetched before partitions were handed
        over is dropped (its records are read again from the committed offsets, by whoever owns their
        partitions now), and so are the offsets of a batch written after one that was not: committing
        them would skip that one's records."""
        written = generation == self._generation and await self._write_batch(fetched, generation, slot)
        if previous is not None:
            await asyncio.wait([previous])
            if previous.cancelled() or previous.exception() is not None or not previous.result():
                return False
        if not written:
            return False
        records = fetched[0]
        if records:
            # The offsets go to Kafka while the next batch is written (about a tenth of a batch's time,
            # measured in bench/bench_sink_process.py); commits stay in batch order.
            await self._commit_sent()
            self._committing = asyncio.create_task(self._commit(records))
        return True

    async def _write_batch(self, fetched: Fetched, generation: int, slot: WriteSlot) -> bool:
        """Write the batch and dead-letter its poison; False when its partitions were handed over first."""
        records, items, rejected = fetched
        if not records:
            return True
        self.metrics.records.labels(self.writer.table).inc(len(records))
        # The decoder's dead letters travel while the rows are written; all are acknowledged before the
        # commit.
        letters = await self._send_dead_letters(rejected)
        if items:
            try:
                refused = await self._write_with_retry(items, generation, slot)
            except HandedOver:
                return False  # read again from the committed offsets by the partitions' next owners
            rejected += refused
            letters += await self._send_dead_letters(refused)
        if rejected:
            await self._settle_dead_letters(letters)
        return True

    async def _commit_sent(self) -> None:
        """Wait until the offsets handed to Kafka last are committed (or their failure logged)."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

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

    async def _connection(self, slot: WriteSlot) -> asyncpg.Connection:
        if slot.conn is None or slot.conn.is_closed():
            slot.conn = await asyncpg.connect(
                self.settings.pg_dsn, timeout=10, command_timeout=self.settings.pg_command_timeout_s
            )
            await self.writer.prepare(slot.conn)
        return slot.conn

    async def _close_connections(self) -> None:
        for slot in self._all_slots:
            await self._close_conn(slot)

    async def _close_conn(self, slot: WriteSlot) -> None:
        conn, slot.conn = slot.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:
                conn.terminate()

    async def _write_once(self, items: Sequence[Any], slot: WriteSlot) -> None:
        """One attempt: ensure DDL, then the writer's statements in one transaction."""
        conn = await self._connection(slot)
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

    async def _write_isolating(
        self, items: list[tuple[ConsumerRecord[bytes, bytes], Any]], slot: WriteSlot
    ) -> list[Rejected]:
        """Write ``items``; on a data error bisect until the poison records are found. Connection errors
        propagate (the caller retries everything: the writes are idempotent)."""
        try:
            await self._write_once([item for _, item in items], slot)
            return []
        except Exception as exc:
            kind = classify(exc)
            if kind is ErrorKind.PARTITION:
                self.writer.on_partition_missing()
                raise
            if kind is not ErrorKind.DATA:
                raise
            conn = slot.conn
            if conn is not None and not conn.is_closed() and conn.is_in_transaction():
                await self._close_conn(slot)  # a client-side failure mid-COPY may leave the session unusable
            if len(items) == 1:
                rec = items[0][0]
                return [Rejected(rec, "constraint", reason_of(exc))]
        mid = len(items) // 2
        first = await self._write_isolating(items[:mid], slot)
        return first + await self._write_isolating(items[mid:], slot)

    async def _write_with_retry(
        self, items: list[tuple[ConsumerRecord[bytes, bytes], Any]], generation: int, slot: WriteSlot
    ) -> list[Rejected]:
        """Write ``items`` until it succeeds; raises :class:`HandedOver` when the partitions were handed
        over since the batch was fetched (``generation``), instead of retrying. While it retries, no
        other batch is taken (:attr:`_writable`)."""
        partition_retries = 0
        retrying = False
        try:
            while True:
                if generation != self._generation:
                    raise HandedOver
                try:
                    rejected = await self._write_isolating(items, slot)
                    if self._failing and self._batches_retrying <= retrying:
                        log.info("database writes recovered", extra={"kv": {"table": self.writer.table}})
                        self._failing = False
                    self._backoff.reset()
                    if self._batches_retrying <= retrying:  # no other batch waits for the database
                        self._resume()
                    return rejected
                except Exception as exc:
                    kind = classify(exc)
                    await self._close_conn(slot)
                    self._failing = True
                    self.metrics.db_up.labels(self.writer.table).set(0)
                    if kind is ErrorKind.PARTITION and partition_retries < 3:
                        partition_retries += 1
                        continue
                    self.metrics.retries.labels(self.writer.table, "postgres").inc()
                    delay = self._backoff.next()
                    expected = kind is not ErrorKind.RETRY or is_expected_failure(exc)
                    level = logging.WARNING if expected else logging.ERROR
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
                    if not retrying:
                        retrying = True
                        self._batches_retrying += 1
                        self._writable.clear()
                    await self._rewind_ahead()
                    await self._paused_wait(delay, generation)
                    if self.stopping:
                        raise Stopped from exc
        finally:
            if retrying:
                self._batches_retrying -= 1
                if not self._batches_retrying:
                    self._writable.set()

    async def _paused_wait(self, delay: float, generation: int) -> None:
        """Wait ``delay`` seconds with every partition paused, polling so the group keeps us; anything
        fetched anyway (partitions newly assigned by a rebalance) is rewound, not processed. Returns early
        once the partitions of the batch waiting (fetched in ``generation``) are handed over."""
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while not self.stopping and generation == self._generation:
            self._consumer.pause(*self._consumer.assignment())
            remaining = end - loop.time()
            if remaining <= 0:
                return
            try:
                got = await self._consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            except KafkaError:
                await asyncio.sleep(min(remaining, 1.0))
                continue
            self._seek_back([rec for recs in got.values() for rec in recs])
            await self._update_lag()  # lag keeps growing while paused: show it

    def _resume(self) -> None:
        assert self._consumer is not None
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)

    async def _commit(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        assert self._consumer is not None
        # A batch holds each partition's records in fetch order, so the last one of a partition is its
        # highest offset (one dict store per record; a TopicPartition per partition, not per record).
        last = {(rec.topic, rec.partition): rec.offset for rec in records}
        assigned = self._consumer.assignment()
        offsets = {TopicPartition(topic, part): off + 1 for (topic, part), off in last.items()}
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

    async def _rewind_ahead(self, taken: Sequence[ConsumerRecord[bytes, bytes]] = ()) -> None:
        """A write failed: give back the batches fetched ahead, and ``taken`` (a batch fetched before them
        and not written), seeking their partitions to the first offsets they hold, so that nothing more
        is consumed while the database is unavailable and the lag shows it. Each batch ahead is awaited,
        not cancelled: one cancelled while it decodes would have moved the consumer past records this
        could no longer seek back to. Give-backs may interleave (two failed batches, or one and the batch
        the loop took meanwhile): each only ever seeks a partition back (:meth:`_seek_back`), so the lowest
        offset any of them holds is where the partition ends, whatever their order."""
        ahead, self._ahead = self._ahead, []
        if (not ahead and not taken) or self._consumer is None:
            return
        held: list[ConsumerRecord[bytes, bytes]] = list(taken)
        for _, task in ahead:
            await asyncio.wait([task])
            if task.cancelled():
                continue  # cancelled by a hand-over: the next owner reads from the committed offsets
            if task.exception() is not None:
                log.warning("a batch fetched ahead failed", extra={"kv": {
                    "error": type(task.exception()).__name__}})
                continue
            held += task.result()[0]
        self._seek_back(held)

    def _seek_back(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Seek each still assigned partition of ``records`` back to its lowest offset among them, so
        that they are read again; never forward: a partition another give-back already sought further
        back stays there (two retried batches' paused waits may each be handed records of a partition
        a rebalance just assigned, and give them back in either order)."""
        consumer = self._consumer
        if consumer is None or not records:
            return
        first: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            if rec.offset < first.get(tp, rec.offset + 1):
                first[tp] = rec.offset
        assigned = consumer.assignment()
        for tp, offset in first.items():
            if tp not in assigned:
                continue
            position = position_now(consumer, tp)
            if position is None or offset < position:
                consumer.seek(tp, offset)
