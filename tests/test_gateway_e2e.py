"""End to end: a legacy client's day posted to a real ``desktrace-gateway`` ends, through the real stream
worker (``desktrace-stream``) and session sink (``desktrace-sink sessions``), as the right working time in
``desktrace-report day --format json``: active time = the sum of the working intervals."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.testing import running_gateway
from proto.topics import Topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Monday 10 March 2025, Europe/Berlin local times (no offset: the gateway's legacy_tz applies)
DAY = [
    ("working", "2025-03-10T08:00:00"),
    ("stopped", "2025-03-10T10:00:00"),
    ("working", "2025-03-10T10:30:00"),
    ("stopped", "2025-03-10T12:00:00"),
]
WORKING_S = 2 * 3600 + 90 * 60  # [08:00, 10:00] + [10:30, 12:00]
STOPPED_BETWEEN_S = 30 * 60  # [10:00, 10:30]: present, not working


def _commands_present() -> None:
    for name in ("desktrace-stream", "desktrace-sink", "desktrace-report"):
        if not (BIN / name).exists():
            pytest.fail(f"{name} is not installed in {BIN} (pip install -e '.[dev]')", pytrace=False)


@pytest.fixture
def pipeline(kafka_bootstrap: str, topics: Topics, fresh_pg_dsn: str, tmp_path: Path) -> Iterator[str]:
    """stream worker + session sink + gateway on the test's topics and database; yields the gateway URL."""
    _commands_present()
    from sinks.migrations import apply_migrations
    from sinks.testing import SinkProcess, free_port, sink_env
    from stream.testing import WorkerProcess, app_id_for, delete_internal_topics, worker_env

    asyncio.run(apply_migrations(fresh_pg_dsn))
    ARTIFACTS.mkdir(exist_ok=True)
    with ExitStack() as stack:
        worker = WorkerProcess(
            worker_env(kafka_bootstrap, topics, tmp_path / "stream-data"), ARTIFACTS / "e2e-stream.log"
        )
        stack.callback(lambda: asyncio.run(delete_internal_topics(kafka_bootstrap, app_id_for(topics))))
        stack.callback(worker.stop)
        worker.start(ready_timeout=90)
        sink_log = ARTIFACTS / "e2e-sink.log"
        sink_log.write_bytes(b"")
        sink = SinkProcess("sessions", sink_env(kafka_bootstrap, fresh_pg_dsn, topics, free_port()), sink_log)
        stack.callback(sink.stop, 15.0)
        env = {
            "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "DESKTRACE_TOPIC_PREFIX": topics.prefix,
            "DESKTRACE_PG_DSN": fresh_pg_dsn,
            "DESKTRACE_LEGACY_DOMAIN": "SHOP",
            "DESKTRACE_LEGACY_TZ": "Europe/Berlin",
            "DESKTRACE_API_TOKENS": "e2e-token",
        }
        url = stack.enter_context(running_gateway(env, log_path=ARTIFACTS / "e2e-gateway.log"))
        yield url + "|" + fresh_pg_dsn


def report_day(dsn: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "desktrace-report"), "day", "--date", "2025-03-10", "--format", "json", "--pg-dsn", dsn],
        capture_output=True,
        timeout=60,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def test_legacy_day_ends_as_working_time(pipeline: str) -> None:
    url, dsn = pipeline.split("|", 1)
    with httpx.Client(base_url=url, timeout=30) as c:
        for n, (state, ts) in enumerate(DAY):
            for _ in range(1 + n % 2):  # every other report is retried
                r = c.post("/api/report", json={"user": "till1", "state": state, "ts": ts})
                assert r.status_code == 200 and r.json() == {"success": True}, r.text
    deadline = time.monotonic() + 90
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = report_day(dsn)
        if rows and rows[0]["active_s"] == WORKING_S and rows[0]["idle_s"] == STOPPED_BETWEEN_S:
            break
        time.sleep(1)
    assert len(rows) == 1, rows
    (row,) = rows
    assert row["user_key"] == "shop\\till1" and row["tz"] == "Europe/Berlin"
    assert row["active_s"] == WORKING_S, row
    assert row["idle_s"] == STOPPED_BETWEEN_S and row["locked_s"] == 0, row
    assert row["first_activity"].startswith("2025-03-10T08:00:00")
    assert row["last_activity"].startswith("2025-03-10T12:00:00")
    # the gateway's report API says the same as the command line
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer e2e-token"}) as c:
        api = c.get("/api/v1/reports/day", params={"date": "2025-03-10"}).json()
    assert [(r["user_key"], r["active_s"], r["idle_s"]) for r in api] == [
        (row["user_key"], row["active_s"], row["idle_s"])
    ]
