"""Teams and roles: every page and every endpoint reads only the users of the caller's scope (admin: all,
lead: their teams, viewer: their own user key), for web logins and API tokens alike, whatever the URL asks
for. In-process (ASGI) against a real, seeded PostgreSQL."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
from litestar import Litestar

from common.settings import SettingsError
from gateway.app import create_app
from gateway.auth import hash_password
from gateway.settings import GatewaySettings
from proto.sessions import make_session
from sinks.migrations import apply_migrations
from tests.support.gateway import seed_sessions, seed_ui_event

pytestmark = pytest.mark.postgres

ALICE, BOB, CAROL = "corp\\alice", "corp\\bob", "corp\\carol"
EVERYONE = {ALICE, BOB, CAROL}
DAY = "2025-03-10"
PASSWORD = "scope-test-password"
APP_OF = {ALICE: "alice-app.exe", BOB: "bob-app.exe", CAROL: "carol-app.exe"}

TEAM_FILE = r"""
[teams]
sales = ["corp\\alice", "corp\\bob"]
support = ["corp\\carol"]

[roles.boss]
role = "admin"
[roles.sally]
role = "lead"
teams = ["sales"]
[roles.alice]
role = "viewer"
user_key = "corp\\alice"
[roles.sally-token]
role = "lead"
teams = ["sales"]
[roles.alice-token]
role = "viewer"
user_key = "corp\\alice"
"""

#: principal -> (how it authenticates, the users it may read)
PRINCIPALS: dict[str, tuple[str, set[str]]] = {
    "boss": ("web", EVERYONE),
    "sally": ("web", {ALICE, BOB}),
    "alice": ("web", {ALICE}),
    "nobody": ("web", set()),  # a web user the team file does not list
    "admin-token": ("token", EVERYONE),  # a bare (unnamed) token
    "sally-token": ("token", {ALICE, BOB}),
    "alice-token": ("token", {ALICE}),
    "ghost-token": ("token", set()),  # a named token the team file does not list
}


def t(hh: int, mm: int = 0) -> datetime:
    return datetime(2025, 3, 10, hh, mm, tzinfo=UTC)


@pytest.fixture
async def app(fresh_pg_dsn: str, tmp_path: Path) -> AsyncIterator[Litestar]:
    await apply_migrations(fresh_pg_dsn)
    sessions = []
    for i, user in enumerate(sorted(EVERYONE)):
        sessions.append(make_session(user, "active", t(8 + i), t(9 + i), ["pc1"]))
        sessions.append(make_session(user, "inactive", t(9 + i), t(9 + i, 20), ["pc1"], reason="locked"))
        await seed_ui_event(fresh_pg_dsn, user, t(8 + i, 5), APP_OF[user], seq=i)
    await seed_sessions(fresh_pg_dsn, sessions)
    team_file = tmp_path / "teams.toml"
    team_file.write_text(TEAM_FILE, encoding="utf-8")
    pw = hash_password(PASSWORD)
    settings = GatewaySettings(
        pg_dsn=fresh_pg_dsn,
        web_users=",".join(f"{u}:{pw}" for u in ("boss", "sally", "alice", "nobody")),
        api_tokens="admin-token, sally-token:sally-token, alice-token:alice-token, ghost-token:ghost-token",
        teams_file=str(team_file),
    )
    application = create_app(settings, start_kafka=False)
    yield application
    await application.state.gateway.close()


@contextlib.asynccontextmanager
async def as_principal(app: Litestar, name: str) -> AsyncIterator[httpx.AsyncClient]:
    kind, _ = PRINCIPALS[name]
    transport = httpx.ASGITransport(app=cast(Any, app), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        if kind == "token":
            c.headers["Authorization"] = f"Bearer {name}"
        else:
            r = await c.post("/login", data={"username": name, "password": PASSWORD, "next": "/"})
            assert r.status_code == 303, r.text
        yield c


def user_urls(user: str, kind: str) -> list[str]:
    """Every URL that names one user: pages for a web login, the API (JSON and CSV) for both."""
    enc = quote(user, safe="")
    api = [
        f"/api/v1/reports/user?user={enc}&date={DAY}",
        f"/api/v1/reports/user?user={enc}&date={DAY}&format=csv",
        f"/api/v1/reports/day?user={enc}&date={DAY}",
        f"/api/v1/reports/day?user={enc}&date={DAY}&format=csv",
        f"/api/v1/reports/week?user={enc}&date={DAY}",
        f"/api/v1/reports/week?user={enc}&date={DAY}&format=csv",
        f"/api/v1/reports/month?user={enc}&date={DAY}&format=csv",
        f"/api/v1/reports/apps?user={enc}&start={DAY}",
        f"/api/v1/reports/apps?user={enc}&start={DAY}&format=csv",
    ]
    pages = [
        f"/user/{enc}?date={DAY}",
        f"/user/{enc}?date={DAY}&view=week",
        f"/user/{enc}?date={DAY}&view=month",
        f"/apps?user={enc}&start={DAY}",
        f"/processes?user={enc}&start={DAY}",
        f"/processes?user={enc}&start={DAY}&level=window",
    ]
    return api + (pages if kind == "web" else [])


def users_in_csv(text: str) -> set[str]:
    return {row["user_key"] for row in csv.DictReader(io.StringIO(text))}


@pytest.mark.parametrize("name", list(PRINCIPALS))
async def test_each_principal_reads_its_scope_only(app: Litestar, name: str) -> None:
    kind, visible = PRINCIPALS[name]
    async with as_principal(app, name) as c:
        # a URL naming one user: 200 inside the scope, 403 outside (the same for users that exist or not)
        for user in [*sorted(EVERYONE), "corp\\nobody-such"]:
            for url in user_urls(user, kind):
                r = await c.get(url)
                allowed = user in visible or visible == EVERYONE  # admins may ask for anyone
                want = 200 if allowed else 403
                if allowed and user not in EVERYONE and url.startswith("/user/"):
                    want = 404  # the page's unknown-user notice
                    assert "has ever been recorded" in r.text
                assert r.status_code == want, (name, url, r.status_code, r.text[:200])
        # lists: exactly the visible users, in JSON and CSV, for the day, week and month
        for view in ("day", "week", "month"):
            r = await c.get(f"/api/v1/reports/{view}?date={DAY}")
            assert r.status_code == 200
            assert {row["user_key"] for row in r.json()} == visible, (name, view)
            r = await c.get(f"/api/v1/reports/{view}?date={DAY}&format=csv")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
            assert users_in_csv(r.text) == visible, (name, view)
        # application figures added up over the scope only
        r = await c.get(f"/api/v1/reports/apps?start={DAY}")
        assert {a["app"] for a in r.json()} == {APP_OF[u] for u in visible}, name
        # another team by URL: refused unless admin
        for team, members in (("sales", {ALICE, BOB}), ("support", {CAROL})):
            r = await c.get(f"/api/v1/reports/day?date={DAY}&team={team}")
            leads_it = team == "sales" and name.startswith("sally")
            if members <= visible and (name in ("boss", "admin-token") or leads_it):
                assert r.status_code == 200, (name, team)
                assert {row["user_key"] for row in r.json()} == members
            else:
                assert r.status_code == 403, (name, team, r.status_code)
        if kind == "web":
            for view in ("day", "week", "month"):
                page = (await c.get(f"/?date={DAY}&view={view}")).text
                for user in EVERYONE:
                    assert (user in page) is (user in visible), (name, view, user)
                # per-team totals: only of the teams the login may read
                assert ('data-team="sales"' in page) is (name in ("boss", "sally")), (name, view)
                assert ('data-team="support"' in page) is (name == "boss"), (name, view)
            apps = (await c.get(f"/apps?start={DAY}")).text
            for user in EVERYONE:
                assert (APP_OF[user] in apps) is (user in visible), (name, user)
                assert (f">{user}<" in apps) is (user in visible), (name, user)
            r = await c.get(f"/?date={DAY}&team=support")
            assert r.status_code == (200 if name == "boss" else 403), name
            # Processes: the graph (each user's one UI event starts and ends a trace) and the user choice
            # hold only the users in scope; a team outside it is refused as on the other pages
            procs = await c.get(f"/processes?start={DAY}")
            assert procs.status_code == 200, (name, procs.text[:200])
            assert f"{len(visible)} traces (user days)" in procs.text, name
            for user in EVERYONE:
                assert (APP_OF[user] in procs.text) is (user in visible), (name, user)
                assert (f">{user}<" in procs.text) is (user in visible), (name, user)
            for team, members in (("sales", {ALICE, BOB}), ("support", {CAROL})):
                r = await c.get(f"/processes?start={DAY}&team={team}")
                if name == "boss" or (team == "sales" and name == "sally"):
                    assert r.status_code == 200, (name, team)
                    assert {u for u in EVERYONE if APP_OF[u] in r.text} == members, (name, team)
                    assert f'<option value="{team}" selected>' in r.text, (name, team)
                else:
                    assert r.status_code == 403, (name, team, r.status_code)
            if name == "sally":  # a member of her team, named with the team: still only that member
                r = await c.get(f"/processes?start={DAY}&team=sales&user={quote(BOB, safe='')}")
                assert r.status_code == 200 and APP_OF[BOB] in r.text and APP_OF[ALICE] not in r.text
            if not visible:
                assert "no role in the team file" in (await c.get(f"/?date={DAY}")).text


async def test_unknown_team_is_404_for_an_admin(app: Litestar) -> None:
    async with as_principal(app, "boss") as c:
        r = await c.get(f"/api/v1/reports/day?date={DAY}&team=nope")
        assert r.status_code == 404
        r = await c.get(f"/processes?start={DAY}&team=nope")
        assert r.status_code == 404


async def test_every_page_links_to_processes(app: Litestar) -> None:
    async with as_principal(app, "alice") as c:
        for url in (f"/?date={DAY}", f"/user/{quote(ALICE, safe='')}?date={DAY}", f"/apps?start={DAY}",
                    f"/processes?start={DAY}"):
            r = await c.get(url)
            assert r.status_code == 200 and '<a href="/processes" id="nav-processes">' in r.text, url


def test_team_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "teams.toml"
    for text, words in (
        ('[roles.x]\nrole = "lead"\nteams = ["ghosts"]\n', "unknown team"),
        ('[roles.x]\nrole = "viewer"\n', "needs user_key"),
        ('[roles.x]\nrole = "boss"\n', "role"),
        ("[teams]\nsales = [1]\n", "teams"),
    ):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(SettingsError, match=words):
            create_app(GatewaySettings(teams_file=str(bad)), start_kafka=False)
    with pytest.raises(SettingsError, match="cannot read"):
        create_app(GatewaySettings(teams_file=str(tmp_path / "missing.toml")), start_kafka=False)


def test_team_file_as_json(tmp_path: Path) -> None:
    path = tmp_path / "teams.json"
    path.write_text(
        '{"teams": {"ops": ["corp\\\\dave"]}, "roles": {"olga": {"role": "lead", "teams": ["ops"]}}}',
        encoding="utf-8",
    )
    app = create_app(GatewaySettings(teams_file=str(path)), start_kafka=False)
    scope = app.state.gateway.access.scope_of("olga")
    assert scope.role == "lead" and scope.users == {"corp\\dave"}
