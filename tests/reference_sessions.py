"""A straightforward batch implementation of rules 1-5 of ``shared/spec/sessions.md``, written from the
spec text for the tests (it shares no code with ``stream.core``). Slow and obvious on purpose.

Choices where the spec is silent (the same ones ``docs/sessions.md`` documents for the core):
- the "next" ``StateChange`` after one at ``a`` is the earliest one strictly later than ``a``; it
  "repeats the same state" (legacy span end capped at ``G``) only when every report at that next time has
  the same state as the one at ``a``;
- at one time, breaks sort after other items, and presence-ending breaks after ``Lock``;
- presence periods that overlap (only when a ``StateChange`` interval spans a presence-ending break) are
  merged before inactive time is computed, so no time counts twice;
- ``tz`` is the time zone of the latest event at or before the session's end (the greatest name when
  several share that time), ``"UTC"`` when there is none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from proto.events import BREAK_TYPES, PRESENCE_ENDING_TYPES, Envelope
from proto.sessions import Session, make_session


def reference_sessions(
    user_key: str,
    events: Iterable[Envelope],
    gap_s: float = 300.0,
    presence_s: float = 180.0,
    legacy_max_span_s: float = 14400.0,
) -> list[Session]:
    G = timedelta(seconds=gap_s)
    P = timedelta(seconds=presence_s)
    L = timedelta(seconds=legacy_max_span_s)

    # Deduplicate by (agent_id, seq): the first copy wins.
    unique: dict[tuple[str, int], Envelope] = {}
    for e in events:
        unique.setdefault((e.agent_id, e.seq), e)
    evs = list(unique.values())

    def kind(e: Envelope) -> str:
        return type(e).__name__

    # Rule 1: evidence items.
    evidence: list[tuple[datetime, datetime]] = []
    for e in evs:
        if e.input == "hardware":
            evidence.append((e.ts, e.ts))
        if kind(e) == "Heartbeat" and e.last_input_ts is not None:  # type: ignore[attr-defined]
            evidence.append((e.last_input_ts, e.last_input_ts))  # type: ignore[attr-defined]
    reports = sorted((e for e in evs if kind(e) == "StateChange"), key=lambda e: e.ts)
    stopped: list[tuple[datetime, datetime]] = []
    for r in reports:
        later = [x.ts for x in reports if x.ts > r.ts]
        if later:
            b = min(later)
            next_states = {x.state for x in reports if x.ts == b}  # type: ignore[attr-defined]
            cap = G if next_states == {r.state} else L  # type: ignore[attr-defined]
            end = min(b, r.ts + cap)
        else:
            end = r.ts
        if r.state == "working":  # type: ignore[attr-defined]
            evidence.append((r.ts, end))
        else:
            stopped.append((r.ts, end))

    # Rule 2: breaks.
    breaks = [e.ts for e in evs if kind(e) in BREAK_TYPES]

    # Rule 3: active sessions.
    evidence.sort(key=lambda it: it[0])
    actives: list[tuple[datetime, datetime]] = []
    chain: list[datetime] | None = None
    for a, b in evidence:
        if chain is not None:
            s, e_ = chain
            if a <= e_ or (a - e_ < G and not any(e_ <= x < a for x in breaks)):
                chain[1] = max(e_, b)
                continue
            actives.append((s, e_))
        chain = [a, b]
    if chain is not None:
        actives.append((chain[0], chain[1]))

    # Rule 4: presence periods. Items: (start, rank, end, ends_presence); rank orders breaks last.
    items: list[tuple[datetime, int, datetime, bool]] = []
    for e in evs:
        ends = kind(e) in PRESENCE_ENDING_TYPES
        rank = 2 if ends else 1 if kind(e) in BREAK_TYPES else 0
        items.append((e.ts, rank, e.ts, ends))
    for s, e_ in actives:
        items.append((s, 0, e_, False))
    for s, e_ in stopped:
        items.append((s, 0, e_, False))
    items.sort(key=lambda it: (it[0], it[1]))
    periods: list[list[datetime]] = []
    closed = True
    for a, _rank, b, ends in items:
        if closed or a - periods[-1][1] > P:
            periods.append([a, b])
        else:
            periods[-1][1] = max(periods[-1][1], b)
        closed = ends
    merged: list[list[datetime]] = []
    for p in sorted(periods):
        if merged and p[0] < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], p[1])
        else:
            merged.append(list(p))

    # Rule 5: inactive sessions.
    inactives: list[tuple[datetime, datetime, str]] = []
    locks = [e.ts for e in evs if kind(e) == "Lock"]
    for p0, p1 in merged:
        cursor = p0
        for s, e_ in actives:
            if e_ < p0 or s > p1:
                continue
            if s > cursor:
                inactives.append((cursor, s, ""))
            cursor = max(cursor, e_)
        if p1 > cursor:
            inactives.append((cursor, p1, ""))

    def hosts(s: datetime, e_: datetime) -> list[str]:
        return sorted({x.host for x in evs if s <= x.ts <= e_})

    def tz(e_: datetime) -> str:
        before = [x for x in evs if x.ts <= e_]
        if not before:
            return "UTC"
        t = max(x.ts for x in before)
        return max(x.tz for x in before if x.ts == t)

    out = [make_session(user_key, "active", s, e_, hosts(s, e_), None, tz(e_)) for s, e_ in actives]
    for s, e_, _ in inactives:
        reason = "locked" if any(s <= x < e_ for x in locks) else "idle"
        out.append(make_session(user_key, "inactive", s, e_, hosts(s, e_), reason, tz(e_)))  # type: ignore[arg-type]
    out.sort(key=lambda x: (x.start, x.kind))
    return out
