"""``stream.gather.BatchGather``: what the worker's fetch loop puts in each batch.

Every record fetched goes into exactly one batch, in offset order per partition, at most ``batch_size`` per
batch; with alignment (``align_wait_s``), a raw topic's records wait while the same partition of another raw
topic, still being fetched, has delivered only earlier records, so that a backlog of three topics of very
different volume is handled in time order (``docs/stream-performance.md``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from stream.gather import ALIGN_MIN_LAG, FUTURE_SLACK_MS, BatchGather

NOW_MS = 1_800_000_000_000
BEHIND = ALIGN_MIN_LAG  #: a lag that makes a partition hold its siblings back


class TP(NamedTuple):
    topic: str
    partition: int


class Rec(NamedTuple):
    offset: int
    timestamp: int | None


def lagging(g: BatchGather, lags: Mapping[TP, int | None]) -> Callable[[Any], int | None]:
    """The highwater that leaves ``lags[tp]`` records of ``tp`` to fetch beyond those added to ``g``."""

    def highwater(tp: Any) -> int | None:
        n = lags.get(tp)
        return None if n is None else g._next.get(tp, 0) + n

    return highwater


def recs(lo: int, hi: int, ts: int | None = None, step: int = 0) -> list[Rec]:
    return [Rec(o, None if ts is None else ts + (o - lo) * step) for o in range(lo, hi)]


def offsets(batch: list[Rec]) -> list[int]:
    return [r.offset for r in batch]


A, B, C = TP("ui", 0), TP("hid", 0), TP("presence", 0)


def test_without_alignment_a_batch_holds_at_most_its_limit_and_the_rest_starts_the_next_in_order() -> None:
    p0, p1 = TP("t", 0), TP("t", 1)
    g = BatchGather(limit=5)
    g.add(p0, recs(0, 3), 7, 0.0, NOW_MS)
    g.add(p1, recs(10, 14), 7, 0.0, NOW_MS)
    g.release([p0, p1], lambda tp: None, 0.0, NOW_MS)
    assert g.full and g.holding() == {p1}  # 2 of p1's fit, 2 wait; p1 is not fetched meanwhile
    batch, last, generation = g.take()
    assert offsets(batch) == [0, 1, 2, 10, 11]
    assert last == {p0: 2, p1: 11} and generation == 7
    assert g.generation == 7  # the waiting records were fetched in it
    g.add(p0, recs(3, 5), 7, 0.0, NOW_MS)
    g.release([p0, p1], lambda tp: None, 0.0, NOW_MS)
    batch, last, _ = g.take()
    assert offsets(batch) == [12, 13, 3, 4]  # the earlier fetch's records first
    assert last == {p1: 13, p0: 4}
    assert g.take()[0] == [] and g.generation is None
    g.add(p0, recs(5, 20), 8, 0.0, NOW_MS)
    g.reset()  # a rebalance: everything is fetched again from the committed offsets
    assert (g.batch, g.held, g.last, g.generation) == ([], {}, {}, None)


def test_records_ahead_of_a_sibling_still_being_fetched_wait_for_it() -> None:
    g = BatchGather(limit=1000, align_wait_s=1.0)
    lag = {A: 0, B: BEHIND, C: 0}
    g.add(A, recs(0, 10, ts=1000, step=100), 1, 0.0, NOW_MS)  # 1000 .. 1900: the whole small topic
    g.add(B, recs(0, 5, ts=1000, step=100), 1, 0.0, NOW_MS)  # 1000 .. 1400, and more to fetch
    g.release([A, B, C], lagging(g, lag), 0.1, NOW_MS)
    assert offsets(g.batch) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]  # A up to 1400, and B
    assert g.holding() == {A}
    g.take()
    g.add(B, recs(5, 8, ts=1500, step=100), 1, 0.2, NOW_MS)  # up to 1700, still more to fetch
    g.release([A, B, C], lagging(g, lag), 0.2, NOW_MS)
    assert [(r.timestamp) for r in g.batch] == [1500, 1600, 1700, 1500, 1600, 1700]
    assert g.aligned == 3  # A's, which waited; not B's
    g.take()
    lag[B] = 0  # B caught up: it holds nobody back
    g.release([A, B, C], lagging(g, lag), 0.3, NOW_MS)
    batch, last, _ = g.take()
    assert [r.timestamp for r in batch] == [1800, 1900] and last == {A: 9}
    assert g.aligned == 5
    assert g.holding() == set() and g.generation is None


def test_other_partition_numbers_and_caught_up_or_idle_siblings_hold_nothing_back() -> None:
    other = TP("hid", 1)
    g = BatchGather(limit=1000, align_wait_s=1.0)
    g.add(A, recs(0, 4, ts=5000, step=10), 1, 0.0, NOW_MS)
    g.add(other, recs(0, 2, ts=10, step=10), 1, 0.0, NOW_MS)
    g.release([A, B, other], lagging(g, {A: 0, B: 0, other: BEHIND}), 0.0, NOW_MS)
    assert len(g.batch) == 6  # ``other`` is behind, but it is partition 1
    g.take()
    g.add(B, recs(0, 2, ts=10, step=10), 1, 0.0, NOW_MS)
    g.add(A, recs(4, 6, ts=6000, step=10), 1, 0.0, NOW_MS)
    g.release([A, B], lagging(g, {A: 0, B: BEHIND - 1}), 0.1, NOW_MS)
    assert len(g.batch) == 4  # B is nearly caught up (a live worker): nothing waits
    g.take()
    g.add(B, recs(2, 4, ts=30, step=10), 1, 0.2, NOW_MS)
    g.add(A, recs(6, 8, ts=7000, step=10), 1, 0.2, NOW_MS)
    g.release([A, B], lagging(g, {A: 0, B: BEHIND}), 0.3, NOW_MS)
    assert offsets(g.batch) == [2, 3] and g.holding() == {A}  # B is behind: A waits for it...
    g.release([A, B], lagging(g, {A: 0, B: BEHIND}), 1.3, NOW_MS)
    assert offsets(g.batch) == [2, 3, 6, 7]  # ...at most align_wait_s of gathering time without B's records
    g.take()
    g.add(A, recs(8, 10, ts=8000, step=10), 1, 1.4, NOW_MS)
    g.release([A, C], lagging(g, {A: 0, C: None}), 1.4, NOW_MS)
    assert offsets(g.batch) == [8, 9]  # C's lag is not known yet (no fetch answered): nothing waits


def test_records_without_a_usable_timestamp_are_never_held() -> None:
    g = BatchGather(limit=1000, align_wait_s=1.0)
    future = NOW_MS + FUTURE_SLACK_MS + 1
    g.add(B, [Rec(0, 1000)], 1, 0.0, NOW_MS)
    odd = [Rec(0, None), Rec(1, -1), Rec(2, future), Rec(3, 900), Rec(4, 5000), Rec(5, 950)]
    g.add(A, odd, 1, 0.0, NOW_MS)
    g.release([A, B], lagging(g, {A: 0, B: BEHIND}), 0.0, NOW_MS)
    assert g.batch == [Rec(0, 1000), Rec(0, None), Rec(1, -1), Rec(2, future), Rec(3, 900)]
    assert g.held == {A: [Rec(4, 5000), Rec(5, 950)]}  # offset order is kept: 950 waits behind 5000


def test_a_stamp_from_a_wrong_clock_does_not_move_its_partitions_time() -> None:
    g = BatchGather(limit=1000, align_wait_s=1.0)
    g.add(A, [Rec(0, 1000), Rec(1, NOW_MS + FUTURE_SLACK_MS + 1)], 1, 0.0, NOW_MS)
    g.add(B, [Rec(0, 2000), Rec(1, 3000)], 1, 0.0, NOW_MS)
    g.release([A, B], lagging(g, {A: BEHIND, B: BEHIND}), 0.0, NOW_MS)
    assert offsets(g.batch) == [0, 1] and g.holding() == {B}  # A is at 1000, not in the future


def test_a_new_assignment_forgets_the_partitions_times() -> None:
    g = BatchGather(limit=1000, align_wait_s=1.0)
    g.add(B, recs(0, 2, ts=100, step=1), 1, 0.0, NOW_MS)
    g.release([A, B], lagging(g, {A: 0, B: BEHIND}), 0.0, NOW_MS)
    g.take()
    g.add(A, recs(0, 2, ts=9000, step=1), 1, 0.1, NOW_MS)
    g.release([A, B], lagging(g, {A: 0, B: BEHIND}), 0.1, NOW_MS)
    assert g.batch == []  # B, behind, is at 100
    g.reset()  # a rebalance
    g.add(A, recs(0, 2, ts=9000, step=1), 2, 0.2, NOW_MS)
    g.release([A, B], lagging(g, {A: 0, B: BEHIND}), 0.2, NOW_MS)
    assert offsets(g.batch) == [0, 1] and g.generation == 2  # B's 100 was from another assignment


class TRec(NamedTuple):
    tp: TP
    offset: int
    timestamp: int


def _backlog(seed: int, align_wait_s: float, limit: int) -> tuple[list[list[TRec]], int]:
    """Three co-partitioned topics x 2 partitions of very different volume, fetched a bounded chunk per
    partition per poll, as aiokafka does; timestamps rise with the offset. The batches, as handled, and
    how many records waited for alignment."""
    rnd = random.Random(seed)
    tps = [TP(t, p) for t in ("ui", "hid", "presence") for p in (0, 1)]
    volume = {"ui": 40 * BEHIND // 100, "hid": 4 * BEHIND, "presence": 9 * BEHIND}
    logs = {tp: sorted(rnd.randrange(0, 100_000) for _ in range(volume[tp.topic])) for tp in tps}
    pos = dict.fromkeys(tps, 0)
    g = BatchGather(limit=limit, align_wait_s=align_wait_s)
    batches: list[list[TRec]] = []
    now = 0.0
    while any(pos[tp] < len(logs[tp]) for tp in tps) or g.held:
        now += 0.01
        holding = g.holding()
        for tp in tps:
            if tp not in holding and pos[tp] < len(logs[tp]):
                lo = pos[tp]
                pos[tp] = hi = min(len(logs[tp]), lo + rnd.randrange(1, BEHIND))
                g.add(tp, [TRec(tp, o, logs[tp][o]) for o in range(lo, hi)], 1, now, NOW_MS)
        g.release(tps, lambda tp: len(logs[tp]), now, NOW_MS)  # offsets 0 .. len - 1
        if rnd.random() < 0.3 or g.full:
            batches.append(g.take()[0])
    batches.append(g.take()[0])
    return [b for b in batches if b], g.aligned


def _went_back(batches: list[list[TRec]]) -> int:
    """Records earlier than a record of the same partition number in an earlier batch."""
    latest: dict[int, int] = {}
    n = 0
    for batch in batches:
        n += sum(1 for r in batch if r.timestamp < latest.get(r.tp.partition, -1))
        for r in batch:
            latest[r.tp.partition] = max(latest.get(r.tp.partition, -1), r.timestamp)
    return n


def test_a_backlog_is_handled_whole_in_offset_order_and_in_time_order_across_the_topics() -> None:
    for seed in range(6):
        aligned, waited = _backlog(seed, 1.0, limit=100 * BEHIND)
        plain, none = _backlog(seed, 0.0, limit=100 * BEHIND)
        assert waited > 0 and none == 0
        small = [_backlog(seed, align, limit=370)[0] for align in (1.0, 0.0)]
        for batches in (aligned, plain, *small):
            got = [r for b in batches for r in b]
            assert len(got) == 2 * (13.4 * BEHIND) == len({(r.tp, r.offset) for r in got})  # each once
            for tp in {r.tp for r in got}:
                mine = [r.offset for r in got if r.tp == tp]
                assert mine == list(range(len(mine)))
        # aligned, only the last records of a partition that is no longer behind (fewer than ALIGN_MIN_LAG to
        # fetch) can come after later records of its siblings: at most that many per topic and partition
        assert _went_back(aligned) <= 2 * 2 * BEHIND
        assert _went_back(plain) > 5 * _went_back(aligned)


def test_everything_is_fetched_only_when_every_partitions_highwater_is_known_and_reached() -> None:
    """What lets the fetch loop handle a backlog's last records at once (and commit them) instead of
    waiting for the commit interval: never said while anything may still be fetched or is not known."""
    g = BatchGather(limit=100)
    positions: dict[Any, int | None] = {C: 40}  # C delivered nothing in this generation: read from 40
    g.add(A, recs(0, 10), 3, 0.0, NOW_MS)
    g.add(B, recs(5, 8), 3, 0.0, NOW_MS)
    hw: dict[Any, int | None] = {A: 10, B: 8, C: 40}
    assert g.undelivered([A, B, C]) == [C]
    assert g.fetched_all([A, B, C], hw.get, positions.get)
    assert not g.fetched_all([A, B, C], {**hw, A: 11}.get, positions.get)  # one record of A still to fetch
    assert not g.fetched_all([A, B, C], {**hw, C: 41}.get, positions.get)  # C has one from 40
    assert not g.fetched_all([A, B, C], {**hw, B: None}.get, positions.get)  # B's highwater not known yet
    assert not g.fetched_all([A, B, C], hw.get, {}.get)  # where C is read from is not known
    g.release([A, B, C], hw.get, 0.0, NOW_MS)
    g.take()
    g.add(A, recs(10, 12), 4, 0.0, NOW_MS)  # a new generation: the offsets of the old one do not count
    assert g.undelivered([A, B, C]) == [B, C]
    assert not g.fetched_all([A, B, C], {**hw, A: 12}.get, positions.get)  # B's position is not known
    assert g.fetched_all([A, B, C], {**hw, A: 12}.get, {**positions, B: 8}.get)


def test_the_backlog_counts_the_records_waiting_and_those_still_to_fetch_that_are_known() -> None:
    """What tells the fetch loop that another full batch is still to come (then it commits at the catch-up
    interval): the records held here plus, for each partition that delivered in this generation, its
    highwater less the offset after its last record; nothing is guessed for the others."""
    g = BatchGather(limit=5)
    g.add(A, recs(0, 10), 3, 0.0, NOW_MS)
    g.add(B, recs(100, 103), 3, 0.0, NOW_MS)
    hw: dict[Any, int | None] = {A: 50, B: None, C: 900}  # B's highwater not known; C delivered nothing
    assert g.backlog([A, B, C], hw.get) == 13 + 40  # 13 held, 40 of A to fetch
    g.release([A, B, C], hw.get, 0.0, NOW_MS)  # 5 into the batch
    assert g.backlog([A, B, C], hw.get) == 8 + 40
    g.take()
    assert g.backlog([A, B, C], {**hw, B: 110}.get) == 8 + 40 + 7
    g.release([A, B, C], hw.get, 0.0, NOW_MS)
    g.take()
    g.release([A, B, C], hw.get, 0.0, NOW_MS)
    g.take()
    assert g.backlog([A, B, C], {A: 10, B: 103, C: 900}.get) == 0  # all taken, all fetched
    g.add(A, recs(10, 12), 4, 0.0, NOW_MS)  # a new generation: the old one's offsets do not count
    assert g.backlog([A, B, C], {A: 30, B: 110, C: 900}.get) == 2 + 18
