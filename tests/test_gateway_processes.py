"""The Processes page (in-process ASGI) over the hand-built event log of tests/mining_fixture.py in a real
PostgreSQL: login required, the DFG as an SVG image (or a table without Graphviz), the recurring tasks."""

from __future__ import annotations

import base64
import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from gateway.app import create_app
from gateway.auth import hash_password
from gateway.settings import GatewaySettings
from tests.mining_fixture import load_fixture

pytestmark = pytest.mark.postgres

PASSWORD = "correct horse battery staple"
PAGE = "/processes?start=2026-03-29&end=2026-03-29&user=corp%5Calice"


@pytest.fixture
async def app(fresh_pg_dsn: str) -> AsyncIterator[Litestar]:
    await load_fixture(fresh_pg_dsn)
    settings = GatewaySettings(pg_dsn=fresh_pg_dsn, web_users=f"alice:{hash_password(PASSWORD)}")
    app = create_app(settings, start_kafka=False)
    yield app
    await app.state.gateway.close()


@contextlib.asynccontextmanager
async def logged_in(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=cast(Any, app), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        r = await c.post("/login", data={"username": "alice", "password": PASSWORD, "next": "/"})
        assert r.status_code == 303
        yield c


async def test_needs_login(app: Litestar) -> None:
    transport = httpx.ASGITransport(app=cast(Any, app), client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        r = await c.get(PAGE)
        assert r.status_code == 401 and 'name="password"' in r.text


async def test_graph_as_svg_image_and_tasks(app: Litestar) -> None:
    async with logged_in(app) as c:
        r = await c.get(PAGE)
        assert r.status_code == 200, r.text[:500]
        m = re.search(r'<img id="dfg" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', r.text)
        assert m, r.text[:2000]
        svg = base64.b64decode(m.group(1)).decode("utf-8")
        assert ET.fromstring(svg).tag.endswith("svg")
        assert "Outlook (3)" in svg and "Chrome (3)" in svg and "Excel (3)" in svg
        table = r.text[r.text.index('id="edges"') :]
        assert '<td>Chrome</td><td>Outlook</td><td class="num">3</td>' in table
        tasks = r.text[r.text.index('id="task-table"') :]
        assert "Outlook → Excel → Chrome" in tasks and "Excel → Chrome → Outlook" in tasks
        window = await c.get(PAGE + "&level=window")
        assert window.status_code == 200 and "Chrome · intranet.example.com" in window.text
        assert (await c.get(PAGE + "&level=pixel")).status_code == 400
        assert (await c.get("/processes?start=2026-03-01&end=2026-05-01")).status_code == 400
        empty = await c.get("/processes?start=2025-01-01&user=corp%5Calice")
        assert empty.status_code == 200 and "No UI events in this period" in empty.text


async def test_table_fallback_without_graphviz(app: Litestar, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no `dot` to be found
    async with logged_in(app) as c:
        r = await c.get(PAGE)
        assert r.status_code == 200
        assert 'id="no-graphviz"' in r.text and 'id="dfg"' not in r.text
        assert '<td>Outlook</td><td>Excel</td><td class="num">2</td>' in r.text


async def test_team_from_the_gateway_team_file(fresh_pg_dsn: str, tmp_path: Path) -> None:
    """``team=`` reads the gateway's ``teams_file`` (the one every page reads), not a setting of its own."""
    await load_fixture(fresh_pg_dsn)
    teams = tmp_path / "teams.toml"
    teams.write_text('[teams]\nops = ["corp\\\\bob"]\n[roles.alice]\nrole = "admin"\n')
    settings = GatewaySettings(
        pg_dsn=fresh_pg_dsn, web_users=f"alice:{hash_password(PASSWORD)}", teams_file=str(teams)
    )
    app = create_app(settings, start_kafka=False)
    try:
        async with logged_in(app) as c:
            r = await c.get("/processes?start=2026-03-28&end=2026-03-29&team=ops")
            assert r.status_code == 200
            assert "<td>Word</td><td>Word</td>" in r.text and "<td>Chrome</td>" not in r.text
            assert '<option value="ops" selected>ops</option>' in r.text
            assert (await c.get("/processes?start=2026-03-28&end=2026-03-29&team=nope")).status_code == 404
    finally:
        await app.state.gateway.close()


async def test_unknown_team_without_team_file_is_404(app: Litestar) -> None:
    async with logged_in(app) as c:
        r = await c.get("/processes?start=2026-03-28&end=2026-03-29&team=ops")
        assert r.status_code == 404
