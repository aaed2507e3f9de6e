"""``desktrace-demo --exit`` end to end against the real Kafka and PostgreSQL, at awkward hours.

The issue's failure: before 07:00 UTC the demo simulated an empty "today" and timed out; until 17:00 UTC it
showed a partial day. Here the demo's clock is set (``--now``, the only clock it reads to choose the day)
before 07:00 UTC and after 17:00 UTC; each run must exit 0 with a complete working day of every simulated
user, in their own time zones, in its database, read back with the real report command.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.simulator import DEMO_ZONES

BIN = Path(sys.executable).parent


def _fetch(dsn: str, sql: str) -> list[tuple[object, ...]]:
    import asyncpg

    async def go() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture
def demo_db(pg_dsn: str) -> Iterator[tuple[str, str]]:
    """A database name for one demo run (the demo creates it) and its DSN; dropped afterwards."""
    from devstack.postgres import with_database
    from tests.support.databases import drop_database

    name = f"t_demo_{uuid.uuid4().hex[:12]}"
    yield name, with_database(pg_dsn, name)
    drop_database(pg_dsn, with_database(pg_dsn, name))


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("now", "day"),
    [
        ("2026-11-30T05:20:00Z", date(2026, 11, 27)),  # Monday before 07:00 UTC: Friday
        ("2026-11-25T18:30:00Z", date(2026, 11, 24)),  # Wednesday after 17:00 UTC: Tuesday
    ],
    ids=["before-07-utc", "after-17-utc"],
)
def test_demo_shows_a_complete_day_at_any_hour(
    now: str, day: date, kafka_bootstrap: str, pg_dsn: str, demo_db: tuple[str, str]
) -> None:
    name, dsn = demo_db
    users = 3  # one in each of the demo's zones
    env = {
        **os.environ,
        "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DESKTRACE_PG_DSN": pg_dsn,
    }
    argv = [
        str(BIN / "desktrace-demo"),
        "--exit",
        "--users",
        str(users),
        "--now",
        now,
        "--database",
        name,
        "--speed",
        "20000",
        "--close-timeout",
        "2",
        "--progress",
        "plain",
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=360, check=False)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert f"Working time on {day.isoformat()}" in out.stdout
    assert "Prometheus: http://127.0.0.1:" in out.stdout
    assert "Web pages: http://127.0.0.1:" in out.stdout
    assert "fleet: 100% of the day" in out.stderr  # plain progress lines, not a bar, in a pipe
    assert f"users with active time {users} of {users}" in out.stderr

    # the day as the report command reads it from the demo's database
    rep = subprocess.run(
        [str(BIN / "desktrace-report"), "day", "--date", day.isoformat(), "--format", "json"],
        env={**os.environ, "DESKTRACE_PG_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = json.loads(rep.stdout)
    assert len(rows) == users, rows
    assert {r["tz"] for r in rows} == set(DEMO_ZONES)
    for r in rows:
        assert r["date"] == day.isoformat()
        assert r["active_s"] >= 4 * 3600, r  # a working day's active time, not a partial one
        assert r["presence_s"] >= 6 * 3600, r
        zone = ZoneInfo(r["tz"])
        first = datetime.fromisoformat(r["first_logon"]).astimezone(zone)
        last = datetime.fromisoformat(r["last_activity"]).astimezone(zone)
        assert first.date() == day and 6 <= first.hour <= 11, r  # the morning of that local date
        assert last.date() == day and last.hour >= 14, r  # ... through the afternoon

    # every user's day ended: the agent logged off and stopped, all of it stored
    ends = _fetch(
        dsn,
        "SELECT user_key, count(*) FILTER (WHERE type = 'Logoff'), count(*) FILTER (WHERE type = 'AgentStop')"
        " FROM raw_events GROUP BY user_key",
    )
    assert len(ends) == users and all(e[1] == 1 and e[2] == 1 for e in ends), ends


@pytest.mark.timeout(400)
def test_demo_names_the_stage_that_stored_less_with_every_count(
    kafka_bootstrap: str, pg_dsn: str, demo_db: tuple[str, str]
) -> None:
    """The raw sink keeps 1 day and the demo's day is older: every event goes to the dead-letter topic.
    The demo must say that PostgreSQL stored fewer events than the fleet sent, with the counts of every
    stage, and exit 1 (not time out about sessions)."""
    name, _dsn = demo_db
    env = {
        **os.environ,
        "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DESKTRACE_PG_DSN": pg_dsn,
        "DESKTRACE_RAW_RETENTION_DAYS": "1",  # read by the raw sink the demo starts
    }
    argv = [
        str(BIN / "desktrace-demo"),
        "--exit",
        "--users",
        "1",
        "--date",
        "2026-11-20",  # with --now a week later: older than the sink keeps
        "--now",
        "2026-11-28T05:20:00Z",
        "--database",
        name,
        "--speed",
        "20000",
        "--close-timeout",
        "2",
        "--no-prometheus",
    ]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=360, check=False)
    assert out.returncode == 1, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    err = out.stderr
    assert "PostgreSQL stored 0 raw rows of the " in err, err
    assert "went to the dead-letter topic" in err
    counts = next(line for line in err.splitlines() if line.strip().startswith("counts:"))
    sent = int(counts.split("sent to Kafka ")[1].split(",")[0])
    assert sent > 500
    assert f"events produced by the fleet {sent}" in counts and f"in the raw topics {sent}" in counts
    assert "raw rows in PostgreSQL 0" in counts and "sessions" in counts
    assert "Working time on" not in out.stdout
