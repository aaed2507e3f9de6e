"""Pure pieces of the pages: chart geometry, sorting, totals, times of day, CSV of a period, token and
role parsing. No services needed."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone

import pytest

from common.settings import SettingsError
from gateway import charts, views
from gateway.access import Access, match_token, parse_tokens
from reports import compute, render
from reports.model import DayRow
from reports.teams import TeamFileError, parse_team_file

BERLIN = timezone(timedelta(hours=1))


def row(
    user: str, d: str, active: int, idle: int = 0, locked: int = 0, last: datetime | None = None
) -> DayRow:
    return DayRow(
        user_key=user,
        date=d,
        tz="Europe/Berlin",
        active_s=active,
        idle_s=idle,
        locked_s=locked,
        presence_s=active + idle + locked,
        first_activity=None,
        first_logon=None,
        last_activity=last,
    )


def test_heat_levels_follow_the_active_hours() -> None:
    h = 3600
    cases = [
        (None, 0),
        (0, 0),
        (1, 1),
        (2 * h - 1, 1),
        (2 * h, 2),
        (4 * h, 3),
        (6 * h, 4),
        (8 * h, 5),
        (12 * h, 5),
    ]
    assert [charts.heat_level(s) for s, _ in cases] == [lvl for _, lvl in cases]


def test_week_grid_stacks_each_day_to_one_scale() -> None:
    monday = date(2025, 3, 10)
    days = [
        row("a", "2025-03-10", 7 * 3600, 600, 1800),
        row("a", "2025-03-12", 3600),
        row("b", "2025-03-16", 100),
    ]
    periods = compute.period_rows(days, "2025-W11", monday, monday + timedelta(days=6))
    grid = charts.week_grid(periods, monday)
    assert grid.hours == 8  # at least 8 h; the longest day is 7:40
    px = (grid.col_width - 8) / (grid.hours * 3600)  # a full column (less its margins) is `hours`
    for seg in grid.segments:  # one scale for every bar (pixels are rounded to 0.01)
        assert seg.width == pytest.approx(seg.seconds * px, abs=0.006)
    first = [s for s in grid.segments if s.user_key == "a" and s.date == "2025-03-10"]
    assert [s.kind for s in first] == ["active", "idle", "locked"]
    assert first[1].x == pytest.approx(first[0].x + first[0].width, abs=0.02)  # stacked end to end
    sunday = next(s for s in grid.segments if s.user_key == "b")
    assert sunday.x >= grid.label_width + 6 * grid.col_width and sunday.y > first[0].y  # last column, row 2


def test_day_columns_axis_ends_on_a_tick() -> None:
    days = charts.week_days(date(2025, 3, 10))
    cols = charts.day_columns([row("a", "2025-03-11", 9 * 3600, 0, 1800)], days)
    assert cols.hours == 10 and cols.ticks[-1][1] == "10 h"
    (active, locked) = cols.segments
    assert active.y + active.height == pytest.approx(cols.top + cols.plot_height)
    assert locked.y + locked.height == pytest.approx(active.y)


def test_month_calendar_starts_on_the_right_weekday() -> None:
    cal = charts.month_calendar([row("a", "2025-03-10", 3600)], date(2025, 3, 1), "a", cell=10)
    assert len(cal.cells) == 31
    assert (cal.cells[0].x, cal.cells[0].y) == (50, 20)  # 1 March 2025 is a Saturday
    assert cal.cells[9].row is not None and cal.cells[9].level == 1 and cal.cells[8].row is None
    assert cal.height == 20 + 6 * 10  # six calendar rows


def test_sort_puts_missing_values_last() -> None:
    a = row("a", "2025-03-10", 10, last=datetime(2025, 3, 10, 17, tzinfo=BERLIN))
    b = row("b", "2025-03-10", 30, last=None)
    c = row("c", "2025-03-10", 20, last=datetime(2025, 3, 10, 9, tzinfo=BERLIN))
    assert [r.user_key for r in views.sort_rows([a, b, c], "active", True)] == ["b", "c", "a"]
    assert [r.user_key for r in views.sort_rows([a, b, c], "last_activity", False)] == ["c", "a", "b"]
    assert [r.user_key for r in views.sort_rows([a, b, c], "bogus", False)] == ["a", "b", "c"]
    t = views.total([a, b, c])
    assert (t.users, t.active_s, t.presence_s) == (3, 60, 60)


def test_end_of_day_reads_24_00_everywhere() -> None:
    midnight = datetime(2025, 3, 12, 0, 0, tzinfo=BERLIN)
    assert views.clock(midnight, "2025-03-11") == "24:00"
    assert views.clock(midnight, date(2025, 3, 12)) == "00:00"
    assert views.clock(midnight, "2025-03-11") == render.clock_end(midnight, "2025-03-11")
    assert views.clock(None, "2025-03-11") == "-"


def test_period_csv_lines_add_up_to_the_period() -> None:
    monday = date(2025, 3, 10)
    days = [row("a", "2025-03-10", 100, 5, 1), row("a", "2025-03-11", 50), row("b", "2025-03-11", 7)]
    periods = compute.period_rows(days, "2025-W11", monday, monday + timedelta(days=6))
    lines = list(csv.DictReader(io.StringIO(render.period_days_csv(periods))))
    assert {"user_key", "date", "active_s", "idle_s", "locked_s", "period"} <= set(lines[0])
    for p in periods:
        mine = [r for r in lines if r["user_key"] == p.user_key]
        assert sum(int(r["active_s"]) for r in mine) == p.active_s
        assert sum(int(r["presence_s"]) for r in mine) == p.presence_s


def test_tokens_and_roles() -> None:
    tokens = parse_tokens(["bare-token", "sally:s-token"])
    assert match_token("s-token", tokens).name == "sally"  # type: ignore[union-attr]
    assert match_token("bare-token", tokens).name is None  # type: ignore[union-attr]
    assert match_token("", tokens) is None and match_token("nope", tokens) is None
    with pytest.raises(SettingsError, match="entry 1"):
        parse_tokens([":secret"])
    team_file = parse_team_file(
        '[teams]\na = ["x", "y"]\nb = ["z"]\n[roles.lead]\nrole = "lead"\nteams = ["a"]\n'
        '[roles.v]\nrole = "viewer"\nuser_key = "z"\n'
    )
    access = Access(team_file)
    assert access.scope_of("lead").users == {"x", "y"}
    assert access.scope_of("v").users == {"z"}
    assert access.scope_of("stranger").users == frozenset()
    assert access.scope_of(None).everyone  # an unnamed token
    assert Access(None).scope_of("anyone").everyone  # no team file: everyone is an admin
    with pytest.raises(TeamFileError, match="unknown field"):
        parse_team_file('[roles.v]\nrole = "viewer"\nuser_key = "z"\nteam = "a"\n')


def test_downloads_never_carry_a_spreadsheet_formula() -> None:
    from gateway.routes_api import spreadsheet_safe

    text = render.to_csv(
        ("user_key", "active_s", "n"), [('=HYPERLINK("http://x")\\bob', 5, -1), ("@x", 0, 2)]
    )
    rows = list(csv.reader(io.StringIO(spreadsheet_safe(text))))
    assert rows == [
        ["user_key", "active_s", "n"],
        ['\'=HYPERLINK("http://x")\\bob', "5", "-1"],
        ["'@x", "0", "2"],
    ]
