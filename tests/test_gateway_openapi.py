"""The OpenAPI description kept in the repo is the one the code serves."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx

from gateway.app import create_app
from gateway.openapi import KEPT, render
from gateway.settings import GatewaySettings


def test_kept_openapi_is_current() -> None:
    assert KEPT.exists(), "gateway/openapi.json is missing: run `python -m gateway.openapi --write`"
    assert KEPT.read_text(encoding="utf-8") == render(), (
        "gateway/openapi.json is stale: run `python -m gateway.openapi --write` and commit it"
    )


async def test_served_openapi_equals_kept() -> None:
    app = create_app(GatewaySettings(api_tokens="openapi-token"), start_kafka=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cast(Any, app)), base_url="http://gw"
    ) as c:
        assert (await c.get("/schema/openapi.json")).status_code == 401  # the description needs a login
        r = await c.get("/schema/openapi.json", headers={"Authorization": "Bearer openapi-token"})
    assert r.status_code == 200
    served = r.json()
    kept = json.loads(KEPT.read_text(encoding="utf-8"))
    assert served == kept
    assert set(kept["paths"]) >= {
        "/api/report",
        "/api/v1/reports/day",
        "/api/v1/reports/week",
        "/api/v1/reports/month",
        "/api/v1/reports/user",
        "/api/v1/reports/apps",
    }
