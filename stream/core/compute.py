"""Rules 1 to 5 of ``shared/spec/sessions.md`` over the facts of one user from a cut on.

Two ways to start (see ``docs/sessions.md``):
- a *hard cut* ``c``: the start of a presence period that every earlier period ends more than ``max(G, P)``
  before the earliest changed fact, so nothing before ``c`` can chain with or join anything after it
  (``c = NO_TIME`` computes everything);
- a *checkpoint*: the exact state of both walks at a position ``x`` saved by an earlier computation
  (:class:`Checkpoint`), valid while no fact before ``x`` changes and the user has no legacy
  ``StateChange`` report in that presence period.

Session details (hosts, lock reason, time zone) are computed only when needed (:func:`details`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from stream.core.state import BRK, HOST_MASK, HOST_SHIFT, HW, LOCK, NO_TIME, PEND, TZ_SHIFT, UserState

ACTIVE = 0
INACTIVE = 1


class Checkpoint(NamedTuple):
    """Both walks just before position ``x``: latest chain ``[s, e]`` (``e``: its latest evidence before
    ``x``; ``NO_TIME`` when there is none), ``bb``: first break in ``[e, x)`` (``NO_TIME``: none), current
    presence period start ``p0`` and its end ``p1`` over the items before ``x`` (the open chain aside)."""

    x: int
    s: int
    e: int
    bb: int
    p0: int
    p1: int

    @property
    def region_start(self) -> int:
        return self.s if self.s >= self.p0 else self.p0


class Computed(NamedTuple):
    """One computed session; ``key = start * 2 + kind``."""

    key: int
    start: int
    end: int
    kind: int  # ACTIVE | INACTIVE
    closed: bool


class Result(NamedTuple):
    sessions: list[Computed]  # sorted by key, all with key >= 2 * region_start
    region_start: int
    comps: list[int]  # flat [start, end, ...] of the merged presence periods from the region on
    checkpoints: list[int]  # flat Checkpoint fields


def span_end(sc: Sequence[int], j: int, gap: int, cap: int) -> int:
    """The *legacy span end* (rule 1.3) of the report ``sc[j]`` (``ts * 2 + working``): the next report's
    time ``b`` (the earliest strictly later), capped at ``a + cap`` (L), or at ``a + gap`` (G) when every
    report at ``b`` repeats this one's state (the client restarted); ``a`` when no report follows."""
    key = sc[j]
    a = key >> 1
    k = bisect_left(sc, 2 * (a + 1))
    n = len(sc)
    if k == n:
        return a
    nxt = sc[k]
    b = nxt >> 1
    repeated = (nxt & 1) == (key & 1) and not (k + 1 < n and sc[k + 1] >> 1 == b)
    end = a + (gap if repeated else cap)
    return b if b < end else end


