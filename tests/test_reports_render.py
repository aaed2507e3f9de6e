"""Text rendering of reports: hours:minutes, 24:00 ends, aligned tables, CSV header, JSON times."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from reports import render
from reports.model import AppUsage, DayRow

BERLIN = ZoneInfo("Europe/Berlin")


def row(date: str, active: int, last: datetime | None) -> DayRow:
    return DayRow(
        user_key="corp\\alice",
        date=date,
        tz="Europe/Berlin",
        active_s=active,
        idle_s=60,
        locked_s=0,
        presence_s=active + 60,
        first_activity=datetime(2026, 3, 28, 22, tzinfo=BERLIN) if last else None,
        first_logon=None,
        last_activity=last,
    )


def test_hours_minutes_and_midnight_end() -> None:
    assert render.hm(0) == "0:00"
    assert render.hm(29) == "0:00"
    assert render.hm(30) == "0:01"
    assert render.hm(7200 + 45 * 60) == "2:45"
    assert render.hm(90000) == "25:00"
    midnight = datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN)
    assert render.clock_end(midnight, "2026-03-28") == "24:00"
    assert render.clock_end(midnight, "2026-03-29") == "00:00"
    assert render.clock(None) == "-"


def test_day_table_csv_json() -> None:
    rows = [row("2026-03-28", 7200, datetime(2026, 3, 29, 0, 0, tzinfo=BERLIN)), row("2026-03-29", 5, None)]
    lines = render.days(rows, "table").splitlines()
    assert len({len(line) for line in lines[:3]}) == 1  # header, rule and rows aligned
    assert lines[2].split() == [
        "corp\\alice",
        "2026-03-28",
        "2:00",
        "0:01",
        "0:00",
        "2:01",
        "-",
        "22:00",
        "24:00",
    ]
    assert lines[3].split()[-3:] == ["-", "-", "-"]
    parsed = list(csv.DictReader(io.StringIO(render.days(rows, "csv"))))
    assert parsed[0]["active_s"] == "7200" and parsed[0]["last_activity"] == "2026-03-29T00:00:00+01:00"
    assert parsed[1]["first_activity"] == ""
    doc = json.loads(render.days(rows, "json"))
    assert doc[0]["first_activity"] == "2026-03-28T22:00:00+01:00" and doc[1]["last_activity"] is None
    assert render.days([], "table") == "no data"
    assert render.days([], "json").strip() == "[]"


def test_apps_table_shows_url_column_only_when_present() -> None:
    no_urls = [AppUsage(user_key=None, app="firefox", domain="example.org", url=None, focus_s=600.0)]
    assert "url" not in render.apps(no_urls, "table").splitlines()[0].split()
    assert "(everyone)" in render.apps(no_urls, "table")
    urls = [
        AppUsage(user_key="u", app="firefox", domain="example.org", url="https://example.org/a", focus_s=60)
    ]
    assert "https://example.org/a" in render.apps(urls, "table")
