"""Batch consumption of the raw topics inside the Faust app (``shared/spec``-free plumbing; see
``docs/stream-performance.md``).

Faust hands every record to its agents one at a time: a ``Message`` object, the conductor, a channel queue,
the stream iterator, an ack, the monitor's callbacks. At tens of thousands of events per second that
machinery costs more than the sessionizer. :class:`BatchConsumer` keeps Faust's consumer (group membership,
assignment, rebalance callbacks, table recovery, offset commits) and replaces only its fetch loop: the
records of the raw topics each fetch returns go to one handler call as a list, as received; records of any
other topic (the table's changelog during recovery) still take Faust's per-message path.

Offsets: after the handler returned (the caller makes the batch's output durable before it returns), the
batch's partitions are marked processed up to their last record. Faust's periodic commit commits those
offsets; just before it takes them, :attr:`BatchConsumer.before_commit` runs (the worker writes the
changelog records of every user changed since the last commit there), and Faust flushes the producer before
it commits. Both run under the processing lock, so a commit never includes a batch whose state was not
written, and never writes the state of a batch still in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, ClassVar, cast

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaFaustConsumer
from faust.types import TP
from mode import Service

BatchHandler = Callable[[list[Any]], Awaitable[None]]


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processed: dict[TP, int] = {}  #: next offset to commit, per batch-topic partition

    @classmethod
    def bound(
        cls,
        topics: Iterable[str],
        handler: BatchHandler,
        before_commit: Callable[[], Awaitable[None]],
        lock_of: Callable[[], asyncio.Lock],
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
                },
            ),
        )

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
            before = type(self).before_commit
            if before is not None:
                await before()
            return bool(await super().force_commit(topics, start_new_transaction=start_new_transaction))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._processed.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    # ---- the fetch loop -------------------------------------------------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        batch_topics = self.batch_topics
        handler = type(self).batch_handler
        assert handler is not None
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                generation = self.app.consumer_generation_id
                batch: list[Any] = []
                last: dict[TP, int] = {}
                for tp, recs in records.items():
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    r_offset = read_offset[tp]
                    if r_offset is not None and recs and recs[0].offset < r_offset:
                        recs = [r for r in recs if r.offset >= r_offset]
                    if not recs:
                        continue
                    if tp.topic in batch_topics:
                        batch.extend(recs)
                        last[tp] = recs[-1].offset
                        continue
                    for record in recs:  # other topics (changelog recovery): Faust's per-message path
                        message = self._to_message(tp, record)
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        read_offset[tp] = record.offset
                if not batch:
                    continue
                await handler(batch)
                if self.app.consumer_generation_id != generation or not self.flow_active:
                    continue  # rebalanced meanwhile: Faust seeks back to the committed offsets
                assignment = self.assignment()
                for tp, offset in last.items():
                    if tp in assignment:
                        read_offset[tp] = offset
                        self._processed[tp] = offset + 1
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
