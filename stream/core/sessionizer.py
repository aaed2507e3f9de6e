"""The incremental sessionizer: events in any order, batching and duplication -> closed sessions,
corrections and retractions (``shared/spec/sessions.md``, "Streaming closure"). Pure: no clock, no I/O."""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import datetime

import msgspec

from proto.clock import epoch_ms, from_epoch_ms
from proto.events import (
    BREAK_TYPES,
    EVENT_TYPES,
    PRESENCE_ENDING_TYPES,
    Envelope,
    Heartbeat,
    Lock,
    StateChange,
)
from proto.sessions import InactiveReason, Session, SessionRetraction, session_from_ms, session_id_ms
from stream.core.compute import ACTIVE, INACTIVE, Checkpoint, Computed, compute, details
from stream.core.config import SessionizerConfig
from stream.core.state import (
    BRK,
    FLAG_MASK,
    HOST_MASK,
    HOST_SHIFT,
    HW,
    LOCK,
    NO_TIME,
    PEND,
    SCS,
    SCW,
    TZ_SHIFT,
    UserState,
    column,
)

_NEVER = 1 << 62  #: "no new fact" for close()
_SOFT_STEP = 6 * 3_600_000  #: at least this much of a period is cut at once (Sessionizer._soft_cut)
#: The most seq ranges a user's state keeps for duplicate detection (``UserState.seen``). An agent that
#: sends its seqs in order has one; gaps (events still to come, or an agent that numbers wrongly) add one
#: each. Beyond this the ranges heard from longest ago are dropped, down to half: an event of a dropped
#: range that comes again is taken again, which changes nothing (a user's facts are a set), only the
#: duplicates count misses it. Without a bound, one agent with random seqs grew a state by about 12 bytes
#: per event over the whole horizon.
MAX_SEEN_RANGES = 4096
#: The fact flags of each break type, from the contract's type sets (sessions.md rules 2 and 4): every break
#: breaks, the presence-ending ones end presence, a ``Lock`` starts a locked period.
_FLAGS: dict[str, int] = {
    name: BRK | (PEND if name in PRESENCE_ENDING_TYPES else 0) | (LOCK if name == Lock.__name__ else 0)
    for name in BREAK_TYPES
}
#: The same per event class (a class lookup is cheaper than its name's); classes not listed have none.
_CLASS_FLAGS: dict[type, int] = {cls: _FLAGS[name] for name, cls in EVENT_TYPES.items() if name in _FLAGS}


class Update(msgspec.Struct):
    """What one call produced: sessions to publish (closed, new or corrected, in start order), ids to
    retract (published earlier, no longer existing), late events (older than the horizon: not applied;
    the caller dead-letters and counts them), how many events were duplicates of ones already seen, and
    the ids among ``upserts`` that were published before (corrections)."""

    upserts: list[Session]
    retractions: list[SessionRetraction]
    late: list[Envelope]
    duplicates: int
    corrected: list[str] = msgspec.field(default_factory=list)


def _fingerprint(det: tuple[bool, tuple[str, ...], str]) -> int:
    locked, hosts, tz = det
    text = f"{locked}|{','.join(hosts)}|{tz}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=7).digest(), "big")


def _intern(table: list[str], value: str) -> int:
    try:
        return table.index(value)
    except ValueError:
        table.append(value)
        return len(table) - 1


def _mark_seen(ranges: list[int], seq: int, t: int) -> bool:
    """Record ``seq`` in the flat ``[lo, hi, max_ts, ...]`` ranges; False if it was already there."""
    n = len(ranges) // 3
    # Find the last range with lo <= seq (ranges sorted by lo; in-order input hits the last one).
    i = n - 1
    while i >= 0 and ranges[3 * i] > seq:
        i -= 1
    if i >= 0:
        _lo, hi = ranges[3 * i], ranges[3 * i + 1]
        if seq <= hi:
            return False
        if seq == hi + 1:
            ranges[3 * i + 1] = seq
            if t > ranges[3 * i + 2]:
                ranges[3 * i + 2] = t
            if i + 1 < n and ranges[3 * i + 3] == seq + 1:  # merge with the next range
                ranges[3 * i + 1] = ranges[3 * i + 4]
                ranges[3 * i + 2] = max(ranges[3 * i + 2], ranges[3 * i + 5])
                del ranges[3 * i + 3 : 3 * i + 6]
            return True
    if i + 1 < n and ranges[3 * i + 3] == seq + 1:
        ranges[3 * i + 3] = seq
        if t > ranges[3 * i + 5]:
            ranges[3 * i + 5] = t
        return True
    ranges[3 * i + 3 : 3 * i + 3] = [seq, seq, t]
    return True


