"""Recurring tasks: the most frequent sequences of application/window steps. Pure; see docs/mining.md.

Method (closed contiguous n-grams, counted without overlap):

1. Each trace (:mod:`reports.export`) is cut into **segments** wherever two consecutive UI events are more
   than ``gap_s`` apart (G, the sessions' idle gap): a pause that long ends a piece of work.
2. Within a segment, consecutive events of the same activity (:func:`reports.flow.activity_of`) form one
   **step**; a step starts at its first event and lasts until the next step starts (the last step until the
   segment's last event).
3. Every contiguous run of 2..8 steps is a candidate sequence. Occurrences are counted left to right
   without overlap inside a segment (``A B A B A`` holds ``A B`` twice), so ``count`` x ``median_s`` never
   counts the same minute twice. Longer sequences are only counted when both their prefix and suffix
   of one step less are frequent (Apriori pruning: a sequence is never more frequent than its parts).
4. A sequence seen at least ``min_count`` times is kept unless a sequence one step longer that contains it
   was seen as often (then it is only ever done as part of that longer task: sub-sequence suppression).
5. Rows are ranked by total time (``count`` x duration summed), the figure that says what is worth
   automating; ``users`` is the number of distinct users who did it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from reports.export import Trace
from reports.flow import activity_of

MIN_LEN = 2
MAX_LEN = 8
SORTS = ("total", "count")


@dataclass(slots=True)
class Segment:
    """One uninterrupted piece of a trace: step ids, the start of each step (epoch seconds) and the end."""

    user_key: str
    steps: list[int]
    starts: list[float]
    end: float


@dataclass(slots=True)
class TaskRow:
    """One recurring sequence: ``count`` non-overlapping occurrences by ``users`` distinct users, median and
    total duration in seconds (from its first step's start to the start of the step after it)."""

    steps: list[str]
    count: int
    users: int
    median_s: float
    total_s: float


@dataclass(slots=True)
class _Stats:
    count: int = 0
    users: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)


class StepTable:
    """Interns activity names as small integers."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def id(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i


def segments_of(trace: Trace, gap_s: float, level: str, table: StepTable) -> list[Segment]:
    """``trace`` cut at gaps longer than ``gap_s``, events of the same activity merged into steps."""
    activity = activity_of(level)
    out: list[Segment] = []
    cur: Segment | None = None
    prev_t = 0.0
    for e in trace.events:
        t = e.ts.timestamp()
        sid = table.id(activity(e))
        if cur is None or t - prev_t > gap_s:
            if cur is not None:
                out.append(cur)
            cur = Segment(trace.user_key, [sid], [t], t)
        elif sid != cur.steps[-1]:
            cur.steps.append(sid)
            cur.starts.append(t)
        cur.end = t
        prev_t = t
    if cur is not None:
        out.append(cur)
    return out


def mine(
    segments: list[Segment],
    names: list[str],
    min_count: int = 2,
    min_len: int = MIN_LEN,
    max_len: int = MAX_LEN,
    top: int = 20,
    sort: str = "total",
) -> list[TaskRow]:
    """The ``top`` recurring sequences of ``min_len``..``max_len`` steps (see the module docstring)."""
    if not 2 <= min_len <= max_len:
        raise ValueError("need 2 <= min_len <= max_len")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    frequent: dict[int, dict[tuple[int, ...], _Stats]] = {}
    prev: dict[tuple[int, ...], _Stats] | None = None
    for n in range(2, max_len + 1):
        found: dict[tuple[int, ...], _Stats] = {}
        for seg in segments:
            steps = seg.steps
            k = len(steps)
            if k < n:
                continue
            next_free: dict[tuple[int, ...], int] = {}
            for i in range(k - n + 1):
                g = tuple(steps[i : i + n])
                if prev is not None and (g[:-1] not in prev or g[1:] not in prev):
                    continue
                if next_free.get(g, 0) > i:
                    continue  # overlaps the previous occurrence in this segment
                next_free[g] = i + n
                st = found.get(g)
                if st is None:
                    st = found[g] = _Stats()
                st.count += 1
                st.users.add(seg.user_key)
                stop = seg.starts[i + n] if i + n < k else seg.end
                st.durations.append(stop - seg.starts[i])
        kept = {g: s for g, s in found.items() if s.count >= min_count}
        if not kept:
            break
        frequent[n] = kept
        prev = kept
    rows: list[TaskRow] = []
    for n, grams in frequent.items():
        if n < min_len:
            continue
        longer = frequent.get(n + 1, {})
        covered: dict[tuple[int, ...], int] = {}
        for g, s in longer.items():
            for part in (g[:-1], g[1:]):
                covered[part] = max(covered.get(part, 0), s.count)
        for g, s in grams.items():
            if covered.get(g, 0) >= s.count:
                continue
            rows.append(
                TaskRow(
                    steps=[names[i] for i in g],
                    count=s.count,
                    users=len(s.users),
                    median_s=round(statistics.median(s.durations), 3),
                    total_s=round(sum(s.durations), 3),
                )
            )
    if sort == "total":
        rows.sort(key=lambda r: (-r.total_s, -r.count, r.steps))
    else:
        rows.sort(key=lambda r: (-r.count, -r.total_s, r.steps))
    return rows[:top]


class TaskMiner:
    """Accumulates traces (as segments of step ids: a few bytes per step) and mines them on demand."""

    def __init__(self, gap_s: float = 300.0, level: str = "app") -> None:
        if gap_s <= 0:
            raise ValueError("the idle gap must be positive")
        activity_of(level)  # validates the level
        self.gap_s, self.level = gap_s, level
        self.table = StepTable()
        self.segments: list[Segment] = []

    def add(self, t: Trace) -> None:
        self.segments.extend(
            s for s in segments_of(t, self.gap_s, self.level, self.table) if len(s.steps) >= 2
        )

    def result(
        self,
        min_count: int = 2,
        min_len: int = MIN_LEN,
        max_len: int = MAX_LEN,
        top: int = 20,
        sort: str = "total",
    ) -> list[TaskRow]:
        return mine(
            self.segments,
            self.table.names,
            min_count=min_count,
            min_len=min_len,
            max_len=max_len,
            top=top,
            sort=sort,
        )


def recurring_tasks(
    traces: Iterable[Trace],
    gap_s: float = 300.0,
    level: str = "app",
    min_count: int = 2,
    min_len: int = MIN_LEN,
    max_len: int = MAX_LEN,
    top: int = 20,
    sort: str = "total",
) -> list[TaskRow]:
    """The recurring tasks of ``traces``."""
    miner = TaskMiner(gap_s, level)
    for t in traces:
        miner.add(t)
    return miner.result(min_count=min_count, min_len=min_len, max_len=max_len, top=top, sort=sort)
