"""End to end: a legacy client's reports posted to a real ``desktrace-gateway`` end, through the real stream
worker (``desktrace-stream``) and sinks (``desktrace-sink sessions`` and ``raw``), as the right working time
in ``desktrace-report day --format json``: active time = the sum of the working intervals, and a client shut
down while ``working`` is credited at most G or L after its last report (worked example 4 of the
sessions contract).

Dates are recent (relative to today): the gateway refuses reports older than the shared ``retention``
window, which both the gateway and the worker get here (16 days, so that example 4's week fits).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from proto.topics import Topics
from tests.support.gateway import running_gateway

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BIN = Path(sys.executable).parent
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

RETENTION_S = str(16 * 86400)
TODAY = datetime.now().astimezone().date()
# The latest Monday before today, Europe/Berlin local times (no offset: the gateway's legacy_tz applies)
MONDAY = TODAY - timedelta(days=(TODAY.weekday() or 7))
DAY = [
    ("working", f"{MONDAY}T08:00:00"),
    ("stopped", f"{MONDAY}T10:00:00"),
    ("working", f"{MONDAY}T10:30:00"),
    ("stopped", f"{MONDAY}T12:00:00"),
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
    from tests.support.process import free_port, sink_process, worker_process
    from tests.support.sinks import sink_env
    from tests.support.stream import app_id_for, delete_internal_topics, worker_env

    asyncio.run(apply_migrations(fresh_pg_dsn))
    ARTIFACTS.mkdir(exist_ok=True)
    with ExitStack() as stack:
        worker = worker_process(
            worker_env(
                kafka_bootstrap,
                topics,
                tmp_path / "stream-data",
                DESKTRACE_RETENTION=RETENTION_S,
                DESKTRACE_LEGACY_MAX_SPAN="14400",
            ),
            ARTIFACTS / "e2e-stream.log",
        )
        stack.callback(lambda: asyncio.run(delete_internal_topics(kafka_bootstrap, app_id_for(topics))))
        stack.callback(worker.stop)
        worker.start(ready_timeout=90)
        sink_log = ARTIFACTS / "e2e-sink.log"
        sink_log.write_bytes(b"")
        sink_settings = sink_env(kafka_bootstrap, fresh_pg_dsn, topics, free_port())
        sink = sink_process("sessions", sink_settings, sink_log)
        stack.callback(sink.stop, 15.0)
        raw_log = ARTIFACTS / "e2e-sink-raw.log"
        raw_log.write_bytes(b"")
        raw = sink_process("raw", sink_env(kafka_bootstrap, fresh_pg_dsn, topics, free_port()), raw_log)
        stack.callback(raw.stop, 15.0)
        env = {
            "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "DESKTRACE_TOPIC_PREFIX": topics.prefix,
            "DESKTRACE_PG_DSN": fresh_pg_dsn,
            "DESKTRACE_LEGACY_DOMAIN": "SHOP",
            "DESKTRACE_LEGACY_TZ": "Europe/Berlin",
            "DESKTRACE_API_TOKENS": "e2e-token",
            "DESKTRACE_RETENTION": RETENTION_S,
        }
        url = stack.enter_context(running_gateway(env, log_path=ARTIFACTS / "e2e-gateway.log"))
        yield url + "|" + fresh_pg_dsn


def report_day(dsn: str, day: date = MONDAY, *more: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(BIN / "desktrace-report"), "day", "--date", str(day), *more, "--format=json", f"--pg-dsn={dsn}"],
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
            if rows[0]["first_logon"] is not None:  # the raw sink wrote the reports too
                break
        time.sleep(1)
    assert len(rows) == 1, rows
    (row,) = rows
    assert row["user_key"] == "shop\\till1" and row["tz"] == "Europe/Berlin"
    assert row["active_s"] == WORKING_S, row
    assert row["idle_s"] == STOPPED_BETWEEN_S and row["locked_s"] == 0, row
    assert row["first_activity"].startswith(f"{MONDAY}T08:00:00")
    assert row["last_activity"].startswith(f"{MONDAY}T12:00:00")
    # the client starts at logon: its first report of the day is the first logon
    assert row["first_logon"].startswith(f"{MONDAY}T08:00:00")
    # the gateway's report API says the same as the command line
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer e2e-token"}) as c:
        api = c.get("/api/v1/reports/day", params={"date": str(MONDAY)}).json()
    assert [(r["user_key"], r["active_s"], r["idle_s"]) for r in api] == [
        (row["user_key"], row["active_s"], row["idle_s"])
    ]


# Worked example 4 (L = 4 h): a Friday between 7 and 13 days ago, so the next Wednesday is in the past.
FRIDAY = TODAY - timedelta(days=7 + (TODAY.weekday() - 4) % 7)
EXAMPLE4 = [
    ("working", FRIDAY, "09:00"),
    ("stopped", FRIDAY, "12:00"),
    ("working", FRIDAY, "12:45"),
    ("stopped", FRIDAY, "15:30"),
    ("working", FRIDAY, "15:40"),
    ("working", FRIDAY + timedelta(days=3), "09:00"),  # Monday: the client was shut down on Friday
    ("working", FRIDAY + timedelta(days=4), "08:00"),  # Tuesday
    ("stopped", FRIDAY + timedelta(days=5), "09:00"),  # Wednesday: the laptop slept since Tuesday
]
#: (date, active_s, idle_s) the contract gives for each local day of the example
EXAMPLE4_DAYS = [
    (FRIDAY, 3 * 3600 + (2 * 3600 + 45 * 60) + 5 * 60, 45 * 60 + 10 * 60),
    (FRIDAY + timedelta(days=3), 5 * 60, 0),
    (FRIDAY + timedelta(days=4), 4 * 3600, 0),
]


def test_legacy_client_shut_down_while_working_gets_the_legacy_span_end(pipeline: str) -> None:
    url, dsn = pipeline.split("|", 1)
    with httpx.Client(base_url=url, timeout=30) as c:
        for state, day, hm in EXAMPLE4:
            r = c.post("/api/report", json={"user": "till4", "state": state, "ts": f"{day}T{hm}:00"})
            assert r.status_code == 200 and r.json() == {"success": True}, r.text
    wednesday = FRIDAY + timedelta(days=5)
    want = [("shop\\till4", str(d), a, i) for d, a, i in EXAMPLE4_DAYS]
    deadline = time.monotonic() + 90
    got: list[tuple[str, str, int, int]] = []
    logons: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        rows = report_day(dsn, FRIDAY, "--end", str(wednesday))
        got = [(r["user_key"], r["date"], r["active_s"], r["idle_s"]) for r in rows if r["active_s"]]
        logons = {r["date"]: r["first_logon"] for r in rows}
        if got == want and len(logons) == 4:
            break
        time.sleep(1)
    assert got == want
    # first logon = the first report of each local day (Wednesday has a row for its report alone)
    assert {d: (t or "")[11:16] for d, t in logons.items()} == {
        str(FRIDAY): "09:00",
        str(FRIDAY + timedelta(days=3)): "09:00",
        str(FRIDAY + timedelta(days=4)): "08:00",
        str(wednesday): "09:00",
    }
    # Nothing on Saturday or Sunday: the client was off; Friday's ISO week is Friday's work alone.
    for d in (FRIDAY + timedelta(days=1), FRIDAY + timedelta(days=2)):
        assert not [r for r in report_day(dsn, d) if r["active_s"] or r["idle_s"]]
    week = subprocess.run(
        [str(BIN / "desktrace-report"), "week", "--date", str(FRIDAY), "--user", "till4", "--format=json",
         f"--pg-dsn={dsn}"],
        capture_output=True, timeout=60, check=True,
    )
    (row,) = json.loads(week.stdout)
    assert (row["user_key"], row["active_s"]) == ("shop\\till4", EXAMPLE4_DAYS[0][1])


def test_latin1_and_utf8_clients_of_one_name_end_as_one_user_with_one_day(pipeline: str) -> None:
    """Windows PowerShell 5.1 sends "José" in ISO-8859-1 (with Expect: 100-continue); another client sends
    UTF-8: one user key, one day, and ``--user josé`` finds it."""
    from tests.test_gateway_hostile import powershell_post

    url, dsn = pipeline.split("|", 1)
    day = MONDAY
    latin1 = f'{{"user":"José","state":"working","ts":"{day}T09:00:00"}}'.encode("latin-1")
    answer = powershell_post(url, latin1)
    assert answer.got_continue and answer.status == 200, answer
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post(
            "/api/report",
            content=f'{{"user":"shop\\\\JOSÉ","state":"stopped","ts":"{day}T11:00:00"}}'.encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 90
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            rows = report_day(dsn, day, "--user", "josé")
        except subprocess.CalledProcessError as exc:
            assert exc.returncode == 1  # no session of the user yet: "no user 'josé'"
            rows = []
        if rows and rows[0]["active_s"] == 2 * 3600:
            break
        time.sleep(1)
    assert [(r["user_key"], r["date"], r["active_s"]) for r in rows] == [("shop\\josé", str(day), 2 * 3600)]
    assert rows[0]["first_logon"].startswith(f"{day}T09:00:00")
