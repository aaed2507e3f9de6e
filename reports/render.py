"""Rendering report rows as an aligned table, CSV or JSON (pure functions returning text)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from reports.model import AppUsage, DayRow, PeriodRow, TimelineItem

FORMATS = ("table", "csv", "json")


def hm(seconds: float) -> str:
    """``H:MM`` (hours may exceed 24), rounded to the nearest minute."""
    minutes = int(seconds + 30) // 60
    return f"{minutes // 60}:{minutes % 60:02d}"


def clock(ts: datetime | None) -> str:
    """``HH:MM`` of a local time, or ``-``."""
    return "-" if ts is None else ts.strftime("%H:%M")


def clock_end(ts: datetime | None, day: str) -> str:
    """Like :func:`clock`, but an end at the following midnight reads ``24:00``."""
    if ts is not None and ts.date().isoformat() > day and ts.hour == ts.minute == 0:
        return "24:00"
    return clock(ts)


def rfc3339(ts: datetime | None) -> str:
    return "" if ts is None else ts.isoformat()


def to_json(value: Any) -> str:
    """JSON with RFC 3339 times (offset included) and ``null`` for missing values."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """An aligned plain-text table; columns flagged in ``numeric`` are right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    right = list(numeric) + [False] * (len(header) - len(numeric))

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def to_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")


_DAY_HEADER = (
    "user",
    "date",
    "active",
    "idle",
    "locked",
    "presence",
    "first logon",
    "first act.",
    "last act.",
)
_DAY_CSV = (
    "user_key",
    "date",
    "tz",
    "active_s",
    "idle_s",
    "locked_s",
    "presence_s",
    "first_logon",
    "first_activity",
    "last_activity",
)


def _day_cells(r: DayRow) -> tuple[object, ...]:
    """A day's CSV cells after its key columns: date, zone, the four totals and the three times."""
    return (
        r.date, r.tz, r.active_s, r.idle_s, r.locked_s, r.presence_s,
        rfc3339(r.first_logon), rfc3339(r.first_activity), rfc3339(r.last_activity),
    )


def days(rows: Sequence[DayRow], fmt: str) -> str:
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(
            _DAY_CSV,
            [(r.user_key, *_day_cells(r)) for r in rows],
        )
    if not rows:
        return "no data"
    body = [
        (
            r.user_key,
            r.date,
            hm(r.active_s),
            hm(r.idle_s),
            hm(r.locked_s),
            hm(r.presence_s),
            clock(r.first_logon),
            clock(r.first_activity),
            clock_end(r.last_activity, r.date),
        )
        for r in rows
    ]
    return table(_DAY_HEADER, body, (False, False, True, True, True, True, True, True, True))


def periods(rows: Sequence[PeriodRow], fmt: str) -> str:
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(
            ("user_key", "period", "start", "end", "active_s", "idle_s", "locked_s", "presence_s", "days"),
            [
                (
                    r.user_key,
                    r.period,
                    r.start.isoformat(),
                    r.end.isoformat(),
                    r.active_s,
                    r.idle_s,
                    r.locked_s,
                    r.presence_s,
                    len(r.days),
                )
                for r in rows
            ],
        )
    if not rows:
        return "no data"
    body = []
    for p in rows:
        body.append(
            (p.user_key, p.period, hm(p.active_s), hm(p.idle_s), hm(p.locked_s), hm(p.presence_s), "")
        )
        for d in p.days:
            body.append(
                (
                    "",
                    f"  {d.date}",
                    hm(d.active_s),
                    hm(d.idle_s),
                    hm(d.locked_s),
                    hm(d.presence_s),
                    clock(d.first_activity),
                )
            )
    header = ("user", "period / day", "active", "idle", "locked", "presence", "first act.")
    return table(header, body, (False, False, True, True, True, True, True))


def user_day(user: str, date: str, totals: DayRow | None, items: Sequence[TimelineItem], fmt: str) -> str:
    if fmt == "json":
        return to_json({"user_key": user, "date": date, "totals": totals, "timeline": items})
    if fmt == "csv":
        return to_csv(
            ("user_key", "date", "kind", "reason", "start", "end", "duration_s"),
            [
                (user, date, i.kind, i.reason or "", rfc3339(i.start), rfc3339(i.end), i.duration_s)
                for i in items
            ],
        )
    body = [(clock(i.start), clock_end(i.end, date), i.kind, i.reason or "", hm(i.duration_s)) for i in items]
    out = [f"{user}  {date}" + (f"  ({totals.tz})" if totals else "")]
    out.append(
        table(("start", "end", "kind", "reason", "duration"), body, (False, False, False, False, True))
        if body
        else "no sessions"
    )
    if totals:
        out.append(days([totals], "table"))
    return "\n\n".join(out)


def apps(rows: Sequence[AppUsage], fmt: str) -> str:
    if fmt == "json":
        return to_json(rows)
    with_urls = any(r.url is not None for r in rows)
    if fmt == "csv":
        return to_csv(
            ("user_key", "app", "domain", "url", "focus_s"),
            [(r.user_key or "", r.app, r.domain, r.url or "", r.focus_s) for r in rows],
        )
    if not rows:
        return "no data"
    header = ["user", "application", "domain", *(["url"] if with_urls else []), "focus"]
    body = [
        [
            r.user_key or "(everyone)",
            r.app or "?",
            r.domain or "-",
            *([r.url or ""] if with_urls else []),
            hm(r.focus_s),
        ]
        for r in rows
    ]
    return table(header, body, [False] * (len(header) - 1) + [True])


_PERIOD_DAY_CSV = ("user_key", "period", *_DAY_CSV[1:])


def period_days_csv(rows: Sequence[PeriodRow]) -> str:
    """A week or month as CSV with one line per user and day with data (``user_key, period, date, tz,
    active_s, idle_s, locked_s, presence_s, first_logon, first_activity, last_activity``): the day lines add
    up to the period's totals."""
    return to_csv(
        _PERIOD_DAY_CSV,
        [(r.user_key, p.period, *_day_cells(r)) for p in rows for r in p.days],
    )
