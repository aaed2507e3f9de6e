"""A manager's path through the web pages in headless Chromium, at a phone's width (390 px) and a desktop's
(1280 px): log in, the day overview (sortable, with a total row), the week (stacked bars) and month (heat
map) with their numbers in tables, a user's day, week and month, applications, downloads, and the empty
states. The numbers shown equal the report API's; every chart's shapes are checked against the table beside
it; no page scrolls sideways. Screenshots of each page at both widths go to test-artifacts/."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from gateway.auth import hash_password
from gateway.charts import heat_level
from gateway.views import hms
from proto.sessions import make_session
from sinks.migrations import apply_migrations
from tests.support.ci import fail_or_skip
from tests.support.gateway import running_gateway, seed_sessions, seed_ui_event

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "browser-test-password"
TOKEN = "browser-test-token"
ALICE, BOB, CAROL, DAVE = "corp\\alice", "corp\\bob", "corp\\carol", "corp\\dave"
USERS = (ALICE, BOB, CAROL, DAVE)
WIDTHS = (390, 1280)
MONDAY = "2025-03-10"
TEAMS = r"""
[teams]
sales = ["corp\\alice", "corp\\bob"]
support = ["corp\\carol", "corp\\dave"]
[roles.boss]
role = "admin"
"""


def chromium() -> str:
    """The system Chromium (scripts/setup.sh installs it). Missing: skip, or fail on CI."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        msg = f"{CHROMIUM} is missing (apt-get install chromium)"
        fail_or_skip(msg)
    return CHROMIUM


def row_of(user_key: str, table: str = "#report") -> str:
    """CSS selector of a user's row (a backslash must be escaped in a CSS string)."""
    return table + ' tr[data-user="' + user_key.replace("\\", "\\\\") + '"]'


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2025, 3, day, tzinfo=UTC) + timedelta(hours=hh, minutes=mm)


def week_of_sessions() -> list[Any]:
    """Four users over the week of Monday 10 March 2025, each with a different shape of day."""
    out = []
    for i, day in enumerate(range(10, 15)):  # Monday..Friday
        # alice (Berlin, UTC+1): 08:00-12:00 active, 12:00-12:30 locked, 12:30-16:xx active, then idle
        out += [
            make_session(ALICE, "active", at(day, 7), at(day, 11), ["pc1"], tz="Europe/Berlin"),
            make_session(
                ALICE, "inactive", at(day, 11), at(day, 11, 30), ["pc1"], reason="locked", tz="Europe/Berlin"
            ),
            make_session(ALICE, "active", at(day, 11, 30), at(day, 15, 10 * i), ["pc1"], tz="Europe/Berlin"),
            make_session(
                ALICE,
                "inactive",
                at(day, 15, 10 * i),
                at(day, 15, 10 * i + 20),
                ["pc1"],
                reason="idle",
                tz="Europe/Berlin",
            ),
        ]
        if day != 12:  # bob is off on Wednesday
            out.append(make_session(BOB, "active", at(day, 9), at(day, 13, 1), ["pc2"]))
            out.append(make_session(BOB, "inactive", at(day, 13, 1), at(day, 14), ["pc2"], reason="idle"))
        out.append(make_session(CAROL, "active", at(day, 6), at(day, 6 + i + 1), ["pc3"]))
    # dave works late on Tuesday, until midnight: his last activity reads 24:00
    out.append(make_session(DAVE, "active", at(11, 18), at(12, 0), ["pc4"]))
    out.append(make_session(DAVE, "active", at(13, 8), at(13, 17), ["pc4"]))
    return out


async def seed_logon(dsn: str, user_key: str, ts: datetime, tz: str) -> None:
    """One ``Logon`` raw event, as the raw sink writes it."""
    domain, _, login = user_key.partition("\\")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("SELECT raw_events_ensure_partition($1::date)", ts.date())
        await conn.execute(
            "INSERT INTO raw_events (agent_id, seq, ts, type, category, input, user_key,"
            ' "user", domain, host, tz)'
            " VALUES ('seed-logon', 0, $1, 'Logon', 'presence', 'none', $2, $3, $4, 'pc1', $5)",
            ts,
            user_key,
            login,
            domain,
            tz,
        )
    finally:
        await conn.close()


