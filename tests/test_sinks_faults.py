"""Crash and outage behaviour of the raw sink, run as a real ``desktrace-sink raw`` subprocess:

- SIGKILL in the middle of the stream, then a restart: no row lost, none duplicated;
- its PostgreSQL (a private instance) stopped for 30 s under load and started again: the sink backs off,
  pauses consumption, reports it (retries, postgres_up, readiness), and ends with every event exactly once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from proto.topics import Topics
from sinks.partitions import partition_name
from tests.support.events import event_mix
from tests.support.kafka import event_records, publish
from tests.support.metrics import sample, scrape
from tests.support.process import ServiceHandle, free_port, sink_process
from tests.support.sinks import fetchval, sink_env, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

OUTAGE_S = float(os.environ.get("DESKTRACE_TEST_PG_OUTAGE_S", "30"))


@pytest.fixture
def sinks() -> Iterator[list[ServiceHandle]]:
    started: list[ServiceHandle] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.stop()


async def count(dsn: str) -> int:
    return int(await fetchval(dsn, "SELECT count(*) FROM raw_events"))  # type: ignore[call-overload]


async def assert_all_written_exactly_once(dsn: str, expected: int, sink: ServiceHandle) -> None:
    """Wait (90 s at most) until ``expected`` rows are in, settle, then: no row lost, none duplicated."""

    async def all_written() -> bool:
        return await count(dsn) >= expected

    assert await wait_until(all_written, 90), sink.tail()
    await asyncio.sleep(1.0)
    conn = await asyncpg.connect(dsn)
    try:
        total = await conn.fetchval("SELECT count(*) FROM raw_events")
        distinct = await conn.fetchval("SELECT count(DISTINCT (agent_id, seq)) FROM raw_events")
    finally:
        await conn.close()
    assert total == distinct == expected


async def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics, tmp_path: Path, sinks: list[ServiceHandle]
) -> None:
    events = event_mix(12000, agents=6)
    await publish(kafka_bootstrap, event_records(topics, events))
    port = free_port()
    env = sink_env(kafka_bootstrap, fresh_pg_dsn, topics, port, batch_size=150)
    first = sink_process("raw", env, tmp_path / "sink1.log")
    sinks.append(first)

    async def some_written() -> bool:
        return await count(fresh_pg_dsn) >= 600

    assert await wait_until(some_written, 60, interval=0.05), first.tail()
    first.kill()
    at_kill = await count(fresh_pg_dsn)
    assert 0 < at_kill < len(events), "the kill must land mid-stream"

    second = sink_process("raw", env, tmp_path / "sink2.log")
    sinks.append(second)

    await assert_all_written_exactly_once(fresh_pg_dsn, len(events), second)
    # beside the loop, the raw sink keeps partitions created ahead (default: 7 days)
    ahead = (datetime.now(UTC) + timedelta(days=7)).date()
    assert await fetchval(fresh_pg_dsn, "SELECT to_regclass($1) IS NOT NULL", partition_name(ahead))
    # the restarted sink resumed from committed offsets: it re-read at most the uncommitted tail
    status, text = scrape(port)
    assert status == 200
    consumed = sample(text, "desktrace_sink_records_total", table="raw_events") or 0
    assert consumed < len(events), "the restart re-read everything: offsets were not committed"
    assert second.stop() == 0


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[object]:
    from devstack.postgres import PostgresInstance

    pg = PostgresInstance(tmp_path / "pg", port=free_port(), fsync=False, progress=lambda _l: None)
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


async def test_postgres_down_30s_under_load_retries_and_loses_nothing(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, sinks: list[ServiceHandle], private_pg: object
) -> None:
    from devstack.postgres import PostgresInstance

    assert isinstance(private_pg, PostgresInstance)
    dsn = private_pg.dsn
    port = free_port()
    sink = sink_process(
        "raw", sink_env(kafka_bootstrap, dsn, topics, port, batch_size=200), tmp_path / "sink.log"
    )
    sinks.append(sink)

    events = event_mix(9000, agents=5)
    records = event_records(topics, events)
    chunks = [records[i : i + 300] for i in range(0, len(records), 300)]
    await publish(kafka_bootstrap, chunks[0])

    async def first_rows() -> bool:
        return await count(dsn) >= 300

    assert await wait_until(first_rows, 60), sink.tail()

    loop = asyncio.get_running_loop()

    async def load() -> None:  # keep publishing through the outage
        for chunk in chunks[1:]:
            await publish(kafka_bootstrap, chunk)
            await asyncio.sleep(OUTAGE_S / len(chunks))

    producer = asyncio.create_task(load())
    await asyncio.sleep(0.5)
    await asyncio.to_thread(private_pg.stop)
    down_at = loop.time()
    # While the database is down: retries counted, postgres_up 0, not ready, still alive.
    await asyncio.sleep(min(5.0, OUTAGE_S / 2))
    status, text = scrape(port)
    assert status == 200
    assert (sample(text, "desktrace_sink_retries_total", table="raw_events", target="postgres") or 0) >= 1
    assert sample(text, "desktrace_sink_postgres_up", table="raw_events") == 0
    assert scrape(port, "/readyz")[0] == 503
    assert scrape(port, "/healthz")[0] == 200
    assert sink.proc.poll() is None, "the sink died while the database was down"
    consumed_early = sample(text, "desktrace_sink_records_total", table="raw_events")
    await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - down_at) - 1.0))
    # backpressure: nothing more was consumed while the database was down, and the lag shows it
    status, text = scrape(port)
    assert sample(text, "desktrace_sink_records_total", table="raw_events") == consumed_early
    lag = sum(
        sample(text, "desktrace_sink_consumer_lag", topic=t, partition=str(p)) or 0
        for t in topics.raw
        for p in range(3)
    )
    assert lag > 0
    await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - down_at)))
    await asyncio.to_thread(private_pg.start)
    await asyncio.wait_for(producer, 120)

    await assert_all_written_exactly_once(dsn, len(events), sink)
    status, text = scrape(port)
    retries = sample(text, "desktrace_sink_retries_total", table="raw_events", target="postgres") or 0
    assert retries >= 3, "a 30 s outage with a 2 s cap must retry several times"
    assert sample(text, "desktrace_sink_postgres_up", table="raw_events") == 1

    async def ready() -> bool:
        return scrape(port, "/readyz")[0] == 200

    assert await wait_until(ready, 10)
    assert sink.stop() == 0
