"""The demo's pure parts: which day it simulates, the users' local days (DST included), the fleet of one
target date, the check of its own counts, and the Prometheus configuration it writes. No services."""

from __future__ import annotations

import io
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from agent.simulator import (
    DEMO_ZONES,
    Fleet,
    last_complete_workday,
    local_day_window,
    make_users,
    write_jsonl,
)
from common.settings import SettingsError
from devstack.demo import choose_day, load_options
from devstack.demo_check import StageCounts, problem
from devstack.prometheus import RULES_DIR, prometheus_config, rule_files
from proto.codec import read_jsonl
from proto.events import Envelope

ZONES = DEMO_ZONES
REPO = Path(__file__).resolve().parents[1]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---- the day ----------------------------------------------------------------------------------------


def test_the_issue_hours_give_the_previous_complete_working_day() -> None:
    # 05:20 and 05:24 UTC on a Saturday (the issue's failing runs) and the evening: Friday, all of it
    for t in ("2026-11-28T05:20", "2026-11-28T05:24", "2026-11-28T18:00"):
        assert last_complete_workday(utc(t), ZONES) == date(2026, 11, 27)
    # Wednesday before 07:00 UTC: Tuesday is not over in New York until 05:00 UTC
    assert last_complete_workday(utc("2026-11-25T04:59"), ZONES) == date(2026, 11, 23)
    assert last_complete_workday(utc("2026-11-25T05:00"), ZONES) == date(2026, 11, 24)
    # Monday morning: back over the weekend to Friday
    assert last_complete_workday(utc("2026-11-30T06:00"), ZONES) == date(2026, 11, 27)


def test_same_day_at_every_hour_until_the_westernmost_zone_finishes_the_next_working_day() -> None:
    # Saturday 00:00 UTC .. Tuesday 04:59 UTC: Friday every minute (Monday ends in New York at 05:00)
    t, end = utc("2026-11-28T05:00"), utc("2026-12-01T05:00")
    while t < end:
        assert last_complete_workday(t, ZONES) == date(2026, 11, 27), t
        t += timedelta(minutes=7)
    assert last_complete_workday(end, ZONES) == date(2026, 11, 30)


@pytest.mark.parametrize(
    "zones",
    [
        DEMO_ZONES,
        ("Pacific/Kiritimati", "Pacific/Pago_Pago"),  # +14 and -11: a date is over 25 h apart
        ("Europe/London",),
        ("America/Los_Angeles", "Australia/Sydney", "Asia/Kolkata"),
    ],
)
def test_every_hour_of_a_year_gives_the_latest_weekday_over_in_every_zone(zones: tuple[str, ...]) -> None:
    t = utc("2026-01-01T00:30")
    while t.year == 2026:
        d = last_complete_workday(t, zones)
        assert d.weekday() < 5
        assert local_day_window(d, zones)[1] <= t, "the whole day is over in every zone"
        later = d + timedelta(days=1)
        while later <= t.date() + timedelta(days=1):
            if later.weekday() < 5:
                assert local_day_window(later, zones)[1] > t, f"{later} was over too at {t}"
            later += timedelta(days=1)
        t += timedelta(hours=5, minutes=13)


def test_dst_days_are_23_and_25_hours_long_in_their_zone() -> None:
    for d, zone, hours in (
        (date(2026, 3, 29), "Europe/Berlin", 23),
        (date(2026, 10, 25), "Europe/Berlin", 25),
        (date(2026, 3, 8), "America/New_York", 23),
        (date(2026, 11, 1), "America/New_York", 25),
        (date(2026, 3, 29), "Asia/Kolkata", 24),
    ):
        lo, hi = local_day_window(d, (zone,))
        assert hi - lo == timedelta(hours=hours), (d, zone)
        assert lo.astimezone(ZoneInfo(zone)).hour == 0
    lo, hi = local_day_window(date(2026, 3, 29), ZONES)
    assert lo == utc("2026-03-28T18:30")  # Kolkata's midnight (UTC+5:30)
    assert hi == utc("2026-03-30T04:00")  # New York's midnight (EDT, UTC-4)


