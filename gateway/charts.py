"""Server-rendered charts: the geometry of the week's stacked bars and the month's heat maps. Pure.

Every shape carries the seconds it stands for (``seconds``) so that the page can put the same numbers in the
table beside the chart and the browser test can check the one against the other."""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from datetime import date, timedelta

import msgspec

from reports.model import DayRow, PeriodRow

KINDS = ("active", "idle", "locked")
#: Heat-map levels by active time: none, < 2 h, < 4 h, < 6 h, < 8 h, 8 h or more.
HEAT_STEPS_H = (2, 4, 6, 8)


class Segment(msgspec.Struct, frozen=True):
    """One part (active, idle or locked) of a stacked bar, in pixels, and the seconds it shows."""

    kind: str
    x: float
    y: float
    width: float
    height: float
    seconds: int
    date: str
    user_key: str


class Cell(msgspec.Struct, frozen=True):
    """One square of a heat map: its place, level (0-5) and the day's figures (None: no data)."""

    x: float
    y: float
    date: str
    day: int
    level: int
    user_key: str
    row: DayRow | None


def scale_hours(max_seconds: int, minimum: int = 8) -> int:
    """The axis length in whole hours: the longest value rounded up, at least ``minimum``."""
    return max(minimum, math.ceil(max_seconds / 3600))


def heat_level(active_s: int | None) -> int:
    """0 without data or activity, else 1..5 by the active hours (``HEAT_STEPS_H``)."""
    if not active_s:
        return 0
    hours = active_s / 3600
    return 1 + sum(1 for step in HEAT_STEPS_H if hours >= step)


def week_days(start: date) -> list[date]:
    return [start + timedelta(days=i) for i in range(7)]


def _stack(
    row: DayRow, x0: float, y0: float, px_per_s: float, thickness: float, horizontal: bool
) -> list[Segment]:
    out = []
    offset = 0.0
    for kind in KINDS:
        secs = int(getattr(row, f"{kind}_s"))
        length = secs * px_per_s
        if secs <= 0:
            continue
        if horizontal:
            seg = Segment(
                kind, round(x0 + offset, 2), y0, round(length, 2), thickness, secs, row.date, row.user_key
            )
        else:
            seg = Segment(
                kind,
                x0,
                round(y0 - offset - length, 2),
                thickness,
                round(length, 2),
                secs,
                row.date,
                row.user_key,
            )
        out.append(seg)
        offset += length
    return out


class WeekGrid(msgspec.Struct):
    """The overview's week: per user a row, per day a horizontal stacked bar in the day's column."""

    days: list[date]
    label_width: int
    col_width: int
    row_height: int
    width: int
    height: int
    hours: int
    segments: list[Segment]
    users: list[str]


def week_grid(
    periods: Sequence[PeriodRow], start: date, label_width: int = 170, col_width: int = 110
) -> WeekGrid:
    """Stacked bars (active, idle, locked) per user and day; a bar of ``hours`` fills its column."""
    row_height = 24
    days = week_days(start)
    longest = max((d.presence_s for p in periods for d in p.days), default=0)
    hours = scale_hours(longest)
    px = (col_width - 8) / (hours * 3600)
    segments: list[Segment] = []
    for i, p in enumerate(periods):
        y = 22 + i * row_height + 5
        for r in p.days:
            col = (date.fromisoformat(r.date) - start).days
            segments.extend(_stack(r, label_width + col * col_width + 4, y, px, row_height - 10, True))
    return WeekGrid(
        days=days,
        label_width=label_width,
        col_width=col_width,
        row_height=row_height,
        width=label_width + 7 * col_width,
        height=22 + max(1, len(periods)) * row_height + 4,
        hours=hours,
        segments=segments,
        users=[p.user_key for p in periods],
    )


class DayColumns(msgspec.Struct):
    """One user's week as vertical stacked bars, one per day, on an hour axis."""

    days: list[date]
    width: int
    height: int
    top: int
    plot_height: int
    left: int
    col_width: int
    hours: int
    ticks: list[tuple[float, str]]
    segments: list[Segment]