def _bound_seen(seen: dict[str, list[int]]) -> None:
    """Keep at most :data:`MAX_SEEN_RANGES` ranges in ``seen``: past it, the newest half (by their latest
    event time, ties by agent and position) stays."""
    n = 0
    for ranges in seen.values():
        n += len(ranges)
    if n <= 3 * MAX_SEEN_RANGES:
        return
    order = sorted((r[i + 2], agent, i) for agent, r in seen.items() for i in range(0, len(r), 3))
    drop: dict[str, set[int]] = {}
    for _, agent, i in order[: len(order) - MAX_SEEN_RANGES // 2]:
        drop.setdefault(agent, set()).add(i)
    for agent, gone in drop.items():
        r = seen[agent]
        kept = [x for i in range(0, len(r), 3) if i not in gone for x in r[i : i + 3]]
        if kept:
            seen[agent] = kept
        else:
            del seen[agent]


def _older_checkpoints(cks: Sequence[int], start: int, targets: tuple[int, ...]) -> list[int]:
    """The checkpoints of ``cks`` (flat) worth keeping from before a computation that started at ``start``
    (its checkpoint or cut): those are still exact, since no fact before ``start`` changed. For each of
    ``targets`` and one hour before the first, the latest at or before it (a computation from a checkpoint
    makes only the one at its latest fact, and an event just before that one would otherwise need a
    computation from the start of the presence period, which can be days back)."""
    olds = sorted(((cks[i], i) for i in range(0, len(cks), 6) if cks[i] <= start), reverse=True)
    if not olds:
        return []
    keep: list[int] = []
    for bound in (*targets, targets[0] - 3_600_000 if targets else NO_TIME):
        for x, i in olds:  # latest first
            if x <= bound:
                if i not in keep:
                    keep.append(i)
                break
    return [v for i in keep for v in cks[i : i + 6]]


def _is_seen(ranges: list[int], seq: int) -> bool:
    for i in range(len(ranges) - 3, -1, -3):
        if ranges[i] <= seq:
            return seq <= ranges[i + 1]
    return False


class Intake:
    """One user's events taken into its state since :meth:`Sessionizer.intake`, not yet settled: the late
    ones (not applied), how many were duplicates, and the earliest time the new facts can change."""

    __slots__ = ("dups", "late", "state", "t_aff")

    def __init__(self, state: UserState) -> None:
        self.state = state
        self.late: list[Envelope] = []
        self.dups = 0
        self.t_aff = _NEVER  #: the earliest time the taken facts can change (``_NEVER``: none taken)


class Sessionizer:
    """Turns one user's raw events into published session records.

    Guarantees: whatever the order, batching and duplication of the events, after the last event and a
    final :meth:`close`, the published sessions (upserts applied, retractions removed) are exactly those of
    rules 1 to 5 over the events within the retention horizon. Only closed sessions are published (see
    ``docs/sessions.md`` for when a session closes). Pure: no clock, no I/O; state is a :class:`UserState`.
    """

    def __init__(self, config: SessionizerConfig = SessionizerConfig(), *, extend_fast: bool = True) -> None:
        self.config = config
        #: Settle a user whose new facts only extend its open chain without recomputing (:meth:`_extend`);
        #: False computes every settle (the tests compare both).
        self.extend_fast = extend_fast
        self._gap = config.gap_ms
        self._presence = config.presence_ms
        self._margin = max(self._gap, self._presence)
        self._retention = config.retention_ms
        self._cap = config.legacy_max_span_ms

    # ---- public API ---------------------------------------------------------------------------------------

    def apply(
        self,
        user_key: str,
        state: UserState | None,
        events: Sequence[Envelope],
        times: Sequence[int] | None = None,
    ) -> tuple[UserState, Update]:
        """Apply a batch of one user's events (any order, duplicates allowed); ``state`` None = new user.
        ``times``: the events' ``epoch_ms(ts)``, when the caller has them already."""
        intake = self.intake(state)
        if not events:
            return intake.state, Update([], [], [], 0)
        self.take(intake, events, times)
        return self.settle(user_key, intake)

    def intake(self, state: UserState | None) -> Intake:
        """Start taking one user's events into ``state`` (None = new user): :meth:`take` them (any number of
        times), then :meth:`settle` once. :meth:`apply` is the three in one call."""
        return Intake(state if state is not None else UserState())

    def take(self, intake: Intake, events: Sequence[Envelope], times: Sequence[int] | None = None) -> None:
        """:meth:`take_one` for each of ``events`` in turn. ``times``: the events' ``epoch_ms(ts)``, when
        the caller has them already."""
        if times is None:
            times = [epoch_ms(e.ts) for e in events]
        take_one = self.take_one
        late = intake.late
        for t, e in zip(times, events, strict=True):
            if not take_one(intake, t, e):
                late.append(e)

    def take_one(self, intake: Intake, t: int, e: Envelope) -> bool:
        """Add the facts of ``e`` (``t``: its ``epoch_ms(ts)``) to the intake's state, unless it is a
        duplicate of an event taken before (counted in the intake); False if it is late: older than the
        horizon behind the newest event taken before it or than the pruned floor (not applied; the caller
        keeps it). What is late depends on the order of the events only, not on how they are batched."""
        st = intake.state
        latest = st.latest
        if t > latest:
            st.latest = latest = t
        late = t < latest - self._retention or t < st.floor
        seq = e.seq
        seen = st.seen
        ranges = seen.get(e.agent_id)
        if ranges is None:
            if late:
                return False
            seen[e.agent_id] = [seq, seq, t]
        elif ranges and ranges[-2] + 1 == seq:  # the agent's next: not seen before (the common case)
            if late:
                return False
            ranges[-2] = seq
            if t > ranges[-1]:
                ranges[-1] = t
        elif _is_seen(ranges, seq):
            intake.dups += 1
            return True
        elif late:
            return False
        else:
            _mark_seen(ranges, seq, t)
        aff = self._add_fact(st, t, e)
        if aff < intake.t_aff:
            intake.t_aff = aff
        return True

    def settle(self, user_key: str, intake: Intake) -> tuple[UserState, Update]:
        """Recompute the sessions the taken events changed: what :meth:`apply` returns for them."""
        st = intake.state
        if intake.t_aff == _NEVER:
            return st, Update([], [], intake.late, intake.dups)
        upserts: list[Session] = []
        retractions: list[SessionRetraction] = []
        corrected: list[str] = []
        if not (st.tip is not None and self.extend_fast and self._extend(st, intake.t_aff)):
            # (else only the open chain or the open inactive rest grew)
            upserts, retractions, corrected = self._recompute(user_key, st, intake.t_aff, False)
        self._prune(st, st.latest - self._retention)
        _bound_seen(st.seen)
        return st, Update(upserts, retractions, intake.late, intake.dups, corrected)

    def close(self, user_key: str, state: UserState) -> tuple[UserState, Update]:
        """The user has been silent for the close timeout (decided by the caller): publish every session
        still open."""
        if state.open_from is None:
            return state, Update([], [], [], 0)
        upserts, retractions, corrected = self._recompute(user_key, state, _NEVER, True)
        return state, Update(upserts, retractions, [], 0, corrected)

    def shed(self, state: UserState, keep: int) -> int:
        """Forget all but about the newest ``keep`` facts of ``state`` and everything older than them; return
        how many facts went. For a user whose state would not fit where it is stored (the worker's
        ``state_max_bytes``): a flood of events within the horizon (``docs/sessions.md``, "Bounds against
        floods").

        The cut is made at the start of the latest published active session before those facts when there
        is one (nothing before such a start can change anything after it: see :meth:`_soft_cut`), else at
        the oldest kept fact; events older than the cut are late from then on. In the second case a
        published session the cut goes through may be published again from the cut on."""
        ts = state.ts
        n = len(ts)
        if n == 0 or keep >= n:
            return 0
        limit = ts[n - max(keep, 1)]
        soft_limit = limit
        if state.open_from is not None and state.open_from < soft_limit:
            soft_limit = state.open_from  # nothing open may start before a soft cut
        q = self._soft_cut(state, soft_limit, step=1)  # any such start after the oldest fact will do
        forced = q is None
        if forced:
            q = limit
        assert q is not None
        self._cut_at(state, q, True, q)
        if forced:
            state.cks = column([])  # their chains may reach before the cut: the next update starts from it
        return n - len(state.ts)

    def open_sessions(self, state: UserState) -> int:
        """Computed sessions not yet published as they now are."""
        return state.n_open

    def latest_event_ts(self, state: UserState) -> datetime | None:
        """The time of the user's latest event, or None before the first."""
        return None if state.latest == NO_TIME else from_epoch_ms(state.latest)

    # ---- internals ----------------------------------------------------------------------------------------

    def _add_fact(self, st: UserState, t: int, e: Envelope) -> int:
        """Insert the fact(s) of ``e``; return the earliest time whose computation they can change."""
        cls = type(e)
        flags = _CLASS_FLAGS.get(cls, 0)
        if e.input == "hardware":
            flags |= HW
        aff = t
        if cls is StateChange:
            working = e.state == "working"  # type: ignore[attr-defined]
            flags |= SCW if working else SCS
            sc = st.sc
            k = bisect_left(sc, 2 * t)
            if k > 0:  # the previous report's interval now ends here
                prev = sc[k - 1] >> 1
                if prev < aff:
                    aff = prev
            key = 2 * t + (1 if working else 0)
            k2 = bisect_left(sc, key)
            if k2 == len(sc) or sc[k2] != key:
                sc.insert(k2, key)
        elif cls is Heartbeat:
            lit = e.last_input_ts  # type: ignore[attr-defined]
            if lit is not None:
                p = epoch_ms(lit)
                if p >= st.floor:
                    pts = st.pts
                    last = pts[-1] if pts else NO_TIME
                    if p > last:  # in order: the common case
                        pts.append(p)
                        added = True
                    elif p == last:  # the same last input as the heartbeat before: often
                        added = False
                    else:
                        k = bisect_left(pts, p)
                        added = pts[k] != p  # k < len(pts): p <= pts[-1]
                        if added:
                            pts.insert(k, p)
                            if k < st.edit_pts:
                                st.edit_pts = k
                    # A point where evidence already is changes nothing (heartbeats repeat it).
                    if added and p < aff and not self._hw_at(st, p):
                        aff = p
                    if p > st.latest_eb:
                        st.latest_eb = p
        if flags & (HW | BRK | SCW) and t > st.latest_eb:
            st.latest_eb = t
        hosts, tzs = st.hosts, st.tzs
        host, tz = e.host, e.tz
        # Most users have one host and one zone: the last interned ones, no search.
        if hosts and hosts[-1] == host:
            h = len(hosts) - 1
        else:
            h = _intern(hosts, host)
        if tzs and tzs[-1] == tz:
            z = len(tzs) - 1
        else:
            z = _intern(tzs, tz)
        code = flags | (h << HOST_SHIFT) | (z << TZ_SHIFT)
        ts = st.ts
        if not ts or t > ts[-1]:  # in order: the common case
            ts.append(t)
            st.code.append(code)
            return aff
        i = bisect_left(ts, t)
        j = bisect_right(ts, t, i)
        if code not in st.code[i:j]:
            ts.insert(j, t)
            st.code.insert(j, code)
            if j < st.edit_ts:
                st.edit_ts = j
        return aff

    @staticmethod
    def _hw_at(st: UserState, t: int) -> bool:
        ts, code = st.ts, st.code
        i = bisect_left(ts, t)
        while i < len(ts) and ts[i] == t:
            if code[i] & HW:
                return True
            i += 1
        return False

    def _cut(self, st: UserState, t: int) -> int:
        """The latest hard cut at or before ``t``: a period start that every earlier period ends before."""
        comps = st.comps
        k = len(comps) - 2
        while k >= 0:
            start = comps[k]
            if start <= t and (k == 0 or comps[k - 1] < start):
                return start
            k -= 2
        return NO_TIME

    def _extend(self, st: UserState, t_aff: int) -> bool:
        """Settle the new facts without a computation when they only extend what the last computation left
        open (``st.tip``): the open chain (:meth:`_extend_chain`) or, with no chain open, the inactive rest
        of the last period (:meth:`_extend_idle`). False (nothing changed) when they may do more.

        Common to both: every new fact is after the open part's start (``t_aff``, the earliest time the new
        facts can change, is past it), so none falls in a published session (whose hosts or time zone it
        could change), and the user has no legacy report. The facts from ``t_aff`` on are walked, old ones
        among them (when a new fact comes before the latest): each is inside the open part already and
        changes nothing.

        Checkpoints: those after ``t_aff`` (only when a new fact comes before the latest: every checkpoint
        is at a fact time) held walks over facts before the new ones and are dropped (a computation from a
        checkpoint drops them too); the others stay, so the next computation starts at one of them (or at a
        cut) and walks these facts too."""
        tip = st.tip
        assert tip is not None
        start, end, period_end = tip
        if st.sc or t_aff <= start:
            return False
        if end == NO_TIME:
            done = self._extend_idle(st, t_aff, start, period_end)
        else:
            done = self._extend_chain(st, t_aff, start, end, period_end)
        cks = st.cks
        if done and any(cks[i] > t_aff for i in range(0, len(cks), 6)):
            st.cks = column([v for i in range(0, len(cks), 6) if cks[i] <= t_aff for v in cks[i : i + 6]])
        return done

    def _extend_chain(self, st: UserState, t_aff: int, start: int, end: int, period_end: int) -> bool:
        """The open chain ``[start, end]``, the last of the period that ends at ``period_end``: the new facts
        only extend it when none is a break (the open chain has none after its start), each piece of
        evidence (input, a heartbeat's last input) is less than the gap after the chain's end so far (rule
        3), none is more than the presence timeout after the period's end so far (rule 4), and the latest
        fact and evidence are not so far past the chain's new end that it closes. Then rules 1 to 5 close,
        correct and start nothing: the chain's end, the period's end and the open count move as the
        computation would move them."""
        gap = self._gap
        ts, code, pts = st.ts, st.code, st.pts
        lo, n = bisect_left(ts, t_aff), len(ts)
        evidence = [ts[i] for i in range(lo, n) if code[i] & HW]
        k = bisect_left(pts, t_aff)
        if k < len(pts):
            evidence.extend(pts[k:])
            evidence.sort()
        for t in evidence:  # rule 3: each within the gap of the chain's end
            if t - end >= gap:
                return False
            if t > end:
                end = t
        if st.latest_eb >= end + gap or st.latest >= end + gap + self._presence:
            return False  # the chain closes
        # Rule 4: the chain's item (it starts before these facts) extends the period first, then the facts.
        p1 = self._lengthen_period(ts, code, lo, period_end if period_end > end else end, BRK)
        if p1 is None:
            return False
        st.tip = (start, end, p1)
        st.comps[-1] = p1
        st.n_open = 2 if p1 > end else 1  # the chain, and the inactive rest of the period when there is one
        return True

    def _extend_idle(self, st: UserState, t_aff: int, start: int, period_end: int) -> bool:
        """The only open session is the inactive rest ``[start, period_end]`` of the last presence period:
        the new facts only lengthen it when none is evidence (hardware input, a heartbeat's last input at
        or after ``t_aff``) or a break (every presence-ending event is one), and each is at most the
        presence timeout after the period's end so far (rule 4). Then the chains are the last
        computation's, every period but the last is as it was, and the last one (and the open inactive
        session) ends at the latest of them. A desk that is logged on and idle or locked (heartbeats only,
        for hours: overnight) is settled this way."""
        if bisect_left(st.pts, t_aff) < len(st.pts):
            return False
        p1 = self._lengthen_period(st.ts, st.code, bisect_left(st.ts, t_aff), period_end, HW | BRK)
        if p1 is None:
            return False
        st.tip = (start, NO_TIME, p1)
        st.comps[-1] = p1
        return True

    def _lengthen_period(
        self, ts: Sequence[int], code: Sequence[int], lo: int, p1: int, refused: int
    ) -> int | None:
        """Rule 4 over the facts from ``lo`` on, joining the period that ends at ``p1``: its new end; None
        when a fact has a flag in ``refused`` or starts a new period (more than P after the end so far)."""
        presence = self._presence
        for i in range(lo, len(ts)):
            if code[i] & refused:
                return None
            t = ts[i]
            if t - p1 > presence:
                return None
            if t > p1:
                p1 = t
        return p1

    def _recompute(
        self, user_key: str, st: UserState, t_aff: int, all_closed: bool
    ) -> tuple[list[Session], list[SessionRetraction], list[str]]:
        """Recompute from the latest usable checkpoint at or before ``t_aff`` (the earliest position the new
        facts change), else from a hard cut, and diff against what was published there; the third list:
        the upserts' ids that were published before."""
        open_from = st.open_from
        carry = self._checkpoint_for(st, t_aff, open_from)
        latest_fact = st.ts[-1] if st.ts else NO_TIME
        targets = (latest_fact, latest_fact - 60_000, latest_fact - 600_000)
        if carry is not None:
            c = carry.x
            res = compute(st, c, self._gap, self._presence, all_closed, carry, targets, self._cap)
        else:
            t = t_aff - self._margin
            if open_from is not None and open_from < t:
                t = open_from
            c = self._cut(st, t)
            res = compute(st, c, self._gap, self._presence, all_closed, None, targets, self._cap)
        region = res.region_start
        # Replace the periods from the region's on.
        first = res.comps[0] if res.comps else region
        k = bisect_left(st.comps[0::2], min(first, region)) * 2
        st.comps[k:] = column(res.comps)
        st.cks = column(_older_checkpoints(st.cks, c, targets) + res.checkpoints)
        upserts: list[Session] = []
        retractions: list[SessionRetraction] = []
        corrected: list[str] = []
        pub = st.pub
        hi = 2 * region
        # Published from the region on and no longer computed: retracted. Usually nothing published starts
        # in the region (it starts at the open chain): the bound tells so without reading the keys.
        if pub and st.pub_bound >= hi:
            keys = {s.key for s in res.sessions}
            for key in sorted(k_ for k_ in pub if k_ >= hi and k_ not in keys):
                del pub[key]
                st.pub_raw = None
                retractions.append(SessionRetraction(session_id=self._sid(user_key, key), user_key=user_key))
            st.pub_bound = max(pub) if pub else NO_TIME
        new_open: int | None = None
        n_open = 0
        opened: list[Computed] = []  #: the first two sessions left open
        for s in res.sessions:
            old = pub.get(s.key)
            if old is not None and old[0] == s.end:
                if s.end < t_aff:
                    continue  # nothing in [start, end] or before changed: as published
                det = details(st, s.kind, s.start, s.end)
                fp = _fingerprint(det)
                if old[1] == fp:
                    continue
            elif s.closed:
                det = details(st, s.kind, s.start, s.end)
                fp = _fingerprint(det)
            if s.closed:
                pub[s.key] = [s.end, fp]
                st.pub_raw = None
                if s.key > st.pub_bound:
                    st.pub_bound = s.key
                session = self._session(user_key, s, det)
                upserts.append(session)
                if old is not None:
                    corrected.append(session.session_id)
            else:
                n_open += 1
                if new_open is None:
                    new_open = s.start
                if n_open <= 2:
                    opened.append(s)
        st.open_from = new_open
        st.n_open = n_open
        st.tip = self._tip(st, opened, n_open)
        return upserts, retractions, corrected

    @staticmethod
    def _tip(st: UserState, opened: list[Computed], n_open: int) -> tuple[int, int, int] | None:
        """``UserState.tip`` after a computation: the open chain when it is the first session left open and
        the last chain of the last period, followed by nothing but that period's open inactive rest; or,
        with no chain open, that inactive rest when it is the only session left open (``end`` NO_TIME)."""
        comps = st.comps
        if not opened or st.sc or not comps or n_open > 2:
            return None
        first = opened[0]
        period_start, period_end = comps[-2], comps[-1]
        if n_open == 1 and first.kind == INACTIVE:
            if first.start < period_start or first.end != period_end:
                return None
            return first.start, NO_TIME, period_end
        chain = first
        if chain.kind != ACTIVE or chain.start < period_start or chain.end > period_end:
            return None
        if n_open == 1:
            return (chain.start, chain.end, period_end) if period_end == chain.end else None
        rest = opened[1]
        if rest.kind == ACTIVE or rest.start != chain.end or rest.end != period_end:
            return None
        return chain.start, chain.end, period_end

    def _checkpoint_for(self, st: UserState, t_aff: int, open_from: int | None) -> Checkpoint | None:
        # The latest checkpoint in (floor, t_aff] whose region starts at or before open_from; read in place
        # (a Checkpoint is made for that one only: this runs once per user and batch).
        cks = st.cks
        best_i, best_x = -1, st.floor
        for i in range(0, len(cks), 6):
            x = cks[i]
            if best_x < x <= t_aff:
                if open_from is not None:
                    s, p0 = cks[i + 1], cks[i + 4]
                    if open_from < (s if s >= p0 else p0):  # Checkpoint.region_start
                        continue
                best_i, best_x = i, x
        if best_i < 0:
            return None
        best = Checkpoint(*cks[best_i : best_i + 6])
        if st.sc and (st.sc[-1] >> 1) >= best.p0:
            return None  # legacy reports in this period: no checkpoints
        return best

    @staticmethod
    def _sid(user_key: str, key: int) -> str:
        return session_id_ms(user_key, "active" if key % 2 == ACTIVE else "inactive", key >> 1)

    @staticmethod
    def _session(user_key: str, c: Computed, det: tuple[bool, tuple[str, ...], str]) -> Session:
        locked, hosts, tz = det
        if c.kind == ACTIVE:
            return session_from_ms(user_key, "active", c.start, c.end, hosts, None, tz)
        reason: InactiveReason = "locked" if locked else "idle"
        return session_from_ms(user_key, "inactive", c.start, c.end, hosts, reason, tz)

    def _prune(self, st: UserState, cutoff: int) -> None:
        """Forget whole periods that ended more than max(G, P) before the horizon, and old seq ranges."""
        comps = st.comps
        limit = cutoff
        if st.open_from is not None and st.open_from < limit:
            limit = st.open_from
        q = None
        for k in range(len(comps) - 2, 0, -2):
            start = comps[k]
            if (
                start <= limit
                and comps[k - 1] < start - self._margin
                and comps[k - 1] < cutoff - self._margin
            ):
                q = start
                break
        if q is None:
            # Everything is older than the horizon and there is nothing open: drop it all.
            if comps and comps[-1] < cutoff - self._margin and st.open_from is None:
                q = cutoff
        soft = False
        if q is None or q <= st.floor:
            q = self._soft_cut(st, limit)
            if q is None:
                return
            soft = True
        self._cut_at(st, q, soft, cutoff)

    def _cut_at(self, st: UserState, q: int, inside: bool, seen_cutoff: int) -> None:
        """Forget the facts before ``q`` (the new floor), the periods, checkpoints and published keys before
        it, and the seq ranges last heard before ``seen_cutoff``. ``inside``: ``q`` may fall inside a
        presence period, which then continues from ``q``."""
        comps = st.comps
        period_end = None
        if inside:
            k = bisect_right(comps[0::2], q) - 1
            if k >= 0 and comps[2 * k] < q <= comps[2 * k + 1]:
                period_end = comps[2 * k + 1]
        i = bisect_left(st.ts, q)
        del st.ts[:i]
        del st.code[:i]
        del st.pts[: bisect_left(st.pts, q)]
        st.edit_ts = st.edit_pts = 0  # every index moved: nothing encoded before is reusable
        del st.sc[: bisect_left(st.sc, 2 * q)]
        del st.comps[: bisect_left(st.comps[0::2], q) * 2]
        if period_end is not None:
            st.comps[0:0] = column([q, period_end])
        cks = [v for i in range(0, len(st.cks), 6) if st.cks[i] > q for v in st.cks[i : i + 6]]
        if inside:
            for i in range(4, len(cks), 6):  # their period now starts at q
                if cks[i] < q:
                    cks[i] = q
        st.cks = column(cks)
        for key in [k for k in st.pub if k < 2 * q]:
            del st.pub[key]
            st.pub_raw = None
        st.floor = q
        st.tip = None  # (a cut inside the period may change its start; the next settle computes)
        for agent in list(st.seen):
            r = st.seen[agent]
            keep = [x for i3 in range(0, len(r), 3) if r[i3 + 2] >= seen_cutoff for x in r[i3 : i3 + 3]]
            if keep:
                st.seen[agent] = keep
            else:
                del st.seen[agent]
        self._reintern(st)

    def _soft_cut(self, st: UserState, limit: int, step: int = _SOFT_STEP) -> int | None:
        """A cut inside a presence period, for a user who never leaves presence (a desk logged on and
        locked overnight, with heartbeats, has one period for days and so never a hard cut): the start
        ``s`` of the latest published active session at or before ``limit``, once it is ``step`` past the
        oldest fact kept (by default ``_SOFT_STEP``, so that cuts are rare; :meth:`shed` takes any).

        Nothing before ``s`` can change anything from ``s`` on: ``s`` starts a chain, so no evidence before
        it chains into it (rule 3); events before the new floor are late, so none can come between; the
        presence items before ``s`` are points before it, so the period from ``s`` on has the same items and
        the same end (rule 4) and no inactive part before its first chain (rule 5); the sessions before
        ``s`` are published and final. Users with legacy reports are left alone (a report's span may
        reach past ``s``)."""
        if st.sc or not st.ts:
            return None
        oldest = st.ts[0]
        if limit - oldest < step:
            return None
        best = None
        for key in st.pub:
            if key & 1 == ACTIVE:
                start = key >> 1
                if start <= limit and (best is None or start > best):
                    best = start
        if best is None or best - oldest < step or best <= st.floor:
            return None
        return best

    @staticmethod
    def _reintern(st: UserState) -> None:
        if st.code and len(st.hosts) <= 1 and len(st.tzs) <= 1:
            return  # one host and one zone, both used (the common case)
        used_h = sorted({(c >> HOST_SHIFT) & HOST_MASK for c in st.code})
        used_t = sorted({c >> TZ_SHIFT for c in st.code})
        if len(used_h) == len(st.hosts) and len(used_t) == len(st.tzs):
            return
        hmap = {old: new for new, old in enumerate(used_h)}
        tmap = {old: new for new, old in enumerate(used_t)}
        st.edit_ts = 0  # every code rewritten
        st.code = column([
            (c & FLAG_MASK)
            | (hmap[(c >> HOST_SHIFT) & HOST_MASK] << HOST_SHIFT)
            | (tmap[c >> TZ_SHIFT] << TZ_SHIFT)
            for c in st.code
        ])
        st.hosts = [st.hosts[h] for h in used_h]
        st.tzs = [st.tzs[t] for t in used_t]