def test_choose_day_and_settings(tmp_path: Path) -> None:
    opts = load_options(["--exit", "--users", "2", "--now", "2026-11-28T05:20Z"], env={})
    assert opts.exit and opts.users == 2 and opts.prometheus and opts.zones == DEMO_ZONES
    assert opts.now == utc("2026-11-28T05:20")
    assert choose_day(opts.now, ZONES, None) == date(2026, 11, 27)
    assert choose_day(opts.now, ZONES, date(2026, 3, 29)) == date(2026, 3, 29)
    # the same names as flags, DESKTRACE_* variables and TOML keys ([demo] table), flags winning
    toml = tmp_path / "demo.toml"
    toml.write_text('[demo]\nusers = 5\nzones = "Asia/Tokyo"\nprometheus = false\n', encoding="utf-8")
    opts = load_options(
        ["--config", str(toml), "--users", "3"], env={"DESKTRACE_DATE": "2026-03-29", "DESKTRACE_SPEED": "99"}
    )
    assert (opts.users, opts.zones, opts.prometheus) == (3, ("Asia/Tokyo",), False)
    assert (opts.date, opts.speed, opts.now) == (date(2026, 3, 29), 99.0, None)
    for argv, message in (
        (["--zones", "Europe/Berlin,Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--date", "28.11.2026"], "--date: not a date"),
        (["--now", "yesterday"], "--now: not an ISO date-time"),
        (["--users", "0"], "--users must be at least 1"),
    ):
        with pytest.raises(SettingsError, match=re.escape(message)):
            load_options(argv, env={})


# ---- the fleet of one date --------------------------------------------------------------------------


def events_of_day(d: date, users: int, zones: tuple[str, ...]) -> dict[str, list[Envelope]]:
    buf = io.BytesIO()
    write_jsonl(Fleet.for_day(make_users(users, 5, zones), d), buf)
    per_user: dict[str, list[Envelope]] = defaultdict(list)
    for _, e in read_jsonl(buf.getvalue().splitlines()):
        assert isinstance(e, Envelope)
        per_user[e.user].append(e)
    return per_user


@pytest.mark.parametrize("d", [date(2026, 11, 27), date(2026, 3, 29), date(2026, 10, 25)])
def test_every_user_works_through_the_target_date_in_their_own_zone(d: date) -> None:
    # 2026-03-29 and 2026-10-25 are Sundays with a DST change in Berlin: a given date is a working day
    per_user = events_of_day(d, 6, ZONES)
    assert len(per_user) == 6
    assert {evs[0].tz for evs in per_user.values()} == set(ZONES)
    for user, evs in per_user.items():
        zone = ZoneInfo(evs[0].tz)
        assert {e.ts.astimezone(zone).date() for e in evs} == {d}, user
        types = [e.type for e in evs]
        assert types[0] == "AgentStart" and types[-1] == "AgentStop", user
        assert "Logon" in types and "Logoff" in types
        logon = next(e.ts for e in evs if e.type == "Logon").astimezone(zone)
        logoff = next(e.ts for e in evs if e.type == "Logoff").astimezone(zone)
        assert 6.5 <= logon.hour + logon.minute / 60 <= 10.5, (user, logon)  # local wall time, DST or not
        assert timedelta(hours=6) < logoff - logon < timedelta(hours=11), user


def test_users_live_in_the_given_zones_in_turn() -> None:
    users = make_users(5, 1, ("Asia/Kolkata", "Europe/Berlin"))
    assert [u.identity.tz for u in users] == [
        "Asia/Kolkata",
        "Europe/Berlin",
        "Asia/Kolkata",
        "Europe/Berlin",
        "Asia/Kolkata",
    ]


# ---- the demo's check of its counts -------------------------------------------------------------------


def test_an_empty_fleet_is_named_not_the_sessions() -> None:
    msg = problem(StageCounts(users=12))
    assert msg is not None and "fleet produced no events" in msg and "session" not in msg