def day_columns(rows: Sequence[DayRow], days: Sequence[date]) -> DayColumns:
    """Vertical stacked bars for ``days`` (each ``rows`` entry on its date); the axis spans ``hours``."""
    left, top, plot_h, col_w = 40, 10, 200, 80
    hours = scale_hours(max((r.presence_s for r in rows), default=0))
    step = 2 if hours <= 12 else 4
    hours = math.ceil(hours / step) * step  # the axis ends on a labelled tick
    px = plot_h / (hours * 3600)
    index = {d.isoformat(): i for i, d in enumerate(days)}
    segments: list[Segment] = []
    for r in rows:
        i = index.get(r.date)
        if i is None:
            continue
        segments.extend(_stack(r, left + i * col_w + 15, top + plot_h, px, col_w - 30, False))
    ticks = [(round(top + plot_h - h * 3600 * px, 2), f"{h} h") for h in range(0, hours + 1, step)]
    return DayColumns(
        days=list(days),
        width=left + len(days) * col_w + 10,
        height=top + plot_h + 40,
        top=top,
        plot_height=plot_h,
        left=left,
        col_width=col_w,
        hours=hours,
        ticks=ticks,
        segments=segments,
    )


class MonthStrip(msgspec.Struct):
    """The overview's month: per user a row of day squares coloured by active time."""

    days: list[date]
    label_width: int
    cell: int
    width: int
    height: int
    cells: list[Cell]
    users: list[str]


def month_strip(periods: Sequence[PeriodRow], first: date, last: date, label_width: int = 170) -> MonthStrip:
    cell = 22
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    cells: list[Cell] = []
    for i, p in enumerate(periods):
        by_date = {r.date: r for r in p.days}
        for j, d in enumerate(days):
            r = by_date.get(d.isoformat())
            cells.append(
                Cell(
                    x=label_width + j * cell,
                    y=20 + i * cell,
                    date=d.isoformat(),
                    day=d.day,
                    level=heat_level(r.active_s if r else None),
                    user_key=p.user_key,
                    row=r,
                )
            )
    return MonthStrip(
        days=days,
        label_width=label_width,
        cell=cell,
        width=label_width + len(days) * cell + 4,
        height=20 + max(1, len(periods)) * cell + 4,
        cells=cells,
        users=[p.user_key for p in periods],
    )


class MonthCalendar(msgspec.Struct):
    """One user's month as a calendar (Monday first): a square per day, coloured by active time."""

    width: int
    height: int
    cell: int
    weekdays: list[str]
    cells: list[Cell]


def month_calendar(rows: Sequence[DayRow], first: date, user_key: str, cell: int = 64) -> MonthCalendar:
    by_date = {r.date: r for r in rows}
    n = calendar.monthrange(first.year, first.month)[1]
    lead = first.weekday()
    cells = []
    for i in range(n):
        d = first + timedelta(days=i)
        pos = lead + i
        r = by_date.get(d.isoformat())
        cells.append(
            Cell(
                x=(pos % 7) * cell,
                y=20 + (pos // 7) * cell,
                date=d.isoformat(),
                day=d.day,
                level=heat_level(r.active_s if r else None),
                user_key=user_key,
                row=r,
            )
        )
    weeks = (lead + n + 6) // 7
    return MonthCalendar(
        width=7 * cell,
        height=20 + weeks * cell,
        cell=cell,
        weekdays=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        cells=cells,
    )


class RowBar(msgspec.Struct):
    """A day row's stacked bar (active, idle, locked) for the overview table, on one scale for every row."""

    width: int
    hours: int
    segments: list[Segment]


def row_bars(rows: Sequence[DayRow], width: int = 120) -> dict[str, RowBar]:
    """Per user key, a stacked bar of ``width`` pixels for ``hours`` (the longest presence, at least 8 h)."""
    hours = scale_hours(max((r.presence_s for r in rows), default=0))
    px = width / (hours * 3600)
    return {
        r.user_key: RowBar(width=width, hours=hours, segments=_stack(r, 0, 2, px, 12, True)) for r in rows
    }
