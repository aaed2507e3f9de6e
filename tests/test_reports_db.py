"""Reports against a real PostgreSQL: the CLI (a subprocess) and ReportService over rows inserted with SQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from proto.sessions import session_id
from reports.service import ReportService
from sinks.migrations import apply_migrations

pytestmark = pytest.mark.postgres

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
ALICE = "corp\\alice"
BOB = "corp\\bob"
LEGACY = "shop\\till1"
REPORT = str(Path(sys.executable).parent / "desktrace-report")


def z(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


# (user, kind, reason, start, end, tz)
SESSIONS = [
    # Alice in Berlin around the spring change of 2026-03-29 (a 23 h local day).
    (ALICE, "active", None, z(2026, 3, 28, 21), z(2026, 3, 29, 0, 30), BERLIN),  # 22:00 -> 01:30 local
    (ALICE, "inactive", "idle", z(2026, 3, 29, 0, 30), z(2026, 3, 29, 1, 30), BERLIN),  # 01:30 -> 03:30
    (ALICE, "inactive", "locked", z(2026, 3, 29, 1, 30), z(2026, 3, 29, 7), BERLIN),  # 03:30 -> 09:00
    (ALICE, "active", None, z(2026, 3, 29, 7), z(2026, 3, 29, 8), BERLIN),  # 09:00 -> 10:00
    (ALICE, "inactive", "idle", z(2026, 3, 29, 8), z(2026, 3, 29, 9), BERLIN),  # 10:00 -> 11:00
    (ALICE, "active", None, z(2026, 3, 29, 9), z(2026, 3, 29, 9, 30), BERLIN),  # 11:00 -> 11:30
    # Bob in New York: 2026-03-28 evening local is 2026-03-29 UTC; it must stay on 03-28.
    (BOB, "active", None, z(2026, 3, 29, 1), z(2026, 3, 29, 3), NEW_YORK),  # 03-28 21:00 -> 23:00 EDT
    (BOB, "inactive", "idle", z(2026, 3, 29, 3), z(2026, 3, 29, 4, 30), NEW_YORK),  # 23:00 -> 00:30
    (BOB, "active", None, z(2026, 3, 29, 13), z(2026, 3, 29, 14), NEW_YORK),  # 03-29 09:00 -> 10:00
]


def ev(
    user: str, seq: int, ts: datetime, type_: str, tz: str, app: str = "", url: str = ""
) -> tuple[object, ...]:
    domain, login = user.split("\\")
    url_domain = url.split("/")[2] if url else None
    details = json.dumps({"title": f"{app} window", "url": url} if url else {"title": f"{app} window"})
    presence = type_ in ("Logon", "StateChange")
    category = "presence" if presence else "hid" if type_.startswith("Hardware") else "ui"
    return (
        f"agent-{login}",
        seq,
        ts,
        type_,
        category,
        "hardware",
        user,
        login,
        domain,
        "pc1",
        domain,
        tz,
        0,
        "1.0",
        app or None,
        url_domain,
        details,
    )


EVENTS = [
    ev(ALICE, 1, z(2026, 3, 28, 20, 58), "Logon", BERLIN),  # 21:58 local, 03-28
    ev(ALICE, 2, z(2026, 3, 29, 6, 55), "Logon", BERLIN),  # 08:55 CEST, 03-29
    ev(
        ALICE,
        3,
        z(2026, 3, 29, 7),
        "WindowSwitch",
        BERLIN,
        "firefox",
        "https://intranet.example.com/hr/p?id=7",
    ),
    ev(ALICE, 4, z(2026, 3, 29, 7, 40), "WindowSwitch", BERLIN, "code"),  # 07:40 -> 08:00 (end of active)
    ev(
        ALICE, 5, z(2026, 3, 29, 8, 30), "WindowUpdate", BERLIN, "firefox", "https://news.example.org/x"
    ),  # idle
    ev(ALICE, 6, z(2026, 3, 29, 9, 10), "WindowSwitch", BERLIN, "firefox", "https://news.example.org/y"),
    ev(ALICE, 7, z(2026, 3, 29, 9, 10), "HardwareMouseClick", BERLIN, "firefox"),  # not a UI event
    ev(BOB, 1, z(2026, 3, 29, 0, 59), "Logon", NEW_YORK),  # 03-28 20:59 EDT
    # A legacy client's reports (no Logon event): its first report of a local day is the first logon.
    ev(LEGACY, 1, z(2026, 3, 29, 6, 30), "StateChange", BERLIN),  # 08:30 CEST, 03-29
    ev(LEGACY, 2, z(2026, 3, 29, 10), "StateChange", BERLIN),
    ev(LEGACY, 3, z(2026, 3, 28, 22, 50), "StateChange", BERLIN),  # 23:50 CET: still 03-28
]


async def load_fixture(dsn: str) -> None:
    await apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for day in sorted({ts.date() for e in EVENTS if isinstance(ts := e[2], datetime)}):
            await conn.execute("SELECT raw_events_ensure_partition($1::date)", day)
        await conn.executemany(
            "INSERT INTO sessions (session_id, user_key, kind, reason, started_at, ended_at, duration_s,"
            " hosts, tz, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())",
            [
                (session_id(u, k, s), u, k, r, s, e, (e - s).total_seconds(), ["pc1"], tz)
                for u, k, r, s, e, tz in SESSIONS
            ],
        )
        await conn.executemany(
            'INSERT INTO raw_events (agent_id, seq, ts, type, category, input, user_key, "user", domain,'
            " host, host_domain, tz, utc_offset_min, agent_version, app, url_domain, details) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb)",
            EVENTS,
        )
    finally:
        await conn.close()


@pytest.fixture
async def service(fresh_pg_dsn: str) -> AsyncIterator[ReportService]:
    await load_fixture(fresh_pg_dsn)
    pool = await asyncpg.create_pool(fresh_pg_dsn, min_size=1, max_size=2)
    try:
        yield ReportService(pool)
    finally:
        await pool.close()


def run_report(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESKTRACE_PG_DSN": dsn}
    return subprocess.run([REPORT, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_day_json(fresh_pg_dsn: str) -> None:
    asyncio.run(load_fixture(fresh_pg_dsn))
    out = run_report(fresh_pg_dsn, "day", "--date", "2026-03-29", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["user_key"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {ALICE, BOB, LEGACY}
    assert rows[LEGACY]["first_logon"] == "2026-03-29T08:30:00+02:00"  # not 23:50 of the day before
    a, b = rows[ALICE], rows[BOB]
    assert a["date"] == "2026-03-29" and a["tz"] == BERLIN
    # 00:00-01:30 + 09:00-10:00 + 11:00-11:30 active; 01:30-03:30 + 10:00-11:00 idle; 03:30-09:00 locked.
    assert (a["active_s"], a["idle_s"], a["locked_s"], a["presence_s"]) == (10800, 7200, 19800, 37800)
    assert datetime.fromisoformat(a["first_activity"]) == datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo(BERLIN))
    assert a["first_activity"].endswith("+01:00")
    assert a["last_activity"] == "2026-03-29T11:30:00+02:00"
    assert a["first_logon"] == "2026-03-29T08:55:00+02:00"
    # Bob's 03-29 (New York) is only the 00:00-00:30 idle tail and 09:00-10:00 active.
    assert (b["active_s"], b["idle_s"], b["locked_s"], b["presence_s"]) == (3600, 1800, 0, 5400)
    assert b["first_activity"] == "2026-03-29T09:00:00-04:00"
    assert b["first_logon"] is None

    one = run_report(fresh_pg_dsn, "day", "--date", "2026-03-28", "--user", BOB, "--format", "json")
    assert one.returncode == 0, one.stderr
    (b28,) = json.loads(one.stdout)
    assert (b28["user_key"], b28["date"], b28["active_s"], b28["idle_s"]) == (BOB, "2026-03-28", 7200, 3600)
    assert b28["first_logon"] == "2026-03-28T20:59:00-04:00"

    table = run_report(fresh_pg_dsn, "day", "--date", "2026-03-29")
    assert table.returncode == 0, table.stderr
    assert "corp\\alice  2026-03-29    3:00" in table.stdout
    as_csv = run_report(fresh_pg_dsn, "week", "--date", "2026-03-25", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    week = {r["user_key"]: r for r in csv.DictReader(io.StringIO(as_csv.stdout))}
    assert week[ALICE]["period"] == "2026-W13"
    assert int(week[ALICE]["active_s"]) == 7200 + 10800
    assert int(week[BOB]["presence_s"]) == 10800 + 5400


def test_cli_clear_errors(fresh_pg_dsn: str) -> None:
    missing = run_report(fresh_pg_dsn, "day", "--date", "2026-03-29", "--format", "json")
    assert missing.returncode == 2
    assert "desktrace-sink migrate" in missing.stderr
    assert missing.stdout == ""
    env = {k: v for k, v in os.environ.items() if k not in ("DESKTRACE_PG_DSN", "DESKTRACE_CONFIG")}
    no_dsn = subprocess.run([REPORT, "day"], env=env, capture_output=True, text=True, timeout=60)
    assert no_dsn.returncode == 2
    assert "DESKTRACE_PG_DSN" in no_dsn.stderr


async def test_service_days_weeks_months(service: ReportService) -> None:
    rows = await service.days(date(2026, 3, 28), date(2026, 3, 29))
    legacy = [(r.date, r.presence_s, r.first_logon) for r in rows if r.user_key == LEGACY]
    berlin = ZoneInfo(BERLIN)
    assert legacy == [  # report days with no session yet: a row each, the first report as first logon
        ("2026-03-28", 0, datetime(2026, 3, 28, 23, 50, tzinfo=berlin)),
        ("2026-03-29", 0, datetime(2026, 3, 29, 8, 30, tzinfo=berlin)),
    ]
    rows = [r for r in rows if r.user_key != LEGACY]
    assert [(r.user_key, r.date, r.active_s, r.idle_s, r.locked_s) for r in rows] == [
        (ALICE, "2026-03-28", 7200, 0, 0),
        (ALICE, "2026-03-29", 10800, 7200, 19800),
        (BOB, "2026-03-28", 7200, 3600, 0),
        (BOB, "2026-03-29", 3600, 1800, 0),
    ]
    assert [r.user_key for r in await service.day(date(2026, 3, 29), ALICE)] == [ALICE]
    (week,) = await service.week(date(2026, 3, 29), ALICE)
    assert (week.period, week.start, week.end) == ("2026-W13", date(2026, 3, 23), date(2026, 3, 29))
    assert (week.active_s, week.presence_s) == (18000, 7200 + 37800)
    months = await service.month(date(2026, 3, 1))
    assert [(m.user_key, m.period, m.presence_s, len(m.days)) for m in months] == [
        (ALICE, "2026-03", 45000, 2),
        (BOB, "2026-03", 16200, 2),
        (LEGACY, "2026-03", 0, 2),
    ]
    assert await service.users() == [ALICE, BOB]
    assert await service.day(date(2026, 4, 2)) == []


async def test_service_timeline(service: ReportService) -> None:
    items = await service.timeline(BOB, date(2026, 3, 28))
    ny = ZoneInfo(NEW_YORK)
    assert [(i.kind, i.reason, i.start, i.end, i.duration_s) for i in items] == [
        ("active", None, datetime(2026, 3, 28, 21, tzinfo=ny), datetime(2026, 3, 28, 23, tzinfo=ny), 7200.0),
        (
            "inactive",
            "idle",
            datetime(2026, 3, 28, 23, tzinfo=ny),
            datetime(2026, 3, 29, 0, tzinfo=ny),
            3600.0,
        ),
    ]
    # one read for a user's page: the same row and timeline as day() and timeline()
    for user, d in ((BOB, date(2026, 3, 28)), (ALICE, date(2026, 3, 29)), (ALICE, date(2026, 4, 2))):
        rows = await service.day(d, user)
        assert await service.user_day(user, d) == (rows[0] if rows else None, await service.timeline(user, d))


async def test_apps_focus_only_in_active_sessions_and_no_urls_by_default(service: ReportService) -> None:
    rows = await service.apps(date(2026, 3, 29), date(2026, 3, 29), ALICE)
    # firefox 07:00-07:40 (intranet) + 09:10-09:30 (news; its 08:30 event lies in idle time: nothing);
    # code 07:40-08:00, capped at the end of the active session.
    assert [(r.user_key, r.app, r.domain, r.url, r.focus_s) for r in rows] == [
        (ALICE, "firefox", "intranet.example.com", None, 2400.0),
        (ALICE, "code", "", None, 1200.0),
        (ALICE, "firefox", "news.example.org", None, 1200.0),
    ]
    everyone = await service.apps(date(2026, 3, 29), date(2026, 3, 29))
    assert all(r.user_key is None and r.url is None for r in everyone)
    assert sum(r.focus_s for r in everyone) == 4800.0
    with_urls = await service.apps(date(2026, 3, 29), date(2026, 3, 29), ALICE, show_urls=True)
    assert {r.url: r.focus_s for r in with_urls} == {
        "https://intranet.example.com/hr/p?id=7": 2400.0,
        "https://news.example.org/y": 1200.0,
        None: 1200.0,
    }


def test_cli_apps_hides_urls(fresh_pg_dsn: str) -> None:
    asyncio.run(load_fixture(fresh_pg_dsn))
    out = run_report(fresh_pg_dsn, "apps", "--date", "2026-03-29", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert "https://" not in out.stdout and "hr/p" not in out.stdout
    assert {r["domain"] for r in json.loads(out.stdout)} == {"intranet.example.com", "news.example.org", ""}
    shown = run_report(fresh_pg_dsn, "apps", "--date", "2026-03-29", "--show-urls", "--format", "table")
    assert "https://intranet.example.com/hr/p?id=7" in shown.stdout
    user = run_report(fresh_pg_dsn, "user", "--date", "2026-03-29", "--user", ALICE, "--format", "json")
    assert user.returncode == 0, user.stderr
    doc = json.loads(user.stdout)
    assert doc["totals"]["active_s"] == 10800
    assert [i["kind"] for i in doc["timeline"]] == [
        "active",
        "inactive",
        "inactive",
        "active",
        "inactive",
        "active",
    ]


def test_cli_team(fresh_pg_dsn: str, tmp_path: Path) -> None:
    asyncio.run(load_fixture(fresh_pg_dsn))
    teams = tmp_path / "teams.toml"
    teams.write_text('[teams]\nberlin = ["corp\\\\alice"]\n', encoding="utf-8")
    out = run_report(
        fresh_pg_dsn,
        "week",
        "--date",
        "2026-03-25",
        "--team",
        "berlin",
        "--teams-file",
        str(teams),
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    assert [p["user_key"] for p in json.loads(out.stdout)] == [ALICE]
    bad = run_report(fresh_pg_dsn, "day", "--team", "nope", "--teams-file", str(teams))
    assert bad.returncode == 2 and "no team 'nope'" in bad.stderr
    no_file = run_report(fresh_pg_dsn, "day", "--team", "berlin")
    assert no_file.returncode == 2 and "DESKTRACE_TEAMS_FILE" in no_file.stderr