def test_the_first_stage_holding_less_is_named_with_the_counts() -> None:
    ok = StageCounts(users=3, produced=3120, sent=3120, in_kafka=3120, raw_rows=3120, sessions=41)
    assert problem(ok) is None
    assert problem(StageCounts(**{**ok.__dict__, "users_with_activity": 3})) is None
    msg = problem(StageCounts(**{**ok.__dict__, "sent": 3000}))
    assert msg is not None and "sent only 3000 of the 3120" in msg
    msg = problem(StageCounts(**{**ok.__dict__, "in_kafka": 100}))
    assert msg is not None and "raw topics hold only 100 of the 3120" in msg
    msg = problem(StageCounts(**{**ok.__dict__, "raw_rows": 3100, "deadlettered": 20}))
    assert msg is not None and "3100 raw rows of the 3120" in msg and "20 missing" in msg
    assert "dead-letter" in msg
    msg = problem(StageCounts(**{**ok.__dict__, "sessions": 0}))
    assert msg is not None and "no sessions from 3120 raw events" in msg
    msg = problem(StageCounts(**{**ok.__dict__, "users_with_activity": 2}))
    assert msg is not None and "only 2 of the 3 simulated users" in msg
    line = StageCounts(**{**ok.__dict__, "raw_rows": 7}).line()
    assert "produced by the fleet 3120" in line and "raw rows in PostgreSQL 7" in line
    assert "sessions 41" in line and "raw topics 3120" in line


# ---- Prometheus configuration -------------------------------------------------------------------------


def test_prometheus_config_has_the_docker_paths_jobs_and_the_projects_rules() -> None:
    rules = rule_files()
    assert rules and all(p.parent == RULES_DIR for p in rules)
    targets = {
        "stream": "127.0.0.1:1001",
        "sink-raw": "127.0.0.1:1002",
        "sink-sessions": "127.0.0.1:1003",
        "gateway": "127.0.0.1:1004",
    }
    mine = yaml.safe_load(prometheus_config(targets, rules))
    docker = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in mine["scrape_configs"]}
    assert set(jobs) == {j["job_name"] for j in docker["scrape_configs"]}
    assert jobs["desktrace-sink-raw"] == ["127.0.0.1:1002"]
    assert mine["rule_files"] == [str(p) for p in rules]


# ---- the simulate command's target date ----------------------------------------------------------------


def test_simulate_date_writes_each_users_local_day(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from agent.cli import main

    zones = "Asia/Kolkata,America/New_York"
    assert main(["simulate", "--users", "2", "--zones", zones, "--date", "2026-03-08", "--jsonl", "-"]) == 0
    evs = [e for _, e in read_jsonl(capsysbinary.readouterr().out.splitlines())]
    assert {e.tz for e in evs} == {"Asia/Kolkata", "America/New_York"}  # type: ignore[union-attr]
    for e in evs:
        assert isinstance(e, Envelope)
        assert e.ts.astimezone(ZoneInfo(e.tz)).date() == date(2026, 3, 8)  # a Sunday, DST in New York
    assert main(["simulate", "--date", "2026-03-08", "--start", "2026-03-08", "--jsonl", "-"]) == 2
    assert main(["simulate", "--zones", "Nowhere/Town", "--date", "last", "--jsonl", "-"]) == 2


# ---- progress display -----------------------------------------------------------------------------------


def test_progress_is_bars_on_a_terminal_and_few_plain_lines_otherwise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from devstack.demo_view import DemoView

    start, end = utc("2026-11-26T18:30"), utc("2026-11-28T05:00")
    with DemoView("plain") as view:
        assert not view.bars
        for minute in range(0, 600, 10):  # many updates within a second: one line, then the final one
            view.fleet(start + timedelta(minutes=minute), start, end, minute * 10, minute * 9)
        view.fleet(end, start, end, 7000, 7000, done=True)
        view.stored(6900, 7000, 40)
        view.stored(7000, 7000, 41, done=True)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "desktrace-demo: fleet: 0% of the day, simulated clock 2026-11-26 18:30 UTC, events sent 0 of 0",
        "desktrace-demo: fleet: 100% of the day, simulated clock 2026-11-28 05:00 UTC, "
        "events sent 7000 of 7000",
        "desktrace-demo: written: raw rows 6900 of 7000 events sent, sessions 40",
        "desktrace-demo: written: raw rows 7000 of 7000 events sent, sessions 41",
    ]
    with DemoView("bar") as view:
        assert view.bars
        view.fleet(utc("2026-11-27T12:00"), start, end, 500, 400)
        view.stored(300, 400, 5)
    out = capsys.readouterr().err
    assert "fleet" in out and "written" in out
    assert "simulated clock 2026-11-27 12:00 UTC" in out and "raw rows 300 of 400" in out
