"""Rules 1 to 5 of ``shared/spec/sessions.md`` over the facts of one user from a cut ``C`` on.

``C`` must be a *hard cut*: the start of a presence period such that every earlier period ended more than
``max(G, P)`` before the earliest changed fact, so nothing before ``C`` can chain with or join anything at
or after it (see ``docs/sessions.md``). ``C = NO_TIME`` computes everything.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import NamedTuple

from stream.core.state import BRK, HOST_MASK, HOST_SHIFT, HW, LOCK, PEND, TZ_SHIFT, UserState

ACTIVE = 0
INACTIVE = 1


class Computed(NamedTuple):
    """One computed session; ``key = start * 2 + kind``."""

    key: int
    start: int
    end: int
    kind: int  # ACTIVE | INACTIVE
    locked: bool
    hosts: tuple[str, ...]
    tz: str
    closed: bool


class Result(NamedTuple):
    sessions: list[Computed]  # sorted by key
    comps: list[int]  # flat [start, end, ...] of the merged presence periods from C on


def _evidence(st: UserState, lo: int, c: int) -> list[tuple[int, int]]:
    ts, code = st.ts, st.code
    items = [(ts[i], ts[i]) for i in range(lo, len(ts)) if code[i] & HW]
    items.extend((p, p) for p in st.pts[bisect_left(st.pts, c) :])
    sc = st.sc
    for j in range(bisect_left(sc, 2 * c), len(sc)):
        if sc[j] & 1:
            a = sc[j] >> 1
            k = bisect_left(sc, 2 * (a + 1))
            items.append((a, sc[k] >> 1 if k < len(sc) else a))
    items.sort()
    return items


def active_sessions(items: list[tuple[int, int]], breaks: list[int], gap: int) -> list[tuple[int, int]]:
    """Rule 3: chain evidence items sorted by start."""
    out: list[tuple[int, int]] = []
    if not items:
        return out
    s, e = items[0]
    nb = len(breaks)
    for a, b in items[1:]:
        if a <= e:
            if b > e:
                e = b
            continue
        if a - e < gap:
            k = bisect_left(breaks, e)
            if k == nb or breaks[k] >= a:
                if b > e:
                    e = b
                continue
        out.append((s, e))
        s, e = a, b
    out.append((s, e))
    return out


def compute(st: UserState, c: int, gap: int, presence: int, all_closed: bool) -> Result:
    """Sessions whose presence period starts at or after ``c``, with their closure status."""
    ts, code = st.ts, st.code
    lo = bisect_left(ts, c)
    n = len(ts)
    breaks = [ts[i] for i in range(lo, n) if code[i] & BRK]
    locks = [ts[i] for i in range(lo, n) if code[i] & LOCK]
    actives = active_sessions(_evidence(st, lo, c), breaks, gap)

    # Rule 4: presence items (start, rank, end); rank 1 = break, 2 = presence-ending break (last at a time).
    pitems: list[tuple[int, int, int]] = []
    for i in range(lo, n):
        f = code[i]
        t = ts[i]
        pitems.append((t, 2 if f & PEND else 1 if f & BRK else 0, t))
    pitems.extend((s, 0, e) for s, e in actives)
    sc = st.sc
    for j in range(bisect_left(sc, 2 * c), len(sc)):
        if not sc[j] & 1:
            a = sc[j] >> 1
            k = bisect_left(sc, 2 * (a + 1))
            pitems.append((a, 0, sc[k] >> 1 if k < len(sc) else a))
    pitems.sort()
    periods: list[tuple[int, int]] = []
    last_pe = False
    if pitems:
        p0, _, p1 = pitems[0]
        closed = pitems[0][1] == 2
        for a, rank, b in pitems[1:]:
            if closed or a - p1 > presence:
                periods.append((p0, p1))
                p0, p1 = a, b
            elif b > p1:
                p1 = b
            closed = rank == 2
        periods.append((p0, p1))
        last_pe = closed
    # Merge periods that overlap (only possible when a StateChange interval spans a presence-ending break).
    periods.sort()
    comps: list[tuple[int, int]] = []
    for p0, p1 in periods:
        if comps and p0 < comps[-1][1]:
            if p1 > comps[-1][1]:
                comps[-1] = (comps[-1][0], p1)
        else:
            comps.append((p0, p1))

    latest, latest_eb = st.latest, st.latest_eb
    sessions: list[Computed] = []
    for s, e in actives:
        closed_ = all_closed or latest_eb >= e + gap or latest >= e + gap + presence
        if not closed_:
            k = bisect_left(breaks, e)
            closed_ = k < len(breaks)
        sessions.append(_make(st, ACTIVE, s, e, False, closed_))
    astarts = [s for s, _ in actives]
    nc = len(comps)
    for ci, (c0, c1) in enumerate(comps):
        over = all_closed or ci < nc - 1 or last_pe
        cursor = c0
        j = bisect_left(astarts, c0)
        if j > 0 and actives[j - 1][1] >= c0:
            j -= 1
        while j < len(actives) and actives[j][0] <= c1:
            s, e = actives[j]
            if s > cursor:
                sessions.append(_make(st, INACTIVE, cursor, s, _locked(locks, cursor, s), True))
            if e > cursor:
                cursor = e
            j += 1
        if c1 > cursor:
            sessions.append(_make(st, INACTIVE, cursor, c1, _locked(locks, cursor, c1), over))
    sessions.sort()
    flat: list[int] = []
    for c0, c1 in comps:
        flat.append(c0)
        flat.append(c1)
    return Result(sessions, flat)


def _locked(locks: list[int], start: int, end: int) -> bool:
    k = bisect_left(locks, start)
    return k < len(locks) and locks[k] < end


def _make(st: UserState, kind: int, start: int, end: int, locked: bool, closed: bool) -> Computed:
    ts, code = st.ts, st.code
    i = bisect_left(ts, start)
    j = bisect_right(ts, end)
    hidx = {(code[k] >> HOST_SHIFT) & HOST_MASK for k in range(i, j)}
    hosts = tuple(sorted(st.hosts[h] for h in hidx))
    tz = "UTC"
    if j > 0:
        t = ts[j - 1]
        k = j - 1
        best = st.tzs[code[k] >> TZ_SHIFT]
        k -= 1
        while k >= 0 and ts[k] == t:
            cand = st.tzs[code[k] >> TZ_SHIFT]
            if cand > best:
                best = cand
            k -= 1
        tz = best
    return Computed(start * 2 + kind, start, end, kind, locked, hosts, tz, closed)
