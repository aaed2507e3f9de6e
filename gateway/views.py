"""Pure helpers the pages use: durations, date navigation, the timeline chart's geometry, app totals."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import msgspec

from reports import render
from reports.compute import category, zone
from reports.model import AppUsage, TimelineItem

VIEWS = ("day", "week", "month")
CHART_WIDTH = 960
ROW_HEIGHT = 22


def hms(seconds: float | None) -> str:
    """``H:MM:SS`` (hours may exceed 24); ``-`` for None."""
    if seconds is None:
        return "-"
    s = round(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    return f"{sign}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def clock(ts: datetime | None, day: str | date | None = None) -> str:
    """``HH:MM`` of an aware time in its own zone, as the terminal report shows it; ``-`` for None. With
    ``day`` (the local date the time belongs to), the midnight that ends that day reads ``24:00``."""
    if day is None:
        return render.clock(ts)
    return render.clock_end(ts, day if isinstance(day, str) else day.isoformat())


def user_path(user_key: str) -> str:
    """The path segment of a user key (backslashes and every other reserved character escaped)."""
    return quote(user_key, safe="")


def add_months(d: date, n: int) -> date:
    """The same day ``n`` months later (clamped to the month's length)."""
    m = d.month - 1 + n
    y, m = d.year + m // 12, m % 12 + 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def step(d: date, view: str, n: int) -> date:
    """``d`` moved by ``n`` days, weeks or months."""
    if view == "week":
        return d + timedelta(weeks=n)
    if view == "month":
        return add_months(d, n)
    return d + timedelta(days=n)


def period_label(d: date, view: str) -> str:
    """How the page titles the period of ``d``."""
    if view == "week":
        iso = d.isocalendar()
        monday = d - timedelta(days=d.weekday())
        return (
            f"Week {iso.year}-W{iso.week:02d} ({monday:%a %d %b} - {monday + timedelta(days=6):%a %d %b %Y})"
        )
    if view == "month":
        return f"{d:%B %Y}"
    return f"{d:%A %d %B %Y}"


def nav_query(**params: object) -> str:
    """A query string of the non-empty ``params``."""
    return urlencode({k: str(v) for k, v in params.items() if v not in (None, "")})


class Bar(msgspec.Struct, frozen=True):
    """One rectangle of the timeline chart (pixels) and its tooltip."""

    x: float
    width: float
    y: int
    css: str
    label: str


class Tick(msgspec.Struct, frozen=True):
    x: float
    text: str


ROWS = {"active": 0, "idle": 1, "locked": 2}


def timeline_bars(items: Iterable[TimelineItem], d: date, tz: str, width: int = CHART_WIDTH) -> list[Bar]:
    """Bars of ``items`` on a 24-hour wall-clock axis of local date ``d`` in ``tz`` (``width`` pixels): one
    row each for active, idle and locked.

    Positions are local clock times, so bars line up with the hour labels; on a DST day the skipped hour
    stays empty and the repeated hour is drawn once (its two halves overlap). A bar is at least 1 pixel
    wide so that a zero-length active session stays visible."""
    z = zone(tz)
    midnight = datetime.combine(d, time())
    day_s = 86400.0

    def pos(ts: datetime) -> float:
        local = ts.astimezone(z).replace(tzinfo=None)
        return min(day_s, max(0.0, (local - midnight).total_seconds()))

    bars = []
    for it in items:
        row = category(it.kind, it.reason)  # the reports' rule: active, locked, else idle
        a, b = pos(it.start), pos(it.end)
        if b < a:
            b = a
        x = a / day_s * width
        w = max(1.0, (b - a) / day_s * width)
        a_txt, b_txt = clock(it.start.astimezone(z), d), clock(it.end.astimezone(z), d)
        label = f"{row} {a_txt}-{b_txt} ({hms(it.duration_s)})"
        bars.append(Bar(x=round(x, 2), width=round(w, 2), y=ROWS[row] * ROW_HEIGHT, css=row, label=label))
    return bars


def hour_ticks(width: int = CHART_WIDTH, every: int = 3) -> list[Tick]:
    """Axis labels every ``every`` hours of a 24-hour axis."""
    return [Tick(x=round(h / 24 * width, 2), text=f"{h:02d}:00") for h in range(0, 25, every)]


class AppTotal(msgspec.Struct):
    name: str
    focus_s: float
    share: float


def totals(rows: Iterable[AppUsage], by: str) -> list[AppTotal]:
    """Focus time summed per ``app``, ``domain`` or ``url`` (empty names dropped), largest first, with each
    one's share of the total of the listed rows."""
    sums: dict[str, float] = {}
    for r in rows:
        name = getattr(r, by) or ""
        if name:
            sums[name] = sums.get(name, 0.0) + r.focus_s
    whole = sum(sums.values()) or 1.0
    return [
        AppTotal(name=k, focus_s=v, share=v / whole)
        for k, v in sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


#: Columns the overview may be sorted by (query ``sort``), and the row field each one reads.
SORT_FIELDS = {
    "user": "user_key",
    "active": "active_s",
    "idle": "idle_s",
    "locked": "locked_s",
    "presence": "presence_s",
    "first_logon": "first_logon",
    "first_activity": "first_activity",
    "last_activity": "last_activity",
    "days": "days",
}


def sort_rows(rows: list[Any], sort: str, desc: bool) -> list[Any]:
    """``rows`` ordered by column ``sort`` (``SORT_FIELDS``), missing values last, ties by user key."""
    name = SORT_FIELDS.get(sort, "user_key")

    def value(r: Any) -> Any:
        v = getattr(r, name, None)
        if name == "days":
            v = len(v or ())
        if isinstance(v, datetime):
            v = v.timetz().isoformat()  # the local time of day: rows in other zones compare by the clock
        return v

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    present.sort(key=lambda r: r.user_key)
    present.sort(key=value, reverse=desc)
    return present + sorted(missing, key=lambda r: r.user_key)


class Total(msgspec.Struct):
    """The sum of the rows listed (a team's or everyone's in scope)."""

    users: int
    active_s: int
    idle_s: int
    locked_s: int
    presence_s: int
    days: int


def total(rows: Iterable[Any]) -> Total:
    rs = list(rows)
    return Total(
        users=len({r.user_key for r in rs}),
        active_s=sum(r.active_s for r in rs),
        idle_s=sum(r.idle_s for r in rs),
        locked_s=sum(r.locked_s for r in rs),
        presence_s=sum(r.presence_s for r in rs),
        days=sum(len(getattr(r, "days", ()) or ()) for r in rs),
    )


def period_bounds(d: date, view: str) -> tuple[date, date]:
    """The first and last date of the day, ISO week or month containing ``d``."""
    if view == "week":
        monday = d - timedelta(days=d.weekday())
        return monday, monday + timedelta(days=6)
    if view == "month":
        first = d.replace(day=1)
        return first, first.replace(day=calendar.monthrange(d.year, d.month)[1])
    return d, d


def hm(seconds: float | None) -> str:
    """``H:MM`` (for the chart labels); ``-`` for None."""
    return "-" if seconds is None else render.hm(seconds)
