"""Names the way people type them: ``desktrace-report --user alice`` and ``/user/alice`` resolve a bare login
that exactly one user key has, list the candidates when several do, and say so (non-zero exit, a visible
notice) for an unknown user, never an empty report that looks like a day off. Real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from litestar import Litestar

from gateway.app import create_app
from gateway.auth import hash_password
from gateway.settings import GatewaySettings
from proto.codec import decode_event, encode_event
from proto.events import StateChange
from proto.sessions import make_session
from reports.names import resolve
from sinks.migrations import apply_migrations
from sinks.rows import RAW_COLUMNS, raw_row
from tests.support.gateway import seed_sessions

REPORT = str(Path(sys.executable).parent / "desktrace-report")
DAY = "2025-03-10"
PASSWORD = "correct horse battery staple"
KEYS = ["corp\\alice", "corp\\bob", "shop\\bob", "shop\\josé"]


def test_resolve_pure() -> None:
    assert resolve("alice", KEYS).key == "corp\\alice"
    assert resolve("  ALICE ", KEYS).key == "corp\\alice"
    assert resolve("CORP\\Alice", KEYS).key == "corp\\alice"
    assert resolve("JOSÉ", KEYS).key == "shop\\josé"
    bob = resolve("bob", KEYS)
    assert bob.key is None and bob.ambiguous and bob.candidates == ("corp\\bob", "shop\\bob")
    assert "corp\\bob, shop\\bob" in bob.message()
    for name in ("carol", "hr\\alice", "lice", "corp\\", ""):
        miss = resolve(name, KEYS)
        assert miss.key is None and not miss.ambiguous and "no user" in miss.message(), name


def t(hh: int, mm: int) -> datetime:
    return datetime(2025, 3, 10, hh, mm, tzinfo=UTC)


@pytest.fixture
async def dsn(fresh_pg_dsn: str) -> str:
    await apply_migrations(fresh_pg_dsn)
    await seed_sessions(
        fresh_pg_dsn,
        [make_session(k, "active", t(9, n), t(10, n), ["pc1"]) for n, k in enumerate(KEYS)],
    )
    # shop\josé is a legacy client: its first report of the day (08:47:30) is its first logon
    await seed_raw_events(
        fresh_pg_dsn, [encode_event(e) for e in legacy_reports("josé", [t(8, 47) + timedelta(seconds=30)])]
    )
    return fresh_pg_dsn


def legacy_reports(login: str, times: list[datetime]) -> list[StateChange]:
    return [
        StateChange(
            agent_id="legacy-" + login, seq=n, ts=ts, input="none", user=login, domain="shop",
            host="10.0.0.9", tz="UTC", state="working",
        )
        for n, ts in enumerate(times, 1)
    ]


async def seed_raw_events(dsn: str, values: list[bytes]) -> None:
    """Write raw events the way the raw sink does (its own row builder and insert)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = [raw_row(decode_event(v)) for v in values]
        for day in sorted({r[2].date() for r in rows}):
            await conn.execute("SELECT raw_events_ensure_partition($1::date)", day)
        cols = ", ".join(f'"{c}"' for c in RAW_COLUMNS)
        marks = ", ".join(f"${i + 1}" for i in range(len(RAW_COLUMNS)))
        await conn.executemany(f"INSERT INTO raw_events ({cols}) VALUES ({marks})", rows)
    finally:
        await conn.close()


def run_report(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESKTRACE_PG_DSN": dsn}
    return subprocess.run([REPORT, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.postgres
def test_cli_resolves_a_bare_login_and_refuses_unknown_users(dsn: str) -> None:
    out = run_report(dsn, "day", "--date", DAY, "--user", "alice", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert [(r["user_key"], r["active_s"]) for r in json.loads(out.stdout)] == [("corp\\alice", 3600)]
    out = run_report(dsn, "user", "--date", DAY, "--user", "José", "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["user_key"] == "shop\\josé", out.stderr
    ambiguous = run_report(dsn, "day", "--date", DAY, "--user", "bob", "--format", "json")
    assert ambiguous.returncode == 1 and ambiguous.stdout == ""
    assert "corp\\bob" in ambiguous.stderr and "shop\\bob" in ambiguous.stderr
    for name in ("carol", "hr\\alice"):
        unknown = run_report(dsn, "week", "--date", DAY, "--user", name)
        assert unknown.returncode == 1 and unknown.stdout == "", name
        assert "no user" in unknown.stderr and "desktrace-report users" in unknown.stderr
    # a known user on a day without data is a day off, not an error
    off = run_report(dsn, "day", "--date", "2025-03-11", "--user", "alice", "--format", "json")
    assert off.returncode == 0 and json.loads(off.stdout) == []


@pytest.fixture
async def app(dsn: str) -> AsyncIterator[Litestar]:
    settings = GatewaySettings(pg_dsn=dsn, web_users=f"boss:{hash_password(PASSWORD)}")
    app = create_app(settings, start_kafka=False)
    yield app
    await app.state.gateway.close()


@pytest.mark.postgres
async def test_user_page_resolves_names_and_shows_a_notice_for_unknown_users(app: Litestar) -> None:
    transport = httpx.ASGITransport(app=cast(Any, app), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        r = await c.post("/login", data={"username": "boss", "password": PASSWORD, "next": "/"})
        assert r.status_code == 303
        r = await c.get(f"/user/Alice?date={DAY}")
        assert r.status_code in (302, 303, 307) and r.headers["location"] == f"/user/corp%5Calice?date={DAY}"
        r = await c.get(r.headers["location"])
        assert r.status_code == 200 and 'id="figures"' in r.text and 'id="notice"' not in r.text
        # the day page of a legacy user shows its first report as the first logon
        r = await c.get(f"/user/jos%C3%A9?date={DAY}", follow_redirects=True)
        assert r.status_code == 200 and '<dt>First logon</dt><dd class="first_logon">08:47</dd>' in r.text
        r = await c.get(f"/user/carol?date={DAY}")
        assert r.status_code == 404 and 'id="notice"' in r.text and "has ever been recorded" in r.text
        assert "No activity recorded" not in r.text and 'id="figures"' not in r.text
        r = await c.get(f"/user/bob?date={DAY}")
        assert r.status_code == 300 and 'id="candidates"' in r.text
        assert "/user/corp%5Cbob?date=" in r.text and "/user/shop%5Cbob?date=" in r.text
