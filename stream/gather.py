"""Gathering the raw records of one batch, aligned in record time across the co-partitioned raw topics.

Pure bookkeeping, no Kafka: :class:`stream.batching.BatchConsumer` feeds it each fetch's records and asks
which partitions to fetch next. Why the alignment: the three raw topics carry the same users (partition
``p`` of each holds the same users) but very different volumes. A worker that catches up on a backlog gets
each partition's records one fetch (up to ``max_partition_fetch_bytes``) at a time, so the small topic's
whole backlog arrives first and the large topic's an hour of event time later. Every user then gets events
older than the facts it already settled, and the sessionizer recomputes from far back on every batch
(measured in ``docs/stream-performance.md``, "Catching up in time order"). Kafka Streams avoids the same
cost by choosing, among a task's partitions, the record with the lowest timestamp; this does the same per
batch.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any, Protocol

#: A record timestamp further than this ahead of the wall clock (a producer with a wrong clock) is not
#: held back and does not move its partition's time.
FUTURE_SLACK_MS = 60_000

#: A partition with fewer records than this still to fetch holds nobody back: it is (nearly) caught up,
#: as a worker that keeps up always is, so live records are never held; the alignment is for backlogs.
ALIGN_MIN_LAG = 1000

_INF = float("inf")


class _TopicPartition(Protocol):
    @property
    def partition(self) -> int: ...


Highwater = Callable[[Any], "int | None"]


class BatchGather:
    """The records of the batch being gathered, taken from the fetches of the raw topics' partitions.

    Guarantees:

    - every record added is in exactly one batch (:meth:`take`), in offset order per partition; a batch
      holds at most ``limit`` records; each batch's ``last`` offsets are those of the records it holds;
    - with ``align_wait_s > 0``, a record goes into a batch only once every co-partitioned partition (the
      same partition number of another raw topic) that is behind (at least :data:`ALIGN_MIN_LAG` records
      still to fetch) has delivered records at least as late (record timestamps): the partitions that are
      ahead wait, and :meth:`holding` names them so that they are not fetched meanwhile (memory stays at
      most one fetch per partition beyond the batch). A partition holds nobody back while it is not
      behind, before it has delivered a record with a usable timestamp, or once it has delivered nothing
      for ``align_wait_s`` of gathering time (``now``: a clock that stops while batches are handled), so a
      worker that keeps up never holds a record;
    - records without a timestamp, or stamped more than :data:`FUTURE_SLACK_MS` ahead of ``now_ms``, are
      never held back;
    - with ``align_wait_s == 0`` records go into the batch in the order they were added.
    """

    def __init__(self, limit: int, align_wait_s: float = 0.0) -> None:
        self.limit = limit
        self.align_wait_s = align_wait_s
        self.batch: list[Any] = []
        self.last: dict[Any, int] = {}
        self.held: dict[Any, list[Any]] = {}  #: added, not yet in a batch, per partition in offset order
        self.generation: int | None = None  #: the consumer generation the waiting records were fetched in
        self._times_of: int | None = None  #: the consumer generation the partitions' times are from
        #: per partition, the latest record timestamp added (its time); None: it delivered records, none
        #: with a usable timestamp (it holds nobody back)
        self._time: dict[Any, int | None] = {}
        self._progress: dict[Any, float] = {}  #: per partition, when it last delivered records (``now``)
        self._next: dict[Any, int] = {}  #: per partition, the offset after the last record added
        self._waited: dict[Any, int] = {}  #: per partition, the last offset held back for alignment
        #: records that went into a batch after being held back for alignment, since the owner last set it
        #: back to 0
        self.aligned = 0

    @property
    def full(self) -> bool:
        return len(self.batch) >= self.limit

    def holding(self) -> set[Any]:
        """The partitions with records waiting here: fetch them only once these are in a batch."""
        return set(self.held)

    def add(self, tp: Any, recs: list[Any], generation: int | None, now: float, now_ms: int) -> None:
        """One fetch's records of ``tp`` (in offset order), fetched in consumer ``generation``, waiting
        until :meth:`release` lets them into a batch."""
        if not recs:
            return
        if self.generation is None:
            self.generation = generation
            if self._times_of != generation:  # another assignment: other positions
                self._forget_positions()
                self._times_of = generation
        held = self.held.get(tp)
        if held is None:
            self.held[tp] = list(recs)
        else:
            held.extend(recs)
        self._progress[tp] = now
        self._next[tp] = recs[-1].offset + 1
        latest = self._time.get(tp)
        horizon = now_ms + FUTURE_SLACK_MS
        for r in recs:
            ts = r.timestamp
            if ts is not None and 0 <= ts <= horizon and (latest is None or ts > latest):
                latest = ts
        self._time[tp] = latest

    def release(
        self, assigned: Iterable[_TopicPartition], highwater: Highwater, now: float, now_ms: int
    ) -> None:
        """Move the waiting records that may go into the batch there (at most its room).

        ``assigned``: the raw partitions this worker owns; ``highwater(tp)``: the offset after the last
        record of ``tp`` in the broker as of its latest fetch, ``None`` if not known: what is still to be
        fetched is that less the offset after the last record added here."""
        if not self.held:
            return
        frontier = self._frontiers(assigned, highwater, now) if self.align_wait_s > 0 else None
        horizon = now_ms + FUTURE_SLACK_MS
        for tp in list(self.held):
            room = self.limit - len(self.batch)
            if room <= 0:
                return
            recs = self.held[tp]
            limit = _INF if frontier is None else frontier.get(tp.partition, _INF)
            n = 0
            stopped = False
            if limit == _INF:
                n = min(room, len(recs))
            else:
                end = min(room, len(recs))
                while n < end:
                    ts = recs[n].timestamp
                    if ts is not None and limit < ts <= horizon:  # (the limit is a usable time, >= 0)
                        stopped = True
                        break
                    n += 1
            waited = self._waited.get(tp)
            if stopped:  # the rest waits for the partitions behind
                self._waited[tp] = recs[-1].offset
            elif waited is not None and waited <= recs[n - 1].offset:
                del self._waited[tp]
            if not n:
                continue
            if waited is not None:
                self.aligned += bisect_right(recs, waited, 0, n, key=_offset)
            self.batch.extend(recs[:n] if n < len(recs) else recs)
            self.last[tp] = recs[n - 1].offset
            if n < len(recs):
                self.held[tp] = recs[n:]
            else:
                del self.held[tp]

    def _frontiers(
        self, assigned: Iterable[_TopicPartition], highwater: Highwater, now: float
    ) -> dict[int, float]:
        """Per partition number, the record time up to which every raw partition of that number that is
        behind has delivered (no entry when none is)."""
        out: dict[int, float] = {}
        wait = self.align_wait_s
        for tp in assigned:
            latest = self._time.get(tp)
            if latest is None or now - self._progress[tp] > wait:
                continue  # nothing delivered yet, nothing with a usable time, or not delivering
            hw = highwater(tp)
            if hw is None or hw - self._next[tp] < ALIGN_MIN_LAG:
                continue  # (nearly) caught up, or not known yet
            p = tp.partition
            if latest < out.get(p, _INF):
                out[p] = latest
        return out

    def fetched_all(
        self, assigned: Iterable[Any], highwater: Highwater, position: Callable[[Any], int | None]
    ) -> bool:
        """Whether every partition of ``assigned`` is known to have nothing left to fetch: its highwater
        (``highwater(tp)``, as in :meth:`release`) is known and reached by the offset after the last record
        added here or, for a partition that delivered nothing in the current consumer generation, by
        ``position(tp)`` (the offset the consumer reads next, None if not known). False when anything is
        not known: the caller then does what it does while records may still come."""
        delivered = self._delivered()
        for tp in assigned:
            hw = highwater(tp)
            if hw is None:
                return False
            nxt = delivered.get(tp)
            if nxt is None:
                nxt = position(tp)
            if nxt is None or nxt < hw:
                return False
        return True

    def backlog(self, assigned: Iterable[Any], highwater: Highwater) -> int:
        """Records known to be still to take: those waiting here, and those of the partitions of ``assigned``
        that delivered records in the current consumer generation up to their highwater (as in
        :meth:`release`). A lower bound: partitions that delivered nothing, or whose highwater is not known,
        count none."""
        n = sum(len(recs) for recs in self.held.values())
        delivered = self._delivered()
        for tp in assigned:
            nxt = delivered.get(tp)
            if nxt is None:
                continue
            hw = highwater(tp)
            if hw is not None and hw > nxt:
                n += hw - nxt
        return n

    def undelivered(self, assigned: Iterable[Any]) -> list[Any]:
        """The partitions of ``assigned`` that delivered no record in the current consumer generation: for
        these :meth:`fetched_all` asks where the consumer reads next."""
        delivered = self._delivered()
        return [tp for tp in assigned if tp not in delivered]

    def _delivered(self) -> dict[Any, int]:
        """Per partition, the offset after the last record added in the current consumer generation."""
        current = self.generation is not None and self._times_of == self.generation
        return self._next if current else {}

    def take(self) -> tuple[list[Any], dict[Any, int], int | None]:
        """The batch, its last offsets and generation; the waiting records stay for the next batch."""
        out = (self.batch, self.last, self.generation)
        self.batch, self.last = [], {}
        if not self.held:
            self.generation = None
        return out

    def reset(self) -> None:
        """Drop everything (a rebalance: the records are fetched again from the committed offsets)."""
        self.batch, self.last, self.held, self.generation, self._times_of = [], {}, {}, None, None
        self._forget_positions()

    def _forget_positions(self) -> None:
        self._time.clear()
        self._progress.clear()
        self._next.clear()
        self._waited.clear()


def _offset(record: Any) -> int:
    return int(record.offset)