@pytest.fixture
def gateway_url(fresh_pg_dsn: str, tmp_path: Path) -> Iterator[str]:
    async def seed() -> None:
        await apply_migrations(fresh_pg_dsn)
        await seed_sessions(fresh_pg_dsn, week_of_sessions())
        await seed_ui_event(fresh_pg_dsn, ALICE, at(10, 7, 1), "excel.exe", seq=1, tz="Europe/Berlin")
        await seed_logon(fresh_pg_dsn, ALICE, at(10, 6, 55), "Europe/Berlin")  # 07:55 local
        await seed_ui_event(
            fresh_pg_dsn, ALICE, at(10, 8), "chrome.exe", "example.org", seq=2, tz="Europe/Berlin"
        )

    asyncio.run(seed())
    ARTIFACTS.mkdir(exist_ok=True)
    teams = tmp_path / "teams.toml"
    teams.write_text(TEAMS, encoding="utf-8")
    env = {
        "DESKTRACE_PG_DSN": fresh_pg_dsn,
        "DESKTRACE_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # pages need no Kafka
        "DESKTRACE_WEB_USERS": f"boss:{hash_password(PASSWORD)}",
        "DESKTRACE_API_TOKENS": TOKEN,
        "DESKTRACE_LEGACY_TZ": "Europe/Berlin",
        "DESKTRACE_TEAMS_FILE": str(teams),
    }
    with running_gateway(env, log_path=ARTIFACTS / "gateway-browser.log") as url:
        yield url


def no_sideways_scroll(page: Any, what: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{what}: the page scrolls sideways by {overflow} px"


def shot(page: Any, width: int, n: int, name: str) -> None:
    no_sideways_scroll(page, f"{name} at {width} px")
    page.screenshot(path=str(ARTIFACTS / f"gateway-{width}-{n:02d}-{name}.png"), full_page=True)


SEGMENTS_JS = """sel => Array.from(document.querySelectorAll(sel)).map(r => ({
  user: r.dataset.user || null, date: r.dataset.date, kind: r.dataset.kind || null,
  seconds: +r.dataset.seconds, level: r.dataset.level === undefined ? null : +r.dataset.level,
  width: +r.getAttribute('width'), height: +r.getAttribute('height')}))"""

CELLS_JS = """sel => Array.from(document.querySelectorAll(sel)).map(td => ({
  user: td.closest('tr').dataset.user || null, date: td.dataset.date || td.closest('tr').dataset.date,
  kind: ['active', 'idle', 'locked'].find(k => td.classList.contains(k)) || null,
  seconds: +td.dataset.seconds}))"""


def follow(page: Any, selector: str) -> None:
    """Click a link or button that loads a new page and wait for that page's load event.

    A one-shot read (``page.evaluate``) right after a bare click can run in the new document while it
    is still being parsed (CI saw an empty chart that way); the auto-retrying ``expect`` calls do not
    need this, the reads do.
    """
    with page.expect_navigation(wait_until="load"):
        page.click(selector)


def check_bars_against_table(page: Any, bars_sel: str, cells_sel: str, length: str) -> int:
    """Each bar's seconds equal its table cell's; bar lengths are proportional to their seconds."""
    bars = page.evaluate(SEGMENTS_JS, bars_sel)
    cells = {
        (c["user"], c["date"], c["kind"]): c["seconds"]
        for c in page.evaluate(CELLS_JS, cells_sel)
        if c["kind"]
    }
    assert bars, bars_sel
    longest = max(bars, key=lambda b: b["seconds"])
    px = longest[length] / longest["seconds"]
    for b in bars:
        assert cells[(b["user"], b["date"], b["kind"])] == b["seconds"], b
        # one scale for every bar (the page rounds pixels to 0.01)
        assert abs(b[length] - b["seconds"] * px) <= 0.02, (b, px)
    # every non-zero cell has its bar
    drawn = {(b["user"], b["date"], b["kind"]) for b in bars}
    assert {k for k, s in cells.items() if s > 0} == drawn
    return len(bars)


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
                viewport={"width": 1280, "height": 800},
            )
            context.set_default_timeout(20_000)
            page = context.new_page()
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 800 if width > 600 else 844})
                walk(page, expect, api, gateway_url, width)
                context.clear_cookies()
            context.close()
    finally:
        api.close()
        shutil.rmtree(profile, ignore_errors=True)


