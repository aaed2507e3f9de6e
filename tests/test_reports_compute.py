"""Report arithmetic (reports.compute, reports.apps): local days across midnight and DST, sums, focus time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reports.apps import focus_usage
from reports.compute import (
    day_rows,
    day_start,
    iso_week,
    local_date,
    month,
    period_rows,
    split_session,
    timeline,
    whole_seconds,
)
from reports.model import DayRow, LogonAt, SessionSpan, UiFocusEvent

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
ALICE = "corp\\alice"
BOB = "corp\\bob"


def z(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, ms: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=UTC)


def span(user: str, kind: str, reason: str | None, start: datetime, end: datetime, tz: str) -> SessionSpan:
    return SessionSpan(user_key=user, kind=kind, reason=reason, start=start, end=end, tz=tz)


# Alice, Berlin, around the spring change of 2026-03-29 (02:00 CET -> 03:00 CEST; that day is 23 h).
ALICE_SPRING = [
    span(ALICE, "active", None, z(2026, 3, 28, 21), z(2026, 3, 29, 0, 30), BERLIN),  # 22:00 -> 01:30 local
    span(ALICE, "inactive", "idle", z(2026, 3, 29, 0, 30), z(2026, 3, 29, 1, 30), BERLIN),  # 01:30 -> 03:30
    span(ALICE, "inactive", "locked", z(2026, 3, 29, 1, 30), z(2026, 3, 30, 6), BERLIN),  # -> 03-30 08:00
    span(ALICE, "active", None, z(2026, 3, 30, 6), z(2026, 3, 30, 7), BERLIN),  # 08:00 -> 09:00
    span(ALICE, "active", None, z(2026, 3, 30, 7, 30), z(2026, 3, 30, 7, 30), BERLIN),  # one input 09:30
]
ALICE_LOGONS = [
    LogonAt(user_key=ALICE, ts=z(2026, 3, 28, 20, 55), tz=BERLIN),  # 21:55 local, 03-28
    LogonAt(user_key=ALICE, ts=z(2026, 3, 28, 22, 10), tz=BERLIN),  # 23:10 local, later the same day
    LogonAt(user_key=ALICE, ts=z(2026, 3, 29, 23, 30), tz=BERLIN),  # 01:30 CEST on 03-30
]
# Bob, New York, around the spring change of 2026-03-08 (02:00 EST -> 03:00 EDT; that day is 23 h).
BOB_SPRING = [
    span(BOB, "active", None, z(2026, 3, 8, 4), z(2026, 3, 8, 8), NEW_YORK),  # 03-07 23:00 -> 03-08 04:00
    span(BOB, "inactive", "idle", z(2026, 3, 8, 8), z(2026, 3, 9, 4, 30), NEW_YORK),  # -> 03-09 00:30
]
# Bob, New York, autumn change of 2026-11-01 (02:00 EDT -> 01:00 EST; that day is 25 h).
BOB_AUTUMN = [
    span(
        BOB, "inactive", "locked", z(2026, 11, 1, 3), z(2026, 11, 2, 6), NEW_YORK
    ),  # 10-31 23:00 -> 11-02 01:00
]


def by_key(rows: list[DayRow]) -> dict[tuple[str, str], DayRow]:
    return {(r.user_key, r.date): r for r in rows}


def test_day_boundaries_follow_dst() -> None:
    berlin, ny = ZoneInfo(BERLIN), ZoneInfo(NEW_YORK)
    assert day_start(date(2026, 3, 29), berlin) == z(2026, 3, 28, 23)
    assert day_start(date(2026, 3, 30), berlin) - day_start(date(2026, 3, 29), berlin) == timedelta(hours=23)
    assert day_start(date(2026, 10, 26), berlin) - day_start(date(2026, 10, 25), berlin) == timedelta(
        hours=25
    )
    assert day_start(date(2026, 3, 9), ny) - day_start(date(2026, 3, 8), ny) == timedelta(hours=23)
    assert day_start(date(2026, 11, 2), ny) - day_start(date(2026, 11, 1), ny) == timedelta(hours=25)
    assert local_date(z(2026, 3, 28, 22, 59, 59, 999), berlin) == date(2026, 3, 28)
    assert local_date(z(2026, 3, 28, 23), berlin) == date(2026, 3, 29)


def test_split_at_local_midnight_across_spring_change() -> None:
    pieces = split_session(ALICE_SPRING[2])
    assert [(p.date, p.start, p.end) for p in pieces] == [
        (date(2026, 3, 29), z(2026, 3, 29, 1, 30), z(2026, 3, 29, 22)),
        (date(2026, 3, 30), z(2026, 3, 29, 22), z(2026, 3, 30, 6)),
    ]
    assert [p.ms for p in pieces] == [73_800_000, 28_800_000]
    assert split_session(ALICE_SPRING[2], date(2026, 3, 30), date(2026, 3, 30))[0].ms == 28_800_000
    assert split_session(ALICE_SPRING[2], date(2026, 3, 31), date(2026, 4, 2)) == []


def test_day_rows_berlin_spring() -> None:
    rows = by_key(day_rows(ALICE_SPRING, ALICE_LOGONS, date(2026, 3, 28), date(2026, 3, 30)))
    berlin = ZoneInfo(BERLIN)
    d28, d29, d30 = rows[(ALICE, "2026-03-28")], rows[(ALICE, "2026-03-29")], rows[(ALICE, "2026-03-30")]
    # 03-28: 22:00 -> 24:00 active.
    assert (d28.active_s, d28.idle_s, d28.locked_s, d28.presence_s) == (7200, 0, 0, 7200)
    assert d28.first_activity == datetime(2026, 3, 28, 22, tzinfo=berlin)
    assert d28.last_activity == z(2026, 3, 28, 23)  # local midnight, the end of the piece
    assert d28.first_logon == datetime(2026, 3, 28, 21, 55, tzinfo=berlin)
    # 03-29 is 23 h long: 1.5 h active, 1 h idle across the change, 20.5 h locked.
    assert (d29.active_s, d29.idle_s, d29.locked_s, d29.presence_s) == (5400, 3600, 73800, 82800)
    assert d29.first_activity == datetime(2026, 3, 29, 0, 0, tzinfo=berlin)
    assert d29.last_activity == datetime(2026, 3, 29, 1, 30, tzinfo=berlin)
    assert d29.first_logon is None
    # 03-30: 8 h locked, 1 h active, one isolated input at 09:30 local.
    assert (d30.active_s, d30.idle_s, d30.locked_s, d30.presence_s) == (3600, 0, 28800, 32400)
    assert d30.first_activity == datetime(2026, 3, 30, 8, tzinfo=berlin)
    assert d30.last_activity == datetime(2026, 3, 30, 9, 30, tzinfo=berlin)
    assert d30.first_logon == datetime(2026, 3, 30, 1, 30, tzinfo=berlin)
    assert d30.first_activity is not None and d30.first_activity.utcoffset() == timedelta(hours=2)
    assert d28.tz == BERLIN


def test_day_rows_new_york_spring_and_autumn() -> None:
    rows = by_key(day_rows(BOB_SPRING + BOB_AUTUMN, [], date(2026, 3, 1), date(2026, 11, 30)))
    ny = ZoneInfo(NEW_YORK)
    d7, d8, d9 = rows[(BOB, "2026-03-07")], rows[(BOB, "2026-03-08")], rows[(BOB, "2026-03-09")]
    assert (d7.active_s, d7.idle_s, d7.presence_s) == (3600, 0, 3600)
    # 03-08 is 23 h: 00:00 -> 04:00 EDT is only 3 h of active time, then 20 h idle.
    assert (d8.active_s, d8.idle_s, d8.locked_s, d8.presence_s) == (10800, 72000, 0, 82800)
    assert d8.first_activity == datetime(2026, 3, 8, 0, 0, tzinfo=ny)
    assert d8.last_activity == datetime(2026, 3, 8, 4, 0, tzinfo=ny)
    assert d8.last_activity.utcoffset() == timedelta(hours=-4)
    assert (d9.idle_s, d9.presence_s) == (1800, 1800)
    # 11-01 is 25 h, locked all day.
    assert rows[(BOB, "2026-10-31")].locked_s == 3600
    assert rows[(BOB, "2026-11-01")].locked_s == 90000
    assert rows[(BOB, "2026-11-02")].locked_s == 3600
    assert rows[(BOB, "2026-11-01")].first_activity is None


def test_same_instant_two_zones_two_dates() -> None:
    # 2026-03-08 03:30Z is 03-08 04:30 in Berlin but 03-07 22:30 in New York.
    sessions = [
        span(ALICE, "active", None, z(2026, 3, 8, 3, 30), z(2026, 3, 8, 4), BERLIN),
        span(BOB, "active", None, z(2026, 3, 8, 3, 30), z(2026, 3, 8, 4), NEW_YORK),
    ]
    rows = day_rows(sessions, [], date(2026, 3, 7), date(2026, 3, 8))
    assert [(r.user_key, r.date, r.active_s) for r in rows] == [
        (ALICE, "2026-03-08", 1800),
        (BOB, "2026-03-07", 1800),
    ]


def test_week_and_month_are_sums_of_days() -> None:
    label, monday, sunday = iso_week(date(2026, 3, 28))
    assert (label, monday, sunday) == ("2026-W13", date(2026, 3, 23), date(2026, 3, 29))
    assert iso_week(date(2027, 1, 1))[0] == "2026-W53"
    assert month(date(2026, 2, 14)) == ("2026-02", date(2026, 2, 1), date(2026, 2, 28))
    days = day_rows(ALICE_SPRING, ALICE_LOGONS, monday, sunday)
    (week,) = period_rows(days, label, monday, sunday)
    assert (week.active_s, week.idle_s, week.locked_s, week.presence_s) == (12600, 3600, 73800, 90000)
    assert [d.date for d in week.days] == ["2026-03-28", "2026-03-29"]
    label, first, last = month(date(2026, 3, 5))
    (mar,) = period_rows(day_rows(ALICE_SPRING, ALICE_LOGONS, first, last), label, first, last)
    assert (mar.period, mar.active_s, mar.idle_s, mar.locked_s, mar.presence_s) == (
        "2026-03",
        16200,
        3600,
        102600,
        122400,
    )


def test_whole_seconds_add_up() -> None:
    assert whole_seconds({"active": 1500, "idle": 500, "locked": 0}) == (2, 0, 0)
    assert whole_seconds({"active": 1400, "idle": 1400, "locked": 200}) == (2, 1, 0)
    assert whole_seconds({"active": 1400, "idle": 1600, "locked": 0}) == (1, 2, 0)
    assert whole_seconds({"active": 1499, "idle": 0, "locked": 0}) == (1, 0, 0)
    assert whole_seconds({"active": 400, "idle": 400, "locked": 400}) == (1, 0, 0)
    rows = day_rows(
        [
            span(ALICE, "active", None, z(2026, 5, 4, 8), z(2026, 5, 4, 8, 0, 1, 400), "UTC"),
            span(ALICE, "inactive", "idle", z(2026, 5, 4, 8, 0, 1, 400), z(2026, 5, 4, 8, 0, 3), "UTC"),
        ],
        [],
        date(2026, 5, 4),
        date(2026, 5, 4),
    )
    assert (rows[0].active_s, rows[0].idle_s, rows[0].presence_s) == (1, 2, 3)


def test_unknown_zone_is_utc_and_timeline_is_clipped() -> None:
    rows = day_rows(
        [span(ALICE, "active", None, z(2026, 5, 4, 23), z(2026, 5, 5, 1), "Mars/Olympus")],
        [],
        date(2026, 5, 4),
        date(2026, 5, 5),
    )
    assert [(r.date, r.active_s) for r in rows] == [("2026-05-04", 3600), ("2026-05-05", 3600)]
    items = timeline(ALICE_SPRING + BOB_SPRING, ALICE, date(2026, 3, 29))
    berlin = ZoneInfo(BERLIN)
    assert [(i.kind, i.reason, i.start, i.end, i.duration_s) for i in items] == [
        (
            "active",
            None,
            datetime(2026, 3, 29, 0, tzinfo=berlin),
            datetime(2026, 3, 29, 1, 30, tzinfo=berlin),
            5400.0,
        ),
        (
            "inactive",
            "idle",
            datetime(2026, 3, 29, 1, 30, tzinfo=berlin),
            datetime(2026, 3, 29, 3, 30, tzinfo=berlin),
            3600.0,
        ),
        (
            "inactive",
            "locked",
            datetime(2026, 3, 29, 3, 30, tzinfo=berlin),
            datetime(2026, 3, 30, 0, 0, tzinfo=berlin),
            73800.0,
        ),
    ]


def test_focus_only_inside_active_sessions() -> None:
    sessions = [
        span(ALICE, "active", None, z(2026, 5, 4, 9), z(2026, 5, 4, 10), "UTC"),
        span(ALICE, "inactive", "idle", z(2026, 5, 4, 10), z(2026, 5, 4, 11), "UTC"),
        span(ALICE, "active", None, z(2026, 5, 4, 11), z(2026, 5, 4, 11, 30), "UTC"),
    ]

    def ev(ts: datetime, app: str, domain: str = "", url: str | None = None) -> UiFocusEvent:
        return UiFocusEvent(user_key=ALICE, ts=ts, app=app, domain=domain, url=url)

    events = [
        ev(z(2026, 5, 4, 9), "code"),  # 09:00 -> 09:40
        ev(z(2026, 5, 4, 9, 40), "firefox", "example.org", "https://example.org/a"),  # 09:40 -> 10:00 (cap)
        ev(z(2026, 5, 4, 10, 30), "mail"),  # idle time: no focus
        ev(z(2026, 5, 4, 11), "firefox", "example.org", "https://example.org/b"),  # 11:00 -> 11:30 (end)
    ]
    rows = focus_usage(events, sessions, date(2026, 5, 4), date(2026, 5, 4))
    assert [(r.user_key, r.app, r.domain, r.url, r.focus_s) for r in rows] == [
        (ALICE, "firefox", "example.org", None, 3000.0),
        (ALICE, "code", "", None, 2400.0),
    ]
    with_urls = focus_usage(
        events, sessions, date(2026, 5, 4), date(2026, 5, 4), show_urls=True, per_user=False
    )
    assert {(r.user_key, r.url, r.focus_s) for r in with_urls} == {
        (None, "https://example.org/b", 1800.0),
        (None, None, 2400.0),
        (None, "https://example.org/a", 1200.0),
    }
    assert focus_usage(events, sessions, date(2026, 5, 5), date(2026, 5, 6)) == []


# ---- property: totals add up --------------------------------------------------------------------------

ZONES = ["UTC", BERLIN, NEW_YORK, "Asia/Kolkata", "Pacific/Kiritimati", "Australia/Lord_Howe"]
BASE = z(2026, 3, 1)


@st.composite
def session_lists(draw: st.DrawFn) -> list[SessionSpan]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        start = BASE + timedelta(milliseconds=draw(st.integers(0, 62 * 86_400_000)))
        length = timedelta(milliseconds=draw(st.integers(0, 3 * 86_400_000)))
        kind, reason = draw(st.sampled_from([("active", None), ("inactive", "idle"), ("inactive", "locked")]))
        user = draw(st.sampled_from([ALICE, BOB]))
        out.append(span(user, kind, reason, start, start + length, draw(st.sampled_from(ZONES))))
    return out


@settings(max_examples=150, deadline=None)
@given(session_lists(), st.dates(date(2026, 2, 25), date(2026, 5, 10)))
def test_property_rows_add_up(sessions: list[SessionSpan], d: date) -> None:
    for label, first, last in (iso_week(d), month(d)):
        days = day_rows(sessions, [], first, last)
        for r in days:
            assert r.active_s + r.idle_s + r.locked_s == r.presence_s
            assert first.isoformat() <= r.date <= last.isoformat()
            assert min(r.active_s, r.idle_s, r.locked_s) >= 0
        periods = period_rows(days, label, first, last)
        assert sorted(p.user_key for p in periods) == sorted({r.user_key for r in days})
        for p in periods:
            for f in ("active_s", "idle_s", "locked_s", "presence_s"):
                assert getattr(p, f) == sum(getattr(r, f) for r in p.days)
            assert p.active_s + p.idle_s + p.locked_s == p.presence_s
        # nothing is lost or counted twice: each day is the exact sum rounded (within 0.5 s)
        exact_ms = sum(piece.ms for s in sessions for piece in split_session(s, first, last))
        assert abs(sum(r.presence_s for r in days) * 1000 - exact_ms) <= 500 * max(1, len(days))


@st.composite
def ui_events(draw: st.DrawFn) -> list[UiFocusEvent]:
    out = []
    for _ in range(draw(st.integers(0, 30))):
        ts = BASE + timedelta(milliseconds=draw(st.integers(0, 10 * 86_400_000)))
        app = draw(st.sampled_from(["code", "firefox", "mail"]))
        out.append(
            UiFocusEvent(
                user_key=draw(st.sampled_from([ALICE, BOB])),
                ts=ts,
                app=app,
                domain="example.org" if app == "firefox" else "",
                url="https://example.org/secret" if app == "firefox" else None,
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(session_lists(), ui_events(), st.dates(date(2026, 2, 28), date(2026, 3, 12)), st.integers(0, 6))
def test_property_focus_within_active_time(
    sessions: list[SessionSpan], events: list[UiFocusEvent], first: date, extra_days: int
) -> None:
    last = first + timedelta(days=extra_days)
    rows = focus_usage(events, sessions, first, last)
    assert all(r.url is None and r.focus_s > 0 for r in rows)
    for user in (ALICE, BOB):
        active_ms = sum(
            p.ms
            for s in sessions
            if s.user_key == user and s.kind == "active"
            for p in split_session(s, first, last)
        )
        # focus intervals are disjoint and each lies inside an active session: never more than active time
        assert sum(r.focus_s for r in rows if r.user_key == user) * 1000 <= active_ms + 1e-3
    everyone = focus_usage(events, sessions, first, last, show_urls=True, per_user=False)
    assert abs(sum(r.focus_s for r in everyone) - sum(r.focus_s for r in rows)) < 1e-3
    assert all(r.user_key is None for r in everyone)
