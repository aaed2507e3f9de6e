"""The gateway's pure parts: legacy report -> event, retry memory, credentials, chart geometry."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.settings import SettingsError
from gateway import views
from gateway.auth import SessionSigner, check_login, check_token, hash_password, parse_users, verify_password
from gateway.legacy import LegacyReport, ReportRejected, RetryMemory, legacy_agent_id, to_event
from gateway.settings import parse_addr, parse_networks
from reports.model import TimelineItem

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def event(user: str = "jdoe", state: str = "working", ts: str | None = None, zone: ZoneInfo = BERLIN):
    return to_event(
        LegacyReport(user=user, state=state, ts=ts),  # type: ignore[arg-type]
        now=NOW,
        default_domain="CORP",
        zone=zone,
        host="10.0.0.5",
    )


def test_event_identity_is_deterministic() -> None:
    a = event(ts="2025-03-10T08:00:00Z")
    b = event(ts="2025-03-10T09:00:00+01:00")  # the same instant
    assert (a.agent_id, a.seq) == (b.agent_id, b.seq)
    assert a.agent_id == legacy_agent_id("corp\\jdoe")
    assert a.seq == int(datetime(2025, 3, 10, 8, tzinfo=UTC).timestamp() * 1000)
    assert event(user="CORP\\JDoe", ts="2025-03-10T08:00:00Z").agent_id == a.agent_id
    assert event(user="other\\jdoe", ts="2025-03-10T08:00:00Z").agent_id != a.agent_id


def test_naive_ts_is_read_in_the_legacy_zone() -> None:
    summer = event(ts="2024-07-01T10:00:00")
    assert summer.ts == datetime(2024, 7, 1, 8, tzinfo=UTC) and summer.utc_offset_min == 120
    assert summer.tz == "Europe/Berlin" and summer.input == "none" and summer.host == "10.0.0.5"
    assert event(ts="2024-07-01T10:00:00", zone=ZoneInfo("UTC")).ts == datetime(2024, 7, 1, 10, tzinfo=UTC)


def test_missing_ts_is_server_time_and_domain_comes_from_user() -> None:
    e = event(user="  ACME\\bob ")
    assert e.ts == NOW and e.domain == "ACME" and e.user == "bob"


@pytest.mark.parametrize(
    ("user", "ts", "reason"),
    [
        ("", None, "invalid_user"),
        ("a\\b\\c", None, "invalid_user"),
        ("x/y", None, "invalid_user"),
        ("bad\nname", None, "invalid_user"),
        ("jdoe", "not a time", "invalid_ts"),
        ("jdoe", "1999-12-31T23:59:59Z", "ts_out_of_range"),
        ("jdoe", "2025-03-12T12:00:00Z", "ts_out_of_range"),
    ],
)
def test_bad_reports_are_rejected_with_a_reason(user: str, ts: str | None, reason: str) -> None:
    with pytest.raises(ReportRejected) as info:
        event(user=user, ts=ts)
    assert info.value.reason == reason and str(info.value)


def test_retry_memory() -> None:
    mem = RetryMemory(timedelta(seconds=30), max_entries=2)
    first = event()
    assert mem.recall("corp\\jdoe", "working", NOW) is None
    mem.remember("corp\\jdoe", first, NOW)
    assert mem.recall("corp\\jdoe", "working", NOW + timedelta(seconds=10)) is first
    assert mem.recall("corp\\jdoe", "stopped", NOW + timedelta(seconds=10)) is None
    assert mem.recall("corp\\jdoe", "working", NOW + timedelta(seconds=31)) is None
    mem.forget("corp\\jdoe")
    assert mem.recall("corp\\jdoe", "working", NOW) is None
    a, b, c = (event(ts=f"2025-03-10T0{h}:00:00Z") for h in (7, 8, 9))
    mem.mark_published(a)
    assert mem.published(a) and not mem.published(b)
    mem.mark_published(b)
    mem.mark_published(c)  # bounded: the least recently used goes
    assert not mem.published(a) and mem.published(b) and mem.published(c)


def test_passwords_and_tokens() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored) and not verify_password("s3cret!", stored)
    assert verify_password("plain", "plain") and not verify_password("plain", "other")
    assert not verify_password("x", "scrypt$garbage")
    users = parse_users(f"alice:{stored}, bob:{hash_password('b')}", "")
    assert check_login(users, "alice", "s3cret") and not check_login(users, "carol", "s3cret")
    assert parse_users("", "pw") == {"admin": "pw"}
    with pytest.raises(SettingsError) as info:
        parse_users("alice-without-hash", "")
    assert "entry 1" in str(info.value)
    assert check_token("b", ["a", "b"]) and not check_token("", ["", "a"]) and not check_token("c", ["a"])


def test_session_cookies() -> None:
    signer = SessionSigner(b"k" * 32)
    cookie = signer.issue("alice", now=1000.0, lifetime_s=60)
    assert signer.check(cookie, now=1030.0) == "alice"
    assert signer.check(cookie, now=1061.0) is None
    assert SessionSigner(b"other").check(cookie, now=1030.0) is None
    _payload, sig = cookie.split(".")
    forged = SessionSigner(b"x").issue("admin", 1000.0, 60).split(".")[0]
    assert signer.check(f"{forged}.{sig}", now=1030.0) is None
    assert signer.check("garbage", now=0) is None and signer.check(None, now=0) is None


def test_settings_parsing() -> None:
    assert parse_addr("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_addr("[::1]:8080") == ("::1", 8080)
    with pytest.raises(SettingsError):
        parse_addr("localhost")
    assert len(parse_networks("10.0.0.0/8, 192.168.1.0/24")) == 2
    with pytest.raises(SettingsError) as info:
        parse_networks("10.0.0.0/8, nonsense")
    assert "nonsense" in str(info.value)


def test_timeline_geometry_and_navigation() -> None:
    def item(kind: str, reason: str | None, day: int, start_h: int, end_h: int) -> TimelineItem:
        """A session of 2025-03-``day`` from ``start_h`` to ``end_h`` o'clock, Berlin time."""
        start, end = (datetime(2025, 3, day, h, tzinfo=BERLIN) for h in (start_h, end_h))
        return TimelineItem(
            kind=kind, reason=reason, start=start, end=end, duration_s=(end - start).total_seconds()
        )

    items = [item("active", None, 10, 6, 12), item("inactive", "locked", 10, 12, 12)]
    active, locked = views.timeline_bars(items, date(2025, 3, 10), "Europe/Berlin", width=960)
    assert (active.x, active.width, active.css, active.y) == (240.0, 240.0, "active", 0)
    assert locked.css == "locked" and locked.width == 1.0 and locked.y == 2 * views.ROW_HEIGHT
    # a 23-hour DST day: the axis is the wall clock, so 12:00 local is in the middle
    dst = [item("active", None, 30, 12, 13)]
    (bar,) = views.timeline_bars(dst, date(2025, 3, 30), "Europe/Berlin", width=2300)
    assert bar.x == 1150.0 and bar.width == 95.83
    assert views.hms(3725) == "1:02:05" and views.hms(None) == "-"
    assert views.step(date(2025, 1, 31), "month", 1) == date(2025, 2, 28)
    assert views.step(date(2025, 3, 10), "week", -1) == date(2025, 3, 3)
    assert views.user_path("corp\\alice") == "corp%5Calice"


async def test_unreachable_services_give_503_not_500() -> None:
    from typing import Any, cast

    import httpx

    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    settings = GatewaySettings(
        pg_dsn="postgresql://u:p@127.0.0.1:1/db",
        api_tokens="t",
        kafka_bootstrap="127.0.0.1:1",
        legacy_send_timeout_s=2,
    )
    app = create_app(settings, start_kafka=False)
    transport = httpx.ASGITransport(app=cast(Any, app))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            r = await c.get("/api/v1/reports/day", headers={"Authorization": "Bearer t"})
            assert r.status_code == 503 and "reports are unavailable" in r.json()["detail"]
            r = await c.post("/api/report", json={"user": "jdoe", "state": "working"})
            assert r.status_code == 503 and r.json()["reason"] == "kafka"
            r = await c.get("/readyz")
            body = r.json()
            problem = body.pop("kafka_problem")  # names the cause: here nothing listens on the port
            assert r.status_code == 503 and body == {"ok": False, "kafka": False, "postgres": False}
            assert problem.startswith("127.0.0.1:1: "), problem
            assert (await c.get("/healthz")).status_code == 200
    finally:
        await app.state.gateway.close()
