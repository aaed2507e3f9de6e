"""Pure report arithmetic: sessions -> local days -> weeks and months. No clock, no database.

Day boundaries are instants: local date ``d`` of zone ``z`` is ``[day_start(d, z), day_start(d + 1, z))``,
where ``day_start`` is the first instant whose wall clock in ``z`` reads ``d`` 00:00 (when 00:00 is skipped
by a DST change, the first instant after the gap). Durations are differences of UTC instants, so a day with
a spring-forward change is 23 h long and one with a fall-back change 25 h. Sums are kept in integer
milliseconds and rounded to whole seconds once per day (:func:`whole_seconds`: presence is the rounded
total and the three categories are apportioned so that they add up to it); a week or month is the sum of
its rounded days, so totals always add up exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reports.model import DayRow, LogonAt, PeriodRow, SessionSpan, TimelineItem

_MS = timedelta(milliseconds=1)
_UTC_ZONE = ZoneInfo("UTC")

#: How far local time may be from UTC (UTC-12 .. UTC+14); queries widen UTC ranges by this much.
MAX_UTC_OFFSET = timedelta(hours=14)


@lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``; an empty, unknown or malformed name is read as UTC."""
    if not name:
        return _UTC_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return _UTC_ZONE


@lru_cache(maxsize=65536)
def day_start(d: date, z: ZoneInfo) -> datetime:
    """The UTC instant local date ``d`` begins in zone ``z``."""
    # fold=0 on a skipped 00:00 uses the offset before the change, which lands just after the gap.
    return datetime.combine(d, time(0), tzinfo=z).astimezone(UTC)


def local_date(ts: datetime, z: ZoneInfo) -> date:
    """The local date (by the day boundaries of this module) the instant ``ts`` belongs to."""
    ts = _utc(ts)
    d = ts.astimezone(z).date()
    while day_start(d + timedelta(days=1), z) <= ts:
        d += timedelta(days=1)
    while day_start(d, z) > ts:
        d -= timedelta(days=1)
    return d


def utc_window(start: date, end: date) -> tuple[datetime, datetime]:
    """A UTC range covering local dates ``start``..``end`` (inclusive) in every time zone."""
    lo = datetime.combine(start, time(0), tzinfo=UTC) - MAX_UTC_OFFSET
    hi = datetime.combine(end + timedelta(days=1), time(0), tzinfo=UTC) + MAX_UTC_OFFSET
    return lo, hi


def category(kind: str, reason: str | None) -> str:
    """``active``, ``locked`` or ``idle`` (an inactive session without a known reason counts as idle)."""
    if kind == "active":
        return "active"
    return "locked" if reason == "locked" else "idle"


@dataclass(frozen=True, slots=True)
class Piece:
    """The part of one session that lies in one local date (UTC instants, ``start <= end``)."""

    user_key: str
    date: date
    tz: str
    category: str
    reason: str | None
    start: datetime
    end: datetime

    @property
    def ms(self) -> int:
        return (self.end - self.start) // _MS


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("report times must be timezone-aware")
    return ts.astimezone(UTC)


def split_session(span: SessionSpan, first: date | None = None, last: date | None = None) -> list[Piece]:
    """Cut ``span`` at local midnight in its own zone, keeping only the pieces dated ``first``..``last``.

    A session of zero length is one zero-length piece on its local date; otherwise pieces have positive
    length. A session whose end precedes its start is read as zero-length at its start.
    """
    z = zone(span.tz)
    s = _utc(span.start)
    e = max(_utc(span.end), s)
    lo = None if first is None else day_start(first, z)
    hi = None if last is None else day_start(last + timedelta(days=1), z)
    cat = category(span.kind, span.reason)
    reason = None if cat == "active" else cat
    if e == s:
        if (lo is not None and s < lo) or (hi is not None and s >= hi):
            return []
        return [Piece(span.user_key, local_date(s, z), span.tz, cat, reason, s, e)]
    if lo is not None:
        s = max(s, lo)
    if hi is not None:
        e = min(e, hi)
    if e <= s:
        return []
    d = local_date(s, z)
    out: list[Piece] = []
    cur = s
    while cur < e:
        nxt = min(e, day_start(d + timedelta(days=1), z))
        out.append(Piece(span.user_key, d, span.tz, cat, reason, cur, nxt))
        cur = nxt
        d += timedelta(days=1)
    return out


@dataclass(slots=True)
class _DayAcc:
    tz: str
    tz_at: datetime
    ms: dict[str, int] = field(default_factory=lambda: {"active": 0, "idle": 0, "locked": 0})
    first_activity: datetime | None = None
    last_activity: datetime | None = None
    first_logon: datetime | None = None


_CATEGORIES = ("active", "idle", "locked")