def walk(page: Any, expect: Any, api: httpx.Client, base: str, width: int) -> None:
    # 1. not logged in: the login form, answered 401
    response = page.goto(f"{base}/?date={MONDAY}")
    assert response is not None and response.status == 401
    shot(page, width, 1, "login")
    page.fill("input[name=username]", "boss")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/?date={MONDAY}")

    # 2. the day: the API's numbers, a total row, sortable columns
    expect(page.locator("#period")).to_contain_text("Monday 10 March 2025")
    day = api.get("/api/v1/reports/day", params={"date": MONDAY}).json()
    assert {r["user_key"] for r in day} == {ALICE, BOB, CAROL}
    for r in day:
        row = page.locator(row_of(r["user_key"]))
        for field in ("active", "idle", "locked", "presence"):
            expect(row.locator(f"td.{field}")).to_have_text(hms(r[f"{field}_s"]))
    expect(page.locator(row_of(ALICE) + " td.first_logon")).to_have_text("07:55")
    # each row's bar at a glance: its parts are the row's figures, every row on one scale
    scale = set()
    for r in day:
        parts = page.locator(row_of(r["user_key"]) + " svg.rowbar rect.bar").evaluate_all(
            "rs => rs.map(b => [b.dataset.kind, +b.dataset.seconds, +b.getAttribute('width')])"
        )
        assert {k: s for k, s, _ in parts} == {
            k: r[f"{k}_s"] for k in ("active", "idle", "locked") if r[f"{k}_s"]
        }
        scale |= {round(w / s, 4) for _, s, w in parts if s > 600}
    assert max(scale) - min(scale) < 1e-3, scale
    for field in ("active", "idle", "locked", "presence"):
        expect(page.locator(f"#total td.{field}")).to_have_text(hms(sum(r[f"{field}_s"] for r in day)))
    expect(page.locator("#total th")).to_contain_text("3 users")
    # a total per team of the team file
    sales = sum(r["active_s"] for r in day if r["user_key"] in (ALICE, BOB))
    expect(page.locator('#team-totals tr[data-team="sales"] td.active')).to_have_text(hms(sales))
    expect(page.locator('#team-totals tr[data-team="support"] td.users')).to_have_text("1")
    follow(page, "#report thead th:nth-child(2) a")  # Active: largest first
    expect(page.locator("#report thead th:nth-child(2)")).to_have_attribute("aria-sort", "descending")
    by_active = [r["user_key"] for r in sorted(day, key=lambda r: -r["active_s"])]
    assert page.locator("#report tbody tr").evaluate_all("rs => rs.map(r => r.dataset.user)") == by_active
    shot(page, width, 2, "day-sorted")
    # the download link gives the same rows as CSV
    href = page.locator("#download-csv").get_attribute("href")
    got = page.request.get(base + href)
    assert got.status == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text())))
    assert {(r["user_key"], int(r["active_s"])) for r in rows} == {
        (r["user_key"], r["active_s"]) for r in day
    }

    # 3. Tuesday: dave worked until midnight, shown as 24:00
    follow(page, "#next")
    expect(page.locator(row_of(DAVE) + " td.last_activity")).to_have_text("24:00")
    # a team: its members and a team total
    page.select_option("select[name=team]", "support")
    follow(page, "form.teams button")
    expect(page.locator("#report tbody tr")).to_have_count(2)
    expect(page.locator("#total th")).to_contain_text("Team support total")
    shot(page, width, 3, "day-team")

    # 4. the week: stacked bars per user and day, checked against the table and the API
    page.goto(f"{base}/?date={MONDAY}&view=week")
    expect(page.locator("#period")).to_contain_text("2025-W11")
    n = check_bars_against_table(page, "#week-chart rect.bar", "#chart-data td[data-seconds]", "width")
    week = api.get("/api/v1/reports/week", params={"date": MONDAY}).json()
    assert n == sum(1 for p in week for d in p["days"] for k in ("active", "idle", "locked") if d[f"{k}_s"])
    for p in week:
        expect(page.locator(row_of(p["user_key"]) + " td.active")).to_have_text(hms(p["active_s"]))
    expect(page.locator("#week-chart title").first).to_contain_text("per user and day")
    shot(page, width, 4, "week")

    # 5. the month: a heat map per user, checked against its table
    follow(page, "#view-month")
    expect(page.locator("#period")).to_contain_text("March 2025")
    cells = page.evaluate(SEGMENTS_JS, "#month-chart rect.heat")
    table = {
        (c["user"], c["date"]): c["seconds"] for c in page.evaluate(CELLS_JS, "#chart-data td[data-date]")
    }
    assert len(cells) == 4 * 31 == len(table)
    for c in cells:
        assert table[(c["user"], c["date"])] == c["seconds"] and c["level"] == heat_level(c["seconds"]), c
    month = api.get("/api/v1/reports/month", params={"date": MONDAY}).json()
    for p in month:
        expect(page.locator(row_of(p["user_key"]) + " td.active")).to_have_text(hms(p["active_s"]))
    shot(page, width, 5, "month")

    # 6. a user name leads to that user's month, week and day
    page.click(row_of(ALICE) + " a.user")
    page.wait_for_url("**/user/**view=month**")
    cal = page.evaluate(SEGMENTS_JS, "#month-chart rect.heat")
    days = {c["date"]: c["seconds"] for c in page.evaluate(CELLS_JS, "#report tbody td.active")}
    assert len(cal) == 31
    assert {c["date"]: c["seconds"] for c in cal if c["seconds"]} == days
    shot(page, width, 6, "user-month")
    follow(page, "#view-week")
    n = check_bars_against_table(page, "#week-chart rect.bar", "#report tbody td[data-seconds]", "height")
    assert n == 5 * 3  # five days of active, idle and locked
    shot(page, width, 7, "user-week")
    page.click("#report tbody tr:first-child th a")
    page.wait_for_url(f"**/user/**date={MONDAY}")
    user = api.get("/api/v1/reports/user", params={"user": ALICE, "date": MONDAY}).json()
    for field in ("active", "idle", "locked", "presence"):
        expect(page.locator(f"#figures dd.{field}")).to_have_text(hms(user["day"][f"{field}_s"]))
    expect(page.locator("#figures dd.first_activity")).to_have_text("08:00")
    expect(page.locator("#figures dd.first_logon")).to_have_text("07:55")
    kinds = [i["reason"] or "active" for i in user["timeline"]]
    for kind in ("active", "idle", "locked"):
        expect(page.locator(f"#timeline rect.bar.{kind}")).to_have_count(kinds.count(kind))
    x = float(page.locator("#timeline rect.bar.active").first.get_attribute("x") or "nan")
    assert abs(x - 960 * 8 / 24) < 1  # 08:00 local is a third of the 24-hour axis
    # the timeline keeps a readable height on a phone (it scrolls inside its card instead of shrinking)
    assert page.locator("#timeline").bounding_box()["height"] >= 80
    shot(page, width, 8, "user-day")

    # 7. honest empty states
    page.goto(f"{base}/user/{quote(ALICE, safe='')}?date=2025-03-15")
    expect(page.locator(".notice.empty")).to_contain_text("No activity recorded for corp\\alice")
    shot(page, width, 9, "user-no-data")
    future = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    page.goto(f"{base}/user/{quote(ALICE, safe='')}?date={future}")
    expect(page.locator(".notice.future")).to_contain_text("in the future")
    mallory = quote("corp\\mallory", safe="")
    r = page.goto(f"{base}/user/{mallory}?date={MONDAY}")
    assert r is not None and r.status == 404
    expect(page.locator(".notice.unknown-user")).to_contain_text("corp\\mallory")
    shot(page, width, 10, "unknown-user")
    page.goto(f"{base}/?date={future}")
    expect(page.locator(".notice.future")).to_be_visible()

    # 8. applications
    page.goto(f"{base}/apps?start={MONDAY}")
    expect(page.locator("#apps tbody tr")).to_have_count(2)
    expect(page.locator("#domains")).to_contain_text("example.org")
    shot(page, width, 11, "apps")

    # 9. the Processes page, linked from the navigation of every page, within the login's scope
    nav = page.locator("header nav a#nav-processes")
    expect(nav).to_be_visible()
    nav.click()
    page.wait_for_url("**/processes")
    page.goto(f"{base}/processes?start={MONDAY}&end=2025-03-16&team=sales")
    expect(page.locator("h1")).to_contain_text("team sales")
    expect(page.locator("select[name=user] option")).to_have_count(5)  # everyone + the four users
    # Alice's day: excel.exe at 07:01 UTC, then chrome.exe at 08:00
    expect(page.locator("#edges tbody tr")).to_have_count(1)
    expect(page.locator("#edges tbody tr")).to_contain_text("excel.exe")
    expect(page.locator("#edges tbody tr")).to_contain_text("0:59:00")
    page.goto(f"{base}/processes?start={MONDAY}&end=2025-03-16&team=support")
    expect(page.locator("#flow")).to_contain_text("No UI events in this period")
    page.goto(f"{base}/processes?start={MONDAY}&end=2025-03-16&team=sales")
    shot(page, width, 12, "processes")

    # 10. log out: back to the login form
    page.click("header form.logout button")
    page.wait_for_url("**/login")
    assert page.goto(f"{base}/?date={MONDAY}").status == 401
