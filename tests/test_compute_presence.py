"""Rule 4's presence walk (``stream.core.compute.presence_periods``) against the walk it replaces: every item
built and sorted by ``(start, rank, end)``. Unit test of pure logic: no services."""

from __future__ import annotations

from array import array
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.core.compute import presence_periods
from stream.core.state import BRK, HOST_SHIFT, HW, PEND

#: Flag sets a fact can have: plain (with or without hardware input), a break, a presence-ending break.
FLAGS = (0, HW, BRK, BRK | PEND, BRK | HW)


def sorted_walk(
    ts: list[int], code: list[int], lo: int, spans: list[tuple[int, int]], presence: int,
    start: tuple[int, int] | None,
) -> tuple[list[tuple[int, int]], bool]:
    """The reference: one item per fact and span, sorted, walked one by one."""
    items = [(t, 2 if f & PEND else 1 if f & BRK else 0, t) for t, f in zip(ts[lo:], code[lo:], strict=True)]
    items += [(a, 0, b) for a, b in spans]
    items.sort()
    periods: list[tuple[int, int]] = []
    closed = False
    if start is None:
        if not items:
            return [], False
        p0, rank, p1 = items.pop(0)
        closed = rank == 2
    else:
        p0, p1 = start
    for a, rank, b in items:
        if closed or a - p1 > presence:
            periods.append((p0, p1))
            p0, p1 = a, b
        elif b > p1:
            p1 = b
        closed = rank == 2
    periods.append((p0, p1))
    return periods, closed


@st.composite
def walks(draw: Any) -> tuple[Any, ...]:
    presence = draw(st.sampled_from([1, 5, 30]))
    # Small times so that ties (several facts at one time, spans starting at a fact, facts exactly
    # ``presence`` apart) are common. A fact's code also holds its host: facts at one time are sorted by
    # code, not by rank.
    horizon = draw(st.sampled_from([30, 120, 400]))
    host = st.integers(0, 3).map(lambda h: h << HOST_SHIFT)
    flags = st.tuples(st.sampled_from(FLAGS), host).map(sum)
    facts = sorted(set(draw(st.lists(st.tuples(st.integers(0, horizon), flags), max_size=60))))
    ts = [t for t, _ in facts]
    code = [f for _, f in facts]
    lo = draw(st.integers(0, len(ts)))
    spans = sorted(
        (a, a + d)
        for a, d in draw(st.lists(st.tuples(st.integers(0, horizon + 10), st.integers(0, 40)), max_size=8))
    )
    start = draw(st.one_of(st.none(), st.tuples(st.integers(-40, 0), st.integers(0, 20))))
    return ts, code, lo, spans, presence, start


@settings(max_examples=2000, deadline=None)
@given(walks())
def test_presence_walk_equals_the_sorted_walk(case: tuple[Any, ...]) -> None:
    ts, code, lo, spans, presence, start = case
    bidx = [i for i in range(lo, len(ts)) if code[i] & BRK]
    for columns in ((ts, code), (array("q", ts), array("q", code))):
        got = presence_periods(columns[0], columns[1], lo, bidx, spans, presence, start)
        assert got == sorted_walk(ts, code, lo, spans, presence, start)


def test_two_presence_ending_breaks_at_one_time_and_a_plain_fact_with_them() -> None:
    # Sorted: the plain fact, then the two presence-ending ones; the second starts an empty period.
    ts = [10, 10, 10, 50]
    code = [BRK | PEND, 1 << HOST_SHIFT, BRK | PEND | 2 << HOST_SHIFT, 0]
    bidx = [0, 2]
    got = presence_periods(ts, code, 0, bidx, [], 5, None)
    assert got == sorted_walk(ts, code, 0, [], 5, None) == ([(10, 10), (10, 10), (50, 50)], False)


def test_a_long_run_of_plain_facts_splits_where_they_are_far_apart() -> None:
    ts = list(range(0, 100, 2)) + list(range(200, 260, 3)) + [265, 400]
    code = [HW] * len(ts)
    got = presence_periods(ts, code, 0, [], [(95, 150)], 10, None)
    expected = ([(0, 150), (200, 265), (400, 400)], False)  # 257 to 265: within 10
    assert got == sorted_walk(ts, code, 0, [(95, 150)], 10, None) == expected