def whole_seconds(ms: dict[str, int]) -> tuple[int, int, int]:
    """``(active, idle, locked)`` whole seconds from milliseconds, summing to the rounded total.

    Presence is the total rounded half up; each category is floored and the seconds left over go to the
    categories with the largest remainders (ties: active, idle, locked), so the parts add up exactly.
    """
    total = sum(ms[c] for c in _CATEGORIES)
    presence = (total + 500) // 1000
    secs = {c: ms[c] // 1000 for c in _CATEGORIES}
    left = presence - sum(secs.values())
    for c in sorted(_CATEGORIES, key=lambda c: -(ms[c] % 1000))[:left]:
        secs[c] += 1
    return secs["active"], secs["idle"], secs["locked"]


def day_rows(
    sessions: Iterable[SessionSpan], logons: Iterable[LogonAt], start: date, end: date
) -> list[DayRow]:
    """One :class:`DayRow` per user and local date in ``start``..``end`` (inclusive) that has a session
    piece or a ``Logon``; sorted by user key, then date.

    A row's ``tz`` is the zone of its latest session piece (of its first Logon when it has no session).
    A Logon's local date is taken in the zone the event itself reported.
    """
    acc: dict[tuple[str, date], _DayAcc] = {}
    for span in sessions:
        for p in split_session(span, start, end):
            a = acc.get((p.user_key, p.date))
            if a is None:
                a = acc[(p.user_key, p.date)] = _DayAcc(tz=p.tz, tz_at=p.start)
            elif p.start >= a.tz_at:
                a.tz, a.tz_at = p.tz, p.start
            a.ms[p.category] += p.ms
            if p.category == "active":
                if a.first_activity is None or p.start < a.first_activity:
                    a.first_activity = p.start
                if a.last_activity is None or p.end > a.last_activity:
                    a.last_activity = p.end
    for ev in logons:
        z = zone(ev.tz)
        ts = _utc(ev.ts)
        d = local_date(ts, z)
        if not start <= d <= end:
            continue
        a = acc.get((ev.user_key, d))
        if a is None:
            a = acc[(ev.user_key, d)] = _DayAcc(tz=ev.tz, tz_at=datetime.min.replace(tzinfo=UTC))
        if a.first_logon is None or ts < a.first_logon:
            a.first_logon = ts
    rows: list[DayRow] = []
    for (user, d), a in sorted(acc.items()):
        z = zone(a.tz)
        active, idle, locked = whole_seconds(a.ms)
        rows.append(
            DayRow(
                user_key=user,
                date=d.isoformat(),
                tz=a.tz,
                active_s=active,
                idle_s=idle,
                locked_s=locked,
                presence_s=active + idle + locked,
                first_activity=_local(a.first_activity, z),
                first_logon=_local(a.first_logon, z),
                last_activity=_local(a.last_activity, z),
            )
        )
    return rows


def _local(ts: datetime | None, z: ZoneInfo) -> datetime | None:
    return None if ts is None else ts.astimezone(z)


def iso_week(d: date) -> tuple[str, date, date]:
    """The ISO week containing ``d``: its label (``2026-W09``), Monday and Sunday."""
    year, week, weekday = d.isocalendar()
    monday = d - timedelta(days=weekday - 1)
    return f"{year}-W{week:02d}", monday, monday + timedelta(days=6)


def month(d: date) -> tuple[str, date, date]:
    """The calendar month containing ``d``: its label (``2026-03``), first and last day."""
    first = d.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return f"{d.year}-{d.month:02d}", first, nxt - timedelta(days=1)


def period_rows(days: Iterable[DayRow], label: str, start: date, end: date) -> list[PeriodRow]:
    """Group the day rows dated ``start``..``end`` per user into one :class:`PeriodRow` each (sorted by
    user key); every sum is exactly the sum of the user's days."""
    per_user: dict[str, list[DayRow]] = {}
    lo, hi = start.isoformat(), end.isoformat()
    for row in days:
        if lo <= row.date <= hi:
            per_user.setdefault(row.user_key, []).append(row)
    out: list[PeriodRow] = []
    for user in sorted(per_user):
        rows = sorted(per_user[user], key=lambda r: r.date)
        out.append(
            PeriodRow(
                user_key=user,
                period=label,
                start=start,
                end=end,
                active_s=sum(r.active_s for r in rows),
                idle_s=sum(r.idle_s for r in rows),
                locked_s=sum(r.locked_s for r in rows),
                presence_s=sum(r.presence_s for r in rows),
                days=rows,
            )
        )
    return out


def timeline(sessions: Iterable[SessionSpan], user: str, d: date) -> list[TimelineItem]:
    """``user``'s sessions clipped to their local date ``d``, in time order, times in their zone."""
    items: list[tuple[datetime, TimelineItem]] = []
    for span in sessions:
        if span.user_key != user:
            continue
        z = zone(span.tz)
        for p in split_session(span, d, d):
            items.append(
                (
                    p.start,
                    TimelineItem(
                        kind="active" if p.category == "active" else "inactive",
                        reason=p.reason,
                        start=p.start.astimezone(z),
                        end=p.end.astimezone(z),
                        duration_s=p.ms / 1000,
                    ),
                )
            )
    items.sort(key=lambda it: (it[0], it[1].end))
    return [it for _, it in items]