def compute(
    st: UserState,
    c: int,
    gap: int,
    presence: int,
    all_closed: bool,
    carry: Checkpoint | None = None,
    targets: tuple[int, ...] = (),
    cap: int = 14_400_000,
) -> Result:
    """Sessions from the cut ``c`` (or the checkpoint ``carry``, then ``c = carry.x``) on, with their
    closure status, and checkpoints at the fact times at or before each of ``targets``; ``cap`` is L, the
    legacy span cap (ms)."""
    ts, code = st.ts, st.code
    lo = bisect_left(ts, c)
    n = len(ts)
    breaks = [ts[i] for i in range(lo, n) if code[i] & BRK]
    nb = len(breaks)

    # Rule 1: evidence items.
    pts = st.pts
    points = [ts[i] for i in range(lo, n) if code[i] & HW]
    k0 = bisect_left(pts, c)
    if k0 < len(pts):
        points.extend(pts[k0:])
        points.sort()
    items = [(p, p) for p in points]
    sc = st.sc
    has_sc = False
    for j in range(bisect_left(sc, 2 * c), len(sc)):
        has_sc = True
        if sc[j] & 1:
            items.append((sc[j] >> 1, span_end(sc, j, gap, cap)))
    if has_sc:
        items.sort()

    # Rule 3: chain them. A carried chain [s, e] may only be blocked by carry.bb before c.
    actives: list[tuple[int, int]] = []
    if carry is not None and carry.e != NO_TIME:
        cs, ce = carry.s, carry.e
        have = True
    else:
        cs = ce = NO_TIME
        have = False
    first_break_before_c = carry.bb if carry is not None else NO_TIME
    for a, b in items:
        if have:
            if a <= ce:
                if b > ce:
                    ce = b
                continue
            if a - ce < gap:
                if ce < c:
                    blocked = first_break_before_c != NO_TIME or (nb > 0 and breaks[0] < a)
                else:
                    k = bisect_left(breaks, ce)
                    blocked = k < nb and breaks[k] < a
                if not blocked:
                    if b > ce:
                        ce = b
                    continue
            actives.append((cs, ce))
        cs, ce = a, b
        have = True
    if have:
        actives.append((cs, ce))

    # Rule 4: presence items (start, rank, end); rank 1 = break, 2 = presence-ending (last at one time).
    pitems: list[tuple[int, int, int]] = []
    for i in range(lo, n):
        f = code[i]
        t = ts[i]
        pitems.append((t, 2 if f & PEND else 1 if f & BRK else 0, t))
    first_active = 0
    if carry is not None:
        region = carry.region_start
        p0, p1 = carry.p0, carry.p1
        if actives and actives[0][0] < c:  # the carried chain
            first_active = 1
            if actives[0][1] > p1 and actives[0][0] >= p0:
                p1 = actives[0][1]
    else:
        region = c
    pitems.extend((s, 0, e) for s, e in actives[first_active:])
    for j in range(bisect_left(sc, 2 * c), len(sc)):
        if not sc[j] & 1:
            pitems.append((sc[j] >> 1, 0, span_end(sc, j, gap, cap)))
    pitems.sort()
    periods: list[tuple[int, int]] = []
    last_pe = False
    started = carry is not None
    closed = False
    if not started and pitems:
        p0, _, p1 = pitems[0]
        closed = pitems[0][1] == 2
        pitems = pitems[1:]
        started = True
    if started:
        for a, rank, b in pitems:
            if closed or a - p1 > presence:
                periods.append((p0, p1))
                p0, p1 = a, b
            elif b > p1:
                p1 = b
            closed = rank == 2
        periods.append((p0, p1))
        last_pe = closed
    # Merge periods that overlap (only possible when a StateChange interval spans a presence-ending break).
    comps: list[tuple[int, int]] = []
    if has_sc:
        periods.sort()
    for q0, q1 in periods:
        if comps and q0 < comps[-1][1]:
            if q1 > comps[-1][1]:
                comps[-1] = (comps[-1][0], q1)
        else:
            comps.append((q0, q1))

    # Closure (docs/sessions.md) and rule 5.
    latest, latest_eb = st.latest, st.latest_eb
    sessions: list[Computed] = []
    for s, e in actives:
        if s < region:
            continue
        closed_ = all_closed or latest_eb >= e + gap or latest >= e + gap + presence
        if not closed_:
            if e < c:
                closed_ = first_break_before_c != NO_TIME or nb > 0
            else:
                closed_ = bisect_left(breaks, e) < nb
        sessions.append(Computed(2 * s, s, e, ACTIVE, closed_))
    astarts = [s for s, _ in actives]
    nc = len(comps)
    na = len(actives)
    for ci, (c0, c1) in enumerate(comps):
        over = all_closed or ci < nc - 1 or last_pe
        cursor = c0 if c0 > region else region
        j = bisect_left(astarts, c0)
        if j > 0 and actives[j - 1][1] >= c0:
            j -= 1
        while j < na and actives[j][0] <= c1:
            s, e = actives[j]
            if s > cursor:
                sessions.append(Computed(2 * cursor + 1, cursor, s, INACTIVE, True))
            if e > cursor:
                cursor = e
            j += 1
        if c1 > cursor:
            sessions.append(Computed(2 * cursor + 1, cursor, c1, INACTIVE, over))
    sessions.sort()
    flat: list[int] = []
    for q0, q1 in comps:
        flat.append(q0)
        flat.append(q1)

    # Checkpoints for the next call. After a hard cut, the latest evidence before it (within G) may still
    # chain with a future fact: checkpoints before any chain of the region must be G past it.
    e_before = NO_TIME
    if carry is None:
        i = lo - 1
        while i >= 0 and ts[i] >= c - gap:
            if code[i] & HW:
                e_before = ts[i]
                break
            i -= 1
        kq = k0 - 1
        if kq >= 0 and pts[kq] >= c - gap and pts[kq] > e_before:
            e_before = pts[kq]
    cks: list[int] = []
    if not has_sc and comps:
        seen_x: set[int] = set()
        for target in targets:
            k = bisect_right(ts, target) - 1
            if k < lo:
                continue
            x = ts[k]
            if x in seen_x or x <= c:
                continue
            seen_x.add(x)
            ck = _checkpoint(x, ts, points, actives, breaks, periods, carry, c, gap, e_before)
            if ck is not None:
                cks.extend(ck)
    return Result(sessions, region, flat, cks)


