"""Batch consumption of the raw topics inside the Faust app (``shared/spec``-free plumbing; see
``docs/stream-performance.md``).

Faust hands every record to its agents one at a time: a ``Message`` object, the conductor, a channel queue,
the stream iterator, an ack, the monitor's callbacks. At tens of thousands of events per second that
machinery costs more than the sessionizer. :class:`BatchConsumer` keeps Faust's consumer (group membership,
assignment, rebalance callbacks, table recovery, offset commits) and replaces only its fetch loop: the
records of the raw topics it fetches are gathered until the next commit is due (at most ``batch_size`` of
them) and go to one handler call as a list, in fetch order; records of any other topic (the table's
changelog during recovery) still take Faust's per-message path, and those a rebalance keeps from it are
put back (:meth:`BatchConsumer._put_back`), not dropped. Right after the handler returns, if the
commit is due, the loop commits: a batch's sessions are published as soon as it is handled, and a worker
that keeps up handles one batch per commit interval (the sessionizer's fixed cost per user paid once per
interval, not once per fetch). A worker catching up handles full batches as they are gathered; while at
least another full batch is known to be waiting (records held or still to fetch below the highwaters),
whether or not the latest batch filled, it commits at most every ``catchup_commit_interval_s`` (each commit
settles and writes every changed user: with thousands of users, committing every second cost a sixth of a
backlog's time); at the end of the backlog (every raw partition fetched to its highwater) it handles and
commits the last records at once rather than at the next due commit.

Offsets: after the handler returned, the batch's partitions are marked processed up to their last record.
The commit takes those offsets; just before, :attr:`BatchConsumer.before_commit` runs (the worker settles
the users changed since the last commit, sends the output of the batches since then and waits for it, then
writes the changelog records of every user changed since), and Faust flushes the producer before it
commits. Both run under the processing lock, so a commit never includes a batch whose state was not
written, and never writes the state of a batch still in progress. Faust's commit timer still runs, as a
safety net (it commits when the loop has not for three intervals, or three catch-up intervals when that is
longer).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from time import monotonic, time
from typing import Any, ClassVar, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.exceptions import ConsumerNotStarted
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode import Service

from common.kafka import position_now
from stream.gather import BatchGather

log = logging.getLogger(__name__)

#: A failpoint for the tests against the real broker (not a setting): "1" makes the fetch loop drop every
#: changelog record it fetches, as the loop did before the put-back (:meth:`BatchConsumer._put_back`), so a
#: table recovery waits for ever and the worker's recovery watch must end it (``stream.recovery``).
DROP_CHANGELOG_ENV = "DESKTRACE_TEST_DROP_CHANGELOG_RECORDS"

BatchHandler = Callable[[list[Any]], Awaitable[None]]

#: The longest wait for the consumer thread to say where a partition is read from.
POSITION_TIMEOUT_S = 1.0


class BatchConsumer(AIOKafkaFaustConsumer):
    """Faust's aiokafka consumer, with the records of :attr:`batch_topics` delivered in batches.

    Guarantees: every fetched record of a batch topic reaches :attr:`batch_handler` exactly once per fetch,
    in offset order per partition; its offset becomes committable only after the handler returned, and only
    if the consumer generation did not change meanwhile (records of a rebalanced fetch are dropped and
    re-fetched from the committed offsets, as Faust does); :attr:`before_commit` runs under
    :attr:`lock` before every commit's offsets are taken.
    """

    batch_topics: ClassVar[frozenset[str]] = frozenset()
    batch_handler: ClassVar[BatchHandler | None] = None
    before_commit: ClassVar[Callable[[], Awaitable[None]] | None] = None
    lock_of: ClassVar[Callable[[], asyncio.Lock] | None] = None
    on_commit: ClassVar[Callable[[float], None] | None] = None  #: seconds each commit took
    fetch_max_wait_ms: ClassVar[int | None] = None  #: the broker's longest hold of a fetch (None: Faust's)
    align_wait_s: ClassVar[float] = 0.0  #: see :class:`stream.gather.BatchGather` (0: no alignment)
    #: Seconds between the commits of a worker working through a backlog (its batches full, another full
    #: batch known to be waiting); the commit interval when shorter.
    catchup_commit_interval_s: ClassVar[float] = 0.0
    on_aligned: ClassVar[Callable[[int], None] | None] = None  #: records handled after waiting for alignment

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processed: dict[TP, int] = {}  #: next offset to commit, per batch-topic partition
        self._committed_at = monotonic()  #: when the latest commit started
        self._drop_changelog = os.environ.get(DROP_CHANGELOG_ENV) == "1"
        if self._drop_changelog:
            log.warning("test failpoint set: every changelog record fetched is dropped", extra={"kv": {
                "variable": DROP_CHANGELOG_ENV}})

    @classmethod
    def bound(
        cls,
        topics: Iterable[str],
        handler: BatchHandler,
        before_commit: Callable[[], Awaitable[None]],
        lock_of: Callable[[], asyncio.Lock],
        on_commit: Callable[[float], None] | None = None,
        fetch_max_wait_s: float | None = None,
        align_wait_s: float = 0.0,
        on_aligned: Callable[[int], None] | None = None,
        catchup_commit_interval_s: float = 0.0,
    ) -> type[BatchConsumer]:
        """A subclass delivering ``topics`` to ``handler`` (Faust instantiates the consumer class itself)."""
        return cast(
            "type[BatchConsumer]",
            type(
                "BoundBatchConsumer",
                (cls,),
                {
                    "batch_topics": frozenset(topics),
                    "batch_handler": staticmethod(handler),
                    "before_commit": staticmethod(before_commit),
                    "lock_of": staticmethod(lock_of),
                    "on_commit": None if on_commit is None else staticmethod(on_commit),
                    "fetch_max_wait_ms": None if fetch_max_wait_s is None else round(fetch_max_wait_s * 1000),
                    "align_wait_s": align_wait_s,
                    "on_aligned": None if on_aligned is None else staticmethod(on_aligned),
                    "catchup_commit_interval_s": catchup_commit_interval_s,
                },
            ),
        )

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # ---- offsets --------------------------------------------------------------------------------------

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.batch_topics:
            return self._processed.get(tp)
        return cast("int | None", super()._new_offset(tp))

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        seen = set()
        for tp in super()._filter_tps_with_pending_acks(topics):
            seen.add(tp)
            yield tp
        for tp in list(self._processed):
            if tp not in seen and (topics is None or tp in topics or tp.topic in topics):
                yield tp

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        lock_of = type(self).lock_of
        if lock_of is None:
            return bool(await super().force_commit(topics, start_new_transaction=start_new_transaction))
        async with lock_of():
            started = self._committed_at = monotonic()
            before = type(self).before_commit
            if before is not None:
                await before()
            done = bool(await super().force_commit(topics, start_new_transaction=start_new_transaction))
            on_commit = type(self).on_commit
            if on_commit is not None:
                on_commit(monotonic() - started)
            return done

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._processed.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    @Service.task
    async def _commit_handler(self) -> None:
        """Faust's periodic commit, now a safety net: the fetch loop commits at the commit interval right
        after the batch it gathered until then (or with nothing to handle), so that a batch's output is
        published as soon as it is handled; this commits only when the loop has not for three intervals (of
        the longer of the commit and catch-up intervals)."""
        interval = float(self.commit_interval)
        stalled = 3 * max(interval, type(self).catchup_commit_interval_s)
        await self.sleep(interval)
        async for _ in self.itertimer(interval, name="commit"):
            if monotonic() - self._committed_at >= stalled:
                await self.commit()

    # ---- the fetch loop -------------------------------------------------------------------------------

    async def _take(
        self, records: Any, active: set[TP] | None, gather: BatchGather, now: float, now_ms: int
    ) -> None:
        """Add one fetch's records of the batch topics to ``gather`` (they wait there until it lets them into
        a batch); records of other topics (changelog recovery) take Faust's per-message path."""
        read_offset = self._read_offset
        generation = self.app.consumer_generation_id
        undelivered: dict[TP, int] = {}
        for tp, recs in records.items():
            if not (active is None or tp in active or tp in self._buffered_partitions):
                if recs and tp.topic not in self.batch_topics:
                    undelivered[tp] = recs[0].offset
                continue
            r_offset = read_offset[tp]
            if r_offset is not None and recs and recs[0].offset < r_offset:
                recs = [r for r in recs if r.offset >= r_offset]
            if not recs:
                continue
            if tp.topic in self.batch_topics:
                gather.add(tp, recs, generation, now, now_ms)
                continue
            if self._drop_changelog:
                continue
            for record in recs:
                delivery = self.callback(self._to_message(tp, record))
                waited = await self.wait_first(delivery, self.suspend_flow.wait())
                if delivery not in waited.done:  # the flow stopped first (a rebalance): not delivered
                    undelivered[tp] = record.offset
                    break
                read_offset[tp] = record.offset
        await self._put_back(undelivered)

    async def _drop_fetch(self, records: Any) -> None:
        """A fetch that returned while the flow is stopped (a rebalance): none of its records is delivered.
        As Faust's own fetch loop does, every partition is sought to its committed offset; the records of
        other topics than the batch topics (no committed offset: the table's changelog) are put back
        (:meth:`_put_back`)."""
        batch = self.batch_topics
        fetched = records or {}
        await self._put_back({tp: rs[0].offset for tp, rs in fetched.items() if rs and tp.topic not in batch})
        try:  # the assignment may change under the seek: the next rebalance seeks again
            await self.perform_seek()
        except Exception as exc:
            log.warning("seek to the committed offsets failed (the assignment changed)",
                        extra={"kv": {"exception": type(exc).__name__}})

    async def _put_back(self, undelivered: dict[TP, int]) -> None:
        """Fetched records of other topics than the batch topics (the table's changelog) that were not
        delivered: ``{tp: offset of the first}``. The consumer thread has moved past them, so each such
        partition is sought back to its first undelivered record, unless it was sought elsewhere since (its
        position is no longer the one the fetch left, :attr:`_FetchWaitConsumerThread.fetched_to`).

        Why: a fetch in flight when a rebalance starts can return the changelog records of a partition just
        assigned (Faust's active partition set is updated in place), after the recovery sought that partition
        to where it starts reading and before it resumed the flow. Dropped then, the recovery would never see
        them and wait forever for that partition ("No event received for active tp ... since recovery
        start"). The batch topics need none of this: Faust seeks them to their committed offsets."""
        if not undelivered:
            return
        try:
            thread = cast(_FetchWaitConsumerThread, self._thread)
            fetched_to = thread.fetched_to
            back = {tp: (first, fetched_to[tp]) for tp, first in undelivered.items() if tp in fetched_to}
            moved = await thread.call_thread(_put_back_in_thread, thread._ensure_consumer(), back)
        except Exception as exc:  # not started, stopping, assignment gone: the next recovery seeks anew
            log.warning("could not seek changelog partitions back to records not delivered", extra={"kv": {
                "partitions": len(undelivered), "exception": type(exc).__name__}})
            return
        if moved:
            log.info("changelog records fetched during a rebalance will be read again", extra={"kv": {
                "partitions": moved}})

    async def _wait_records(self, wait_s: float, holding: set[TP]) -> tuple[Any, set[TP] | None]:
        """Faust's ``_wait_next_records`` without the partitions in ``holding``: their fetched records wait
        in the gather, and aiokafka fetches a partition again only once its buffered records are taken."""
        if not holding:
            return cast("tuple[Any, set[TP] | None]", await self._wait_next_records(wait_s))
        if not self.flow_active:
            await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
        active = self._get_active_partitions() - holding
        if not active:
            await asyncio.sleep(min(wait_s, 0.05))
            return {}, active
        return await self._getmany(active_partitions=active, timeout=wait_s), active

    def _highwater(self, tp: TP) -> int | None:
        """The highwater of ``tp`` from its latest fetch response (Faust's ``Consumer.highwater``, read
        from the consumer thread's aiokafka state), None if not known: no response yet, or ``tp`` no longer
        assigned (the consumer thread may change the assignment meanwhile; aiokafka asserts it)."""
        try:
            hw = self.highwater(tp)
        except (AssertionError, AttributeError, ConsumerNotStarted):
            return None
        return None if hw is None else int(hw)

    async def _fetched_all(self, gather: BatchGather, raw: list[TP], positions: dict[TP, int | None]) -> bool:
        """Whether the raw partitions ``raw`` are fetched to their highwaters (``BatchGather.fetched_all``).
        ``positions``: where the partitions that delivered nothing in this generation are read from (the
        consumer thread's answers, kept for the generation: such a partition's position does not move; one
        not known is asked again next time)."""
        highwaters = {tp: self._highwater(tp) for tp in raw}  # one read each from the consumer thread's state
        if None in highwaters.values():
            return False
        for tp in gather.undelivered(raw):
            if positions.get(tp) is None:
                try:
                    positions[tp] = await asyncio.wait_for(self.position(tp), POSITION_TIMEOUT_S)
                except Exception as exc:  # not assigned any more, no position yet: not known (asked again)
                    log.debug("no position for a raw partition", extra={"kv": {
                        "exception": type(exc).__name__}})
                    return False
        return gather.fetched_all(raw, highwaters.get, positions.get)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        handler = type(self).batch_handler
        assert handler is not None
        limit = max(1, int(self.app.conf.broker_max_poll_records or 1))
        interval = float(self.commit_interval)
        catchup_interval = max(interval, type(self).catchup_commit_interval_s)
        due = monotonic() + interval
        gather = BatchGather(limit, type(self).align_wait_s)
        handling = 0.0  #: seconds spent handling and committing: the gather's clock does not count them
        on_aligned = type(self).on_aligned
        raw: list[TP] = []  #: the batch topics' assigned partitions, in consumer generation ``raw_of``
        raw_of: int | None = None
        #: the latest batch was full or behind: the worker may be working through a backlog
        catching_up = False
        #: at least another full batch was still to take before the latest batch: commits come every
        #: catch-up interval
        behind = False
        positions: dict[TP, int | None] = {}  #: where partitions that delivered nothing are read from

        def raw_partitions() -> list[TP]:
            nonlocal raw, raw_of
            if raw_of != gather.generation:  # the assignment changes with the generation only
                raw_of = gather.generation
                raw = [tp for tp in self.assignment() if tp.topic in self.batch_topics]
                positions.clear()
            return raw

        def release_held() -> None:  # the gathering clock stops while batches are handled
            gather.release(raw_partitions(), self._highwater, monotonic() - handling, int(time() * 1000))

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                if gather.generation not in (None, self.app.consumer_generation_id) or not self.flow_active:
                    gather.reset()  # an older assignment: Faust seeks back to the committed offsets
                if gather.held and not gather.full:  # what waits here may fill the batch: then no wait
                    release_held()
                if not gather.full:
                    timeout = min(1.0, max(0.0, due - monotonic()))
                    records, active = await self._wait_records(timeout, gather.holding())
                    await asyncio.sleep(0)
                    if self.should_stop:
                        continue
                    if not self.flow_active:
                        await self._drop_fetch(records)
                        continue
                    if records:
                        await self._take(records, active, gather, monotonic() - handling, int(time() * 1000))
                if gather.held:
                    release_held()
                if (catching_up and gather.batch and not gather.full and monotonic() < due
                        and await self._fetched_all(gather, raw_partitions(), positions)):
                    due = monotonic()  # the end of a backlog: its last records are handled and committed now
                # A batch is handled when the next commit is due (so its output and state are written
                # right after it) or when it is full; until then it gathers what arrives.
                if not gather.batch or (monotonic() < due and not gather.full):
                    if monotonic() >= due and not gather.batch:  # idle: commit what the scan produced
                        due = max(due + interval, monotonic())
                        await self.commit()
                    continue
                # Behind: another full batch is known to be waiting (counted before the take, from this
                # generation's offsets), whether or not this batch filled: a worker that commits every
                # second gathers less than a batch between commits, and would never get out of that.
                behind = gather.backlog(raw_partitions(), self._highwater) >= limit
                catching_up = gather.full or behind
                batch, last, generation = gather.take()
                if gather.aligned and on_aligned is not None:
                    on_aligned(gather.aligned)
                    gather.aligned = 0
                started = monotonic()
                await handler(batch)
                if self.app.consumer_generation_id == generation and self.flow_active:
                    assignment = self.assignment()
                    read_offset = self._read_offset
                    for tp, offset in last.items():
                        if tp in assignment:
                            read_offset[tp] = offset
                            self._processed[tp] = offset + 1
                # else: rebalanced meanwhile; Faust seeks back to the committed offsets
                if monotonic() >= due:
                    catchup_due = self._committed_at + catchup_interval
                    if behind and monotonic() < catchup_due:
                        # Working through a backlog: full batches, and fewer commits (each writes every
                        # changed user's state). The end of the backlog still commits at once (above).
                        due = catchup_due
                    else:
                        # Commits keep their pace (gathering takes what the handling and the commit leave
                        # of the interval); past it, the next batch is what has arrived meanwhile.
                        due = max(due + interval, monotonic())
                        await self.commit()
                        if behind:  # the next batches fill (or the backlog ends) before the next one
                            due = max(due, self._committed_at + catchup_interval)
                handling += monotonic() - started
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


