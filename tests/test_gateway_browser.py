"""A person's path through the web pages in headless Chromium: log in, the overview, the previous day, a
user's timeline, week and month views, applications. The numbers shown equal the report API's. Screenshots
of each page go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway.auth import hash_password
from gateway.testing import running_gateway, seed_sessions, seed_ui_event
from gateway.views import hms
from proto.sessions import make_session
from sinks.migrations import apply_migrations

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "browser-test-password"
TOKEN = "browser-test-token"
ALICE = "corp\\alice"
BOB = "corp\\bob"


def chromium() -> str:
    """The system Chromium (scripts/setup.sh installs it). Missing: skip, or fail on CI."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        msg = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return CHROMIUM


def row_of(user_key: str) -> str:
    """CSS selector of a user's report row (a backslash must be escaped in a CSS string)."""
    return '#report tr[data-user="' + user_key.replace("\\", "\\\\") + '"]'


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2025, 3, day, hh, mm, tzinfo=UTC)


@pytest.fixture
def gateway_url(fresh_pg_dsn: str, tmp_path: Path) -> Iterator[str]:
    async def seed() -> None:
        await apply_migrations(fresh_pg_dsn)
        await seed_sessions(
            fresh_pg_dsn,
            [
                # Monday 10 March (Europe/Berlin, UTC+1): alice works 08:00-10:30 and 11:00-16:15 local
                make_session(
                    ALICE, "inactive", at(10, 6, 50), at(10, 7), ["pc1"], reason="idle", tz="Europe/Berlin"
                ),
                make_session(ALICE, "active", at(10, 7), at(10, 9, 30), ["pc1"], tz="Europe/Berlin"),
                make_session(
                    ALICE, "inactive", at(10, 9, 30), at(10, 10), ["pc1"], reason="locked", tz="Europe/Berlin"
                ),
                make_session(ALICE, "active", at(10, 10), at(10, 15, 15), ["pc1"], tz="Europe/Berlin"),
                make_session(
                    ALICE,
                    "inactive",
                    at(10, 15, 15),
                    at(10, 15, 40),
                    ["pc1"],
                    reason="idle",
                    tz="Europe/Berlin",
                ),
                make_session(BOB, "active", at(10, 12), at(10, 13, 1), ["pc2"]),
                # Tuesday 11 March: alice only
                make_session(ALICE, "active", at(11, 8), at(11, 9), ["pc1"], tz="Europe/Berlin"),
            ],
        )
        await seed_ui_event(fresh_pg_dsn, ALICE, at(10, 7, 1), "excel.exe", seq=1, tz="Europe/Berlin")
        await seed_ui_event(
            fresh_pg_dsn, ALICE, at(10, 8), "chrome.exe", "example.org", seq=2, tz="Europe/Berlin"
        )

    asyncio.run(seed())
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        "DESKTRACE_PG_DSN": fresh_pg_dsn,
        "DESKTRACE_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # pages need no Kafka
        "DESKTRACE_WEB_USERS": f"boss:{hash_password(PASSWORD)}",
        "DESKTRACE_API_TOKENS": TOKEN,
        "DESKTRACE_LEGACY_TZ": "Europe/Berlin",
    }
    with running_gateway(env, log_path=ARTIFACTS / "gateway-browser.log") as url:
        yield url