def _checkpoint(
    x: int,
    ts: Sequence[int],
    points: list[int],
    actives: list[tuple[int, int]],
    breaks: list[int],
    periods: list[tuple[int, int]],
    carry: Checkpoint | None,
    c: int,
    gap: int,
    e_before: int,
) -> Checkpoint | None:
    # The period containing x, which must have started before x.
    k = bisect_left(periods, (x, NO_TIME)) - 1
    if k < 0:
        return None
    p0, p1 = periods[k]
    if not p0 < x <= p1:
        return None
    # The latest chain with start < x, and its latest evidence before x.
    j = bisect_left(actives, (x, NO_TIME)) - 1
    kp = bisect_left(points, x) - 1
    if j >= 0:
        s = actives[j][0]
        e = points[kp] if kp >= 0 and points[kp] >= s else actives[j][1]
        if s < c and carry is not None and kp < 0:
            e = carry.e
    elif carry is not None and carry.e != NO_TIME:
        s, e = carry.s, carry.e
    else:
        if e_before != NO_TIME and x - e_before < gap:
            return None  # a fact in [x, e_before + G) could still chain with evidence before the cut
        s = e = NO_TIME
    if e == NO_TIME:
        bb = NO_TIME
    elif e >= c:
        kb = bisect_left(breaks, e)
        bb = breaks[kb] if kb < len(breaks) and breaks[kb] < x else NO_TIME
    else:
        bb = (
            carry.bb
            if carry is not None and carry.bb != NO_TIME
            else (breaks[0] if breaks and breaks[0] < x else NO_TIME)
        )
    if not (e == NO_TIME or s >= p0 or x - e >= gap or bb != NO_TIME):
        return None
    ke = bisect_left(ts, x) - 1
    last_event = ts[ke] if ke >= 0 else NO_TIME
    return Checkpoint(x, s, e, bb, p0, max(last_event, e, p0))


def details(st: UserState, kind: int, start: int, end: int) -> tuple[bool, tuple[str, ...], str]:
    """``(locked, hosts, tz)`` of a session: a Lock in ``[start, end)`` (inactive only), the hosts of the
    events in ``[start, end]``, the time zone of the latest event at or before ``end``."""
    ts, code = st.ts, st.code
    i = bisect_left(ts, start)
    j = bisect_right(ts, end)
    locked = False
    if kind == INACTIVE:
        for k in range(i, j):
            if code[k] & LOCK and ts[k] < end:
                locked = True
                break
    if i == j:
        hosts: tuple[str, ...] = ()
    elif len(st.hosts) == 1:  # one host (most users): every fact has it, no need to read them
        hosts = (st.hosts[0],)
    else:
        hosts = tuple(sorted({st.hosts[(code[k] >> HOST_SHIFT) & HOST_MASK] for k in range(i, j)}))
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
    return locked, hosts, tz
