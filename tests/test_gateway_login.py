"""Login hardening: failed logins are throttled per user name and per client address (after 5 failures each
attempt waits 1 s, doubling, counted in desktrace_gateway_logins_total{outcome="throttled"}); a logout
revokes the session server-side (the old cookie no longer opens anything); /metrics is behind a token, on
its own address or loopback-only; /schema needs a login. In-process (ASGI) against a real PostgreSQL; the
gateway's clock is driven by the test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.pipeline import free_port
from gateway.app import create_app
from gateway.auth import COOKIE_NAME, hash_password
from gateway.login_guard import LoginThrottle
from gateway.settings import GatewaySettings
from sinks.migrations import apply_migrations

pytestmark = pytest.mark.postgres

PASSWORD = "login-test-password"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def gateway(dsn: str, clock: Clock, **extra: Any) -> AsyncIterator[Litestar]:
    pw = hash_password(PASSWORD)
    settings = GatewaySettings(pg_dsn=dsn, web_users=f"alice:{pw},bob:{pw}", api_tokens="api-token", **extra)
    app = create_app(settings, start_kafka=False)
    app.state.gateway.epoch_s = clock
    try:
        yield app
    finally:
        await app.state.gateway.close()


def client(app: Litestar, host: str = "10.1.2.3") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=cast(Any, app), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def login(c: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    return await c.post("/login", data={"username": user, "password": password, "next": "/"})


def throttled(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('desktrace_gateway_logins_total{outcome="throttled"}'):
            return float(line.split()[-1])
    raise AssertionError("no throttled counter")


@pytest.fixture
async def dsn(fresh_pg_dsn: str) -> str:
    await apply_migrations(fresh_pg_dsn)
    return fresh_pg_dsn


async def test_failures_per_user_are_throttled_exponentially(dsn: str) -> None:
    clock = Clock()
    async with gateway(dsn, clock) as app:
        # five failures from five addresses: each answered 401 at once
        for i in range(5):
            async with client(app, host=f"10.0.0.{i + 1}") as c:
                r = await login(c, "alice", "wrong")
                assert r.status_code == 401, i
        # the sixth attempt, even with the right password and from a fresh address, must wait 1 s
        async with client(app, host="10.0.9.9") as c:
            r = await login(c, "alice", PASSWORD)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert "Too many failed logins" in r.text
            # another user is not affected
            assert (await login(c, "bob", PASSWORD)).status_code == 303
            clock.now += 1.01
            assert (await login(c, "alice", "wrong again")).status_code == 401  # failure 6
            r = await login(c, "alice", PASSWORD)
            assert r.status_code == 429 and r.headers["retry-after"] == "2"  # 2 s after failure 6
            clock.now += 2.01
            assert (await login(c, "alice", "wrong")).status_code == 401  # failure 7: now 4 s
            clock.now += 3.5
            assert (await login(c, "alice", PASSWORD)).status_code == 429
            clock.now += 0.6
            # the wait is over: the right password opens the session and clears the count
            assert (await login(c, "alice", PASSWORD)).status_code == 303
            assert (await login(c, "alice", "typo")).status_code == 401
            assert (await login(c, "alice", PASSWORD)).status_code == 303
        async with client(app, host="127.0.0.1") as local:
            assert throttled((await local.get("/metrics")).text) == 3.0


async def test_failures_per_address_are_throttled(dsn: str) -> None:
    clock = Clock()
    async with gateway(dsn, clock) as app:
        async with client(app, host="192.0.2.7") as c:
            for i in range(5):  # one address tries five made-up names
                assert (await login(c, f"guess{i}", "x")).status_code == 401
            r = await login(c, "bob", PASSWORD)
            assert r.status_code == 429, "the address is throttled, whatever the name"
        async with client(app, host="192.0.2.8") as other:
            assert (await login(other, "bob", PASSWORD)).status_code == 303


def test_throttle_delays_double_and_are_capped() -> None:
    t = LoginThrottle(free=5, base_s=1, max_s=60)
    assert [t.delay_for(n) for n in range(4, 13)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    small = LoginThrottle(max_keys=3)
    for i in range(10):
        small.failed([f"user:{i}"], 0.0)
    assert small.failures("user:9") == 1 and small.failures("user:0") == 0  # bounded memory


async def test_logout_revokes_the_session_server_side(dsn: str) -> None:
    clock = Clock()
    async with gateway(dsn, clock) as app, client(app) as c:
        assert (await login(c, "alice", PASSWORD)).status_code == 303
        cookie = c.cookies[COOKIE_NAME]
        assert (await c.get("/api/v1/reports/day?date=2025-03-10")).status_code == 200
        r = await c.post("/logout")
        assert r.status_code == 303
        # the browser dropped the cookie; someone who kept a copy gets nothing with it
        async with client(app) as thief:
            thief.cookies.set(COOKIE_NAME, cookie)
            assert (await thief.get("/api/v1/reports/day?date=2025-03-10")).status_code == 401
            assert (await thief.get("/")).status_code == 401
        # a new login works, and logging out one session leaves another one open
        assert (await login(c, "alice", PASSWORD)).status_code == 303
        async with client(app) as second:
            assert (await login(second, "alice", PASSWORD)).status_code == 303
            assert (await second.post("/logout")).status_code == 303
        assert (await c.get("/")).status_code == 200


async def test_metrics_behind_a_token_or_loopback(dsn: str) -> None:
    clock = Clock()
    async with gateway(dsn, clock) as app:
        async with client(app, host="10.9.9.9") as remote:
            assert (await remote.get("/metrics")).status_code == 403
        async with client(app, host="127.0.0.1") as local:
            assert (await local.get("/metrics")).status_code == 200
    async with gateway(dsn, clock, metrics_token="m-token") as app:
        async with client(app, host="10.9.9.9") as remote:
            assert (await remote.get("/metrics")).status_code == 401
            r = await remote.get("/metrics", headers={"Authorization": "Bearer api-token"})
            assert r.status_code == 401, "an API token is not the metrics token"
            r = await remote.get("/metrics", headers={"Authorization": "Bearer m-token"})
            assert r.status_code == 200 and "desktrace_gateway_logins_total" in r.text


@pytest.fixture
def metrics_port() -> Iterator[int]:
    yield free_port()


async def test_metrics_on_their_own_address(dsn: str, metrics_port: int) -> None:
    settings = GatewaySettings(pg_dsn=dsn, metrics_addr=f"127.0.0.1:{metrics_port}")
    app = create_app(settings, start_kafka=False)
    async with AsyncTestClient(app=app) as main:  # runs the lifespan, which starts the metrics listener
        assert (await main.get("/metrics")).status_code == 404
        async with httpx.AsyncClient() as h:
            r = await h.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
            assert r.status_code == 200 and "desktrace_gateway_requests_total" in r.text


async def test_schema_needs_a_login(dsn: str) -> None:
    clock = Clock()
    async with gateway(dsn, clock) as app, client(app) as c:
        assert (await c.get("/schema/openapi.json")).status_code == 401
        assert (await c.get("/schema")).status_code == 401
        r = await c.get("/schema/openapi.json", headers={"Authorization": "Bearer api-token"})
        assert r.status_code == 200 and "/api/v1/reports/day" in r.text
        assert (await login(c, "bob", PASSWORD)).status_code == 303
        assert (await c.get("/schema/openapi.json")).status_code == 200
