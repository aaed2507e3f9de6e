"""Migrations and partitions on a real PostgreSQL: idempotent and concurrent-safe migrations, partitions
created on demand for far days, retention, and the ``desktrace-sink`` maintenance commands."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from proto.codec import encode_event
from proto.deadletter import HEADER_ERROR_CLASS, header_map
from proto.events import Heartbeat, WindowSwitch
from proto.topics import Topics
from sinks.migrations import apply_migrations, discover
from sinks.partitions import PartitionCache, list_partitions, partition_name
from sinks.writers import RawWriter
from tests.support.events import event_mix
from tests.support.kafka import publish
from tests.support.sinks import dead_letters, fetchval, running, settings_for, wait_until

pytestmark = pytest.mark.postgres


async def test_migrations_twice_are_a_noop_and_concurrent_runs_apply_once(fresh_pg_dsn: str) -> None:
    versions = [m.version for m in discover()]
    assert versions and versions[0] == "0001"
    first, second = await asyncio.gather(apply_migrations(fresh_pg_dsn), apply_migrations(fresh_pg_dsn))
    assert sorted([first, second], key=len) == [[], versions]
    assert await apply_migrations(fresh_pg_dsn) == []
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(versions)
        cols = {
            r["column_name"]: r["data_type"]
            for r in await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'sessions'"
            )
        }
        for name in (
            "session_id",
            "user_key",
            "kind",
            "reason",
            "started_at",
            "ended_at",
            "duration_s",
            "hosts",
            "tz",
            "updated_at",
        ):
            assert name in cols
        assert cols["hosts"] == "ARRAY" and cols["started_at"] == "timestamp with time zone"
        strategy = await conn.fetchval(
            "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'raw_events'::regclass"
        )
        assert strategy == "r"
        has_default = await conn.fetchval(
            "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'raw_events'::regclass "
            "AND partdefid <> 0"
        )
        assert has_default == 0
    finally:
        await conn.close()


async def test_migrate_command_via_cli(fresh_pg_dsn: str) -> None:
    def run() -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "sinks.cli", "migrate", "--pg-dsn", fresh_pg_dsn],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(proc.stdout)["applied"]

    assert await asyncio.to_thread(run) == [m.version for m in discover()]
    assert await asyncio.to_thread(run) == []


async def test_callers_meeting_a_new_day_at_once_all_find_its_partition(fresh_pg_dsn: str) -> None:
    """Two raw sinks (or two batches of one written at once) meeting the same new day create its partition
    together: one creates it, the others find it, none fails. Before migration 0003 the callers that
    waited for the advisory lock still missed the new partition and failed with duplicate_table (3 of 4
    here, on every day)."""
    await apply_migrations(fresh_pg_dsn)
    conns = [await asyncpg.connect(fresh_pg_dsn) for _ in range(4)]
    try:
        for offset in range(5):
            day = datetime(2031, 1, 1, tzinfo=UTC).date() + timedelta(days=offset)

            async def ensure(conn: asyncpg.Connection, day: object = day) -> bool:
                async with conn.transaction():
                    return bool(await conn.fetchval("SELECT raw_events_ensure_partition($1)", day))

            made = await asyncio.gather(*(ensure(c) for c in conns))
            assert sorted(made) == [False, False, False, True]
        partitions = await list_partitions(conns[0])
        assert {f"raw_events_p203101{d:02d}" for d in range(1, 6)} <= set(partitions)
    finally:
        for conn in conns:
            await conn.close()


async def test_partitions_on_demand_for_far_days_and_retention(fresh_pg_dsn: str) -> None:
    await apply_migrations(fresh_pg_dsn)
    today = datetime.now(UTC).date()
    past = datetime.combine(today - timedelta(days=350), datetime.min.time(), UTC) + timedelta(
        hours=23, minutes=59
    )
    future = datetime(today.year + 5, 2, 28, 0, 0, tzinfo=UTC)
    writer = RawWriter(retention_days=400)
    writer.refresh(datetime.now(UTC))
    base = {"input": "none", "user": "u", "domain": "d", "host": "h", "last_input_ts": None}
    rows = [
        writer.decode(encode_event(Heartbeat(agent_id="a", seq=1, ts=past, **base))),  # type: ignore[arg-type]
        writer.decode(encode_event(Heartbeat(agent_id="a", seq=2, ts=future, **base))),  # type: ignore[arg-type]
    ]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await writer.prepare(conn)
        assert partition_name(past.date()) not in await list_partitions(conn)
        await writer.before_write(conn, rows)
        async with conn.transaction():
            assert await writer.write(conn, rows) == (2, 0)
        async with conn.transaction():
            assert await writer.write(conn, rows) == (0, 2)  # idempotent
        parts = await list_partitions(conn)
        assert parts[partition_name(past.date())] == past.date()
        assert parts[partition_name(future.date())] == future.date()
        # each row sits in its day's partition
        where = await conn.fetch("SELECT tableoid::regclass::text AS part, seq FROM raw_events ORDER BY seq")
        assert [r["part"] for r in where] == [partition_name(past.date()), partition_name(future.date())]
        # a second cache asks the database (the function is idempotent) and creates nothing
        assert await PartitionCache().ensure(conn, [past.date(), future.date()]) == []
        # an expired partition exists; the partitions command drops it and creates the window
        old = today - timedelta(days=401)
        assert await conn.fetchval("SELECT raw_events_ensure_partition($1)", old) is True
    finally:
        await conn.close()

    def partitions_cmd() -> dict[str, object]:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sinks.cli",
                "partitions",
                "--pg-dsn",
                fresh_pg_dsn,
                "--raw-retention-days",
                "400",
                "--partitions-ahead-days",
                "3",
                "--partitions-behind-days",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(proc.stdout)

    out = await asyncio.to_thread(partitions_cmd)
    assert out["dropped"] == [partition_name(old)]
    assert out["created"] == [(today + timedelta(days=d)).isoformat() for d in range(-1, 4)]
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        parts = await list_partitions(conn)
        assert partition_name(old) not in parts
        assert partition_name(past.date()) in parts  # inside retention: kept
        assert await conn.fetchval("SELECT count(*) FROM raw_events") == 2
    finally:
        await conn.close()
    assert (await asyncio.to_thread(partitions_cmd))["created"] == []


@pytest.mark.kafka
async def test_the_direct_copy_and_the_staging_path_write_each_event_once(fresh_pg_dsn: str) -> None:
    """A batch is COPYed straight into ``raw_events``; one holding a row already there (a redelivery) or
    the same event twice (an agent re-sending) goes through the staging table instead, which skips
    them, and the next batch without a duplicate goes straight again. Every event ends as one row."""
    await apply_migrations(fresh_pg_dsn)
    writer = RawWriter(retention_days=0)
    events = event_mix(400, agents=3)
    rows = [writer.decode(encode_event(e)) for e in events]
    a, b, c, d = rows[:100], rows[100:200], rows[200:300], rows[300:]
    conn = await asyncpg.connect(fresh_pg_dsn)

    async def write(batch: list[tuple[object, ...]]) -> tuple[tuple[int, int], bool]:
        await writer.before_write(conn, batch)
        async with conn.transaction():
            counts = await writer.write(conn, batch)
        return counts, writer.staging

    try:
        await writer.prepare(conn)
        assert await write(a) == ((100, 0), False)  # straight in
        assert await write(a[50:] + b) == ((100, 50), True)  # a redelivery: staged, duplicates skipped
        assert await write(c[:10] + b[:5]) == ((10, 5), True)  # still staged: it met duplicates
        assert await write(c[10:]) == ((90, 0), False)  # staged, none met: the next goes straight
        assert await write(d[:50] + d[:1]) == ((50, 1), True)  # one event twice in one batch
        assert await write(d[50:]) == ((50, 0), False)
        stored = await conn.fetch("SELECT agent_id, seq, ts, details::text AS details FROM raw_events")
        assert sorted((r["agent_id"], r["seq"], r["ts"]) for r in stored) == sorted(
            (r[0], r[1], r[2]) for r in rows
        )
        by_key = {(r[0], r[1], r[2]): r[17] for r in rows}
        assert all(json.loads(r["details"]) == json.loads(by_key[(r["agent_id"], r["seq"], r["ts"])])
                   for r in stored)
    finally:
        await conn.close()


async def test_event_older_than_retention_is_dead_lettered_late(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    now = datetime.now(UTC)
    ctx = {"input": "hardware", "user": "u", "domain": "d", "host": "h", "app": "x"}
    old = WindowSwitch(agent_id="a", seq=1, ts=now - timedelta(days=30), **ctx)  # type: ignore[arg-type]
    ancient = WindowSwitch(agent_id="a", seq=2, ts=now - timedelta(days=90), **ctx)  # type: ignore[arg-type]
    fresh = WindowSwitch(agent_id="a", seq=3, ts=now, **ctx)  # type: ignore[arg-type]
    await publish(kafka_bootstrap, [(topics.ui, b"d\\u", encode_event(e)) for e in (old, ancient, fresh)])
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, raw_retention_days=60)
    async with running(RawWriter(settings.raw_retention_days), settings):

        async def two() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == 2

        assert await wait_until(two, 30)
        dls = await dead_letters(kafka_bootstrap, topics, 1)
    assert [header_map(r.headers)[HEADER_ERROR_CLASS] for r in dls] == ["late"]  # type: ignore[attr-defined]
    assert [r.value for r in dls] == [encode_event(ancient)]  # type: ignore[attr-defined]
