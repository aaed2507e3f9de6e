"""Property tests from the gateway's own OpenAPI description, against a live gateway with a real Kafka and
PostgreSQL: no request ever gets a 5xx, responses match the description, and invalid legacy bodies are
refused with a 4xx."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from proto.sessions import make_session
from proto.topics import Topics
from sinks.migrations import apply_migrations
from tests.support.gateway import running_gateway, seed_sessions

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

TOKEN = "schemathesis-token"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
MAX_EXAMPLES = 12


@pytest.fixture
def gateway_url(kafka_bootstrap: str, topics: Topics, fresh_pg_dsn: str) -> Iterator[str]:
    async def seed() -> None:
        await apply_migrations(fresh_pg_dsn)
        t0 = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
        t1 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
        await seed_sessions(fresh_pg_dsn, [make_session("corp\\alice", "active", t0, t1, ["pc1"])])

    asyncio.run(seed())
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DESKTRACE_TOPIC_PREFIX": topics.prefix,
        "DESKTRACE_PG_DSN": fresh_pg_dsn,
        "DESKTRACE_API_TOKENS": TOKEN,
        "DESKTRACE_LEGACY_TOKEN": "",
        "DESKTRACE_LEGACY_NETWORKS": "",
    }
    with running_gateway(env, log_path=ARTIFACTS / "gateway-schemathesis.log") as url:
        yield url


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _check_operation(url: str, operation: APIOperation, mode: GenerationMode, statuses: set[int]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        statuses.add(response.status_code)
        assert response.status_code < 500, (label, case.body, case.query, response.text[:500])
        if mode is GenerationMode.POSITIVE:
            case.validate_response(response, checks=CHECKS)
        elif operation.path == "/api/report":
            assert 400 <= response.status_code < 500, (case.body, response.status_code)
            assert response.json()["success"] is False

    try:
        run()
    except Unsatisfiable:
        # nothing invalid can be sent to an operation without parameters or body (/healthz)
        assert mode is GenerationMode.NEGATIVE and not operation.body and not len(operation.query)
    except Exception as exc:  # name the operation that failed
        raise AssertionError(f"{label} ({mode.value}): {exc}") from exc


def _check_all(url: str, mode: GenerationMode) -> dict[str, set[int]]:
    """Run every operation of the served description; the status codes seen, per operation."""
    schema = schemathesis.openapi.from_url(
        f"{url}/schema/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        _check_operation(url, operation, mode, seen.setdefault(label, set()))
    return seen


def test_valid_requests_never_fail(gateway_url: str) -> None:
    seen = _check_all(gateway_url, GenerationMode.POSITIVE)
    assert 200 in seen["GET /api/v1/reports/day"]
    assert 200 in seen["POST /api/report"] or 422 in seen["POST /api/report"]


def test_invalid_requests_get_4xx(gateway_url: str, kafka_bootstrap: str, topics: Topics) -> None:
    from tests.test_gateway_hostile import _raw_values

    seen = _check_all(gateway_url, GenerationMode.NEGATIVE)
    statuses = seen["POST /api/report"]
    assert statuses and all(400 <= s < 500 for s in statuses), statuses
    # nothing of a refused body reached Kafka
    assert asyncio.run(_raw_values(kafka_bootstrap, topics.presence, expect=0)) == []