def put_back_unmoved(consumer: AIOKafkaConsumer, undelivered: Mapping[TP, tuple[int, int]]) -> int:
    """In the consumer's own loop: seek each assigned partition of ``undelivered`` (``{tp: (first, end)}``:
    records from ``first`` fetched but not delivered, ``end`` the position that fetch left) back to ``first``
    if its position is still ``end`` (nothing sought it elsewhere since, nor consumed more); returns how many
    were sought back. Synchronous: nothing else of the consumer's loop runs between reading a position and
    seeking."""
    moved = 0
    for tp, (first, end) in undelivered.items():
        partition = TopicPartition(tp.topic, tp.partition)
        if position_now(consumer, partition) == end:
            consumer.seek(partition, first)
            moved += 1
    return moved


async def _put_back_in_thread(consumer: AIOKafkaConsumer, undelivered: Mapping[TP, tuple[int, int]]) -> int:
    return put_back_unmoved(consumer, undelivered)  # the consumer thread awaits what it is given


class _FetchWaitConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, its aiokafka consumer holding fetches at most the consumer class's
    :attr:`BatchConsumer.fetch_max_wait_ms` (Faust fixes 1.5 s).

    Why it matters: aiokafka keeps one fetch in flight per broker, for the partitions that have nothing
    buffered. When some of them are caught up (a quiet topic), the broker holds that fetch for the whole
    wait, and the partitions with a backlog, consumed meanwhile, cannot be fetched until it returns: the
    worker stalls, catching up and live alike (docs/stream-performance.md).

    It also keeps where each fetch left its partitions (:attr:`fetched_to`), for
    :meth:`BatchConsumer._put_back`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The position of each partition of the latest fetch's records, read right after that fetch in
        #: the consumer's loop (nothing runs in between): changelog records not delivered are sought back
        #: only if their partition is still there (a partition with no valid position is left out). Not the
        #: last record's offset + 1: compaction and transaction markers leave gaps, which aiokafka skips.
        self.fetched_to: dict[TP, int] = {}

    async def _fetch_records(
        self,
        consumer: AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 - Faust's signature, overridden
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        positions = {tp: position_now(consumer, tp) for tp in records or ()}
        self.fetched_to = {tp: p for tp, p in positions.items() if p is not None}
        return records

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.consumer, "fetch_max_wait_ms", None)
        if wait is not None:
            if not hasattr(consumer, "_fetch_max_wait_ms"):  # read by the fetcher aiokafka builds on start
                raise RuntimeError("this aiokafka has no _fetch_max_wait_ms: pin aiokafka as pyproject.toml "
                                   "says, or update stream/batching.py")
            consumer._fetch_max_wait_ms = wait
        return consumer
