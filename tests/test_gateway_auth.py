"""Credentials: every report page and endpoint needs a login or a token; the legacy endpoint obeys
legacy_networks and legacy_token. In-process (ASGI) against a real, seeded PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from gateway.app import create_app
from gateway.auth import hash_password
from gateway.settings import GatewaySettings
from proto.sessions import make_session
from sinks.migrations import apply_migrations
from tests.support.gateway import seed_sessions, seed_ui_event

pytestmark = pytest.mark.postgres

USER = "corp\\alice"
DAY = "2025-03-10"
PASSWORD = "correct horse battery staple"
TOKEN = "test-token-0123456789"

PAGES = [
    "/",
    f"/?date={DAY}&view=week",
    f"/?date={DAY}&view=month",
    f"/user/corp%5Calice?date={DAY}",
    "/apps",
]
ENDPOINTS = [
    f"/api/v1/reports/day?date={DAY}",
    f"/api/v1/reports/week?date={DAY}",
    f"/api/v1/reports/month?date={DAY}",
    f"/api/v1/reports/user?user=corp%5Calice&date={DAY}",
    f"/api/v1/reports/apps?start={DAY}",
]


def t(hh: int, mm: int) -> datetime:
    return datetime(2025, 3, 10, hh, mm, tzinfo=UTC)


@pytest.fixture
async def dsn(fresh_pg_dsn: str) -> str:
    await apply_migrations(fresh_pg_dsn)
    await seed_sessions(
        fresh_pg_dsn,
        [
            make_session(USER, "active", t(9, 0), t(10, 30), ["pc1"]),
            make_session(USER, "inactive", t(10, 30), t(10, 45), ["pc1"], reason="idle"),
        ],
    )
    await seed_ui_event(
        fresh_pg_dsn, USER, t(9, 5), "chrome.exe", "example.org", url="https://example.org/a?q=1"
    )
    return fresh_pg_dsn


def make_app(dsn: str, **extra: object) -> Litestar:
    settings = GatewaySettings(
        pg_dsn=dsn,
        web_users=f"alice:{hash_password(PASSWORD)}",
        api_tokens=f"other-token, {TOKEN}",
        **extra,  # type: ignore[arg-type]
    )
    return create_app(settings, start_kafka=False)


@pytest.fixture
async def app(dsn: str) -> AsyncIterator[Litestar]:
    app = make_app(dsn)
    yield app
    await app.state.gateway.close()


def client(app: Litestar, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=cast(Any, app), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def test_without_credentials_everything_answers_401(app: Litestar) -> None:
    async with client(app) as c:
        for path in PAGES:
            r = await c.get(path)
            assert r.status_code == 401, path
            assert 'action="/login"' in r.text and 'name="password"' in r.text, path
        for path in ENDPOINTS:
            r = await c.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
            r = await c.get(path, headers={"Authorization": "Bearer wrong-token"})
            assert r.status_code == 401, path
            # a forged cookie is no login either
            r = await c.get(path, cookies={"desktrace_session": "eyJ1IjoiYWxpY2UiLCJleHAiOjk5OTk5OTk5OTl9.x"})
            assert r.status_code == 401, path


async def test_token_opens_the_api(app: Litestar) -> None:
    async with client(app) as c:
        for path in ENDPOINTS:
            r = await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, (path, r.text)
        day = (await c.get(ENDPOINTS[0], headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert [(r["user_key"], r["active_s"], r["idle_s"]) for r in day] == [(USER, 5400, 900)]
        # the token opens the API, not the pages
        r = await c.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 401


async def test_login_opens_pages_and_api(app: Litestar) -> None:
    async with client(app) as c:
        r = await c.post("/login", data={"username": "alice", "password": "wrong", "next": "/"})
        assert r.status_code == 401 and "Wrong user name or password" in r.text
        r = await c.post("/login", data={"username": "mallory", "password": PASSWORD, "next": "/"})
        assert r.status_code == 401
        r = await c.post("/login", data={"username": "alice", "password": PASSWORD, "next": f"/?date={DAY}"})
        assert r.status_code == 303 and r.headers["location"] == f"/?date={DAY}"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        for path in PAGES + ENDPOINTS:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.text[:300])
        r = await c.get(f"/?date={DAY}")
        assert "corp\\alice" in r.text and "1:30:00" in r.text
        r = await c.post("/logout")
        assert r.status_code == 303
        c.cookies.clear()
        assert (await c.get("/")).status_code == 401


async def test_login_never_redirects_off_site(app: Litestar) -> None:
    async with client(app) as c:
        for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            r = await c.post("/login", data={"username": "alice", "password": PASSWORD, "next": target})
            assert r.status_code == 303 and r.headers["location"] == "/", target


BAD_BODY = {"user": "", "state": "working"}


async def test_legacy_open_on_loopback_without_token(app: Litestar) -> None:
    async with client(app) as c:
        # passes access control and fails on the body: no credentials needed
        r = await c.post("/api/report", json=BAD_BODY)
        assert r.status_code == 422 and r.json()["success"] is False


async def test_legacy_networks(dsn: str) -> None:
    app = make_app(dsn, legacy_networks="10.20.0.0/16, 192.168.7.0/24")
    try:
        async with client(app, host="10.30.1.1") as c:
            r = await c.post("/api/report", json=BAD_BODY)
            assert r.status_code == 403 and "legacy_networks" in r.json()["error"]
        async with client(app, host="127.0.0.1") as c:
            assert (await c.post("/api/report", json=BAD_BODY)).status_code == 403
        async with client(app, host="10.20.5.6") as c:
            assert (await c.post("/api/report", json=BAD_BODY)).status_code == 422
        text = (await client(app).get("/metrics")).text
        assert 'desktrace_gateway_rejected_total{reason="forbidden_network"} 2.0' in text
    finally:
        await app.state.gateway.close()


async def test_legacy_token(dsn: str) -> None:
    app = make_app(dsn, legacy_token="s3cret-legacy")
    try:
        async with client(app) as c:
            r = await c.post("/api/report", json=BAD_BODY)
            assert r.status_code == 401 and "token" in r.json()["error"]
            r = await c.post("/api/report", json=BAD_BODY, headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401
            r = await c.post("/api/report", json=BAD_BODY, headers={"Authorization": "Bearer s3cret-legacy"})
            assert r.status_code == 422
            r = await c.post("/api/report", json=BAD_BODY, headers={"X-Desktrace-Token": "s3cret-legacy"})
            assert r.status_code == 422
    finally:
        await app.state.gateway.close()


async def test_full_urls_only_when_allowed(dsn: str) -> None:
    for show, want in ((False, None), (True, "https://example.org/a?q=1")):
        app = make_app(dsn, reports_show_urls=show)
        try:
            async with client(app) as c:
                r = await c.get(ENDPOINTS[-1], headers={"Authorization": f"Bearer {TOKEN}"})
                assert r.status_code == 200
                assert [(a["app"], a["domain"], a["url"]) for a in r.json()] == [
                    ("chrome.exe", "example.org", want)
                ]
                await c.post("/login", data={"username": "alice", "password": PASSWORD, "next": "/"})
                page = (await c.get(f"/apps?start={DAY}")).text
                assert "example.org" in page
                assert ("https://example.org/a?q=1" in page) is show
        finally:
            await app.state.gateway.close()