def test_pages_in_chromium(gateway_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium()
    api = httpx.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    profile = tempfile.mkdtemp(prefix="desktrace-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
                viewport={"width": 1200, "height": 800},
            )
            context.set_default_timeout(15_000)
            page = context.new_page()

            # 1. not logged in: the login form, answered 401
            response = page.goto(f"{gateway_url}/?date=2025-03-11")
            assert response is not None and response.status == 401
            page.screenshot(path=str(ARTIFACTS / "gateway-1-login.png"), full_page=True)
            page.fill("input[name=username]", "boss")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/?date=2025-03-11")
            expect(page.locator("#period")).to_contain_text("Tuesday 11 March 2025")
            expect(page.locator("#report tbody tr")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "gateway-2-overview.png"), full_page=True)

            # 2. previous day: both users, the numbers of the report API
            page.click("#prev")
            page.wait_for_url("**/?date=2025-03-10&view=day")
            expect(page.locator("#period")).to_contain_text("Monday 10 March 2025")
            day = api.get("/api/v1/reports/day", params={"date": "2025-03-10"}).json()
            assert {r["user_key"] for r in day} == {ALICE, BOB}
            for r in day:
                row = page.locator(row_of(r["user_key"]))
                for field in ("active", "idle", "locked", "presence"):
                    expect(row.locator(f"td.{field}")).to_have_text(hms(r[f"{field}_s"]))
            page.screenshot(path=str(ARTIFACTS / "gateway-3-previous-day.png"), full_page=True)

            # 3. alice's day: figures and the timeline chart
            page.click(f"{row_of(ALICE)} a.user")
            page.wait_for_url("**/user/**")
            user = api.get("/api/v1/reports/user", params={"user": ALICE, "date": "2025-03-10"}).json()
            assert user["day"]["active_s"] == 7 * 3600 + 45 * 60
            for field in ("active", "idle", "locked", "presence"):
                expect(page.locator(f"#figures dd.{field}")).to_have_text(hms(user["day"][f"{field}_s"]))
            kinds = [i["reason"] or "active" for i in user["timeline"]]
            for kind in ("active", "idle", "locked"):
                expect(page.locator(f"#timeline rect.bar.{kind}")).to_have_count(kinds.count(kind))
            expect(page.locator("#sessions tbody tr")).to_have_count(len(kinds))
            # the first active bar starts at 08:00 local: a third of the 24-hour axis
            x = float(page.locator("#timeline rect.bar.active").first.get_attribute("x") or "nan")
            assert abs(x - 960 * 8 / 24) < 1
            page.screenshot(path=str(ARTIFACTS / "gateway-4-user-timeline.png"), full_page=True)

            # 4. week and month views of the same date, with their navigation
            page.click("text=Week")
            expect(page.locator("#period")).to_contain_text("2025-W11")
            week = api.get("/api/v1/reports/week", params={"date": "2025-03-10"}).json()
            alice_week = next(r for r in week if r["user_key"] == ALICE)
            expect(page.locator(f"{row_of(ALICE)} td.active").first).to_have_text(hms(alice_week["active_s"]))
            page.screenshot(path=str(ARTIFACTS / "gateway-5-week.png"), full_page=True)
            page.click("#prev")
            expect(page.locator("#period")).to_contain_text("2025-W10")
            page.click("#view-month")
            expect(page.locator("#period")).to_contain_text("March 2025")
            page.click("#next")
            expect(page.locator("#period")).to_contain_text("April 2025")
            page.click("#prev")
            month = api.get("/api/v1/reports/month", params={"date": "2025-03-01"}).json()
            alice_month = next(r for r in month if r["user_key"] == ALICE)
            assert alice_month["active_s"] == 7 * 3600 + 45 * 60 + 3600
            expect(page.locator(f"{row_of(ALICE)} td.active").first).to_have_text(
                hms(alice_month["active_s"])
            )
            page.screenshot(path=str(ARTIFACTS / "gateway-6-month.png"), full_page=True)

            # 5. applications
            page.goto(f"{gateway_url}/apps?start=2025-03-10")
            expect(page.locator("#apps tbody tr")).to_have_count(2)
            apps = api.get("/api/v1/reports/apps", params={"start": "2025-03-10"}).json()
            assert {a["app"] for a in apps} == {"excel.exe", "chrome.exe"}
            assert all(a["url"] is None for a in apps)
            expect(page.locator("#domains")).to_contain_text("example.org")
            page.screenshot(path=str(ARTIFACTS / "gateway-7-apps.png"), full_page=True)
            context.close()
    finally:
        api.close()
        shutil.rmtree(profile, ignore_errors=True)
