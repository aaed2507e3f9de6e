"""The sinks end to end on the real Kafka and PostgreSQL, run as in-process tasks: exact row counts with
duplicates, sessions with retractions, poison records dead-lettered beside written neighbours, the offsets
committed behind the writes and the batches fetched ahead given back, a backend terminated mid-batch,
partitions handed over between two sinks (a rebalance, also during a database outage), metrics and health
endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from common.health import HealthServer
from proto.codec import encode_event, encode_session
from proto.deadletter import HEADER_ERROR, HEADER_ERROR_CLASS, HEADER_SERVICE, header_map
from proto.events import HardwareKeyboardEvent, Heartbeat
from proto.sessions import SessionRetraction, make_session
from proto.topics import Topics
from sinks.runner import SinkRunner
from sinks.writers import RawWriter, SessionWriter
from tests.support.events import event_mix
from tests.support.kafka import committed_offsets, event_records, publish, wait_committed
from tests.support.metrics import sample, scrape
from tests.support.process import free_port, sink_process
from tests.support.sinks import (
    dead_letters,
    fetchval,
    running,
    session_records,
    settings_for,
    sink_env,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def metric(runner: SinkRunner, name: str, labels: dict[str, str]) -> float:
    value = runner.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_raw_events_with_duplicates_and_poison_end_as_exact_rows(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    events = event_mix(600, agents=3)
    records = event_records(topics, events)
    # Every 5th event again (an agent re-sending after a lost ack), and the first 50 a third time.
    records += records[::5] + records[:50]
    nul = HardwareKeyboardEvent(
        agent_id="poison-agent",
        seq=1,
        ts=events[10].ts,
        input="hardware",
        user="u",
        domain="d",
        host="h",
        title="bad\x00title",
    )
    huge_seq = Heartbeat(
        agent_id="poison-agent",
        seq=2**63,
        ts=events[11].ts,
        input="none",
        user="u",
        domain="d",
        host="h",
        last_input_ts=None,
    )
    poison = [
        (topics.hid, b"d\\u", b"\xc1 not msgpack"),
        (topics.hid, b"d\\u", encode_event(nul)),
        (topics.presence, b"d\\u", encode_event(huge_seq)),
        (topics.ui, b"d\\u", msgspec.msgpack.encode({"type": "FutureEvent", "agent_id": "x"})),
    ]
    mid = len(records) // 2
    await publish(kafka_bootstrap, records[:mid] + poison + records[mid:])

    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=256)
    async with running(RawWriter(), settings) as runner:

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 60), "raw sink did not write every event"
        dls = await dead_letters(kafka_bootstrap, topics, len(poison))
        # settle: no late extra rows
        await asyncio.sleep(1.0)
        assert await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)
        assert metric(runner, "desktrace_sink_rows_written_total", {"table": "raw_events"}) == len(events)
        assert metric(runner, "desktrace_sink_dead_letters_total", {"table": "raw_events"}) == len(poison)
        assert metric(runner, "desktrace_sink_rows_duplicate_total", {"table": "raw_events"}) == (
            len(records) - len(events)
        )
        assert metric(
            runner, "desktrace_sink_last_successful_write_timestamp_seconds", {"table": "raw_events"}
        )

        async def caught_up() -> bool:
            lags = [
                metric(runner, "desktrace_sink_consumer_lag", {"topic": t, "partition": str(p)})
                for t in topics.raw
                for p in range(3)
            ]
            seen = [
                runner.metrics.registry.get_sample_value(
                    "desktrace_sink_consumer_lag", {"topic": t, "partition": str(p)}
                )
                for t in topics.raw
                for p in range(3)
            ]
            return all(v is not None for v in seen) and sum(lags) == 0

        assert await wait_until(caught_up, 10), "consumer lag gauges missing or not at 0"

    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        distinct = await conn.fetchval("SELECT count(DISTINCT (agent_id, seq)) FROM raw_events")
        assert distinct == len(events)
        assert await conn.fetchval("SELECT count(*) FROM raw_events WHERE agent_id = 'poison-agent'") == 0
        row = await conn.fetchrow(
            "SELECT * FROM raw_events WHERE agent_id = $1 AND seq = $2", events[0].agent_id, events[0].seq
        )
        assert row is not None
        assert row["ts"] == events[0].ts
        assert row["user_key"] == "corp\\user0"
        assert row["type"] == events[0].type
        details = json.loads(row["details"])
        assert "agent_id" not in details and "ts" not in details
    finally:
        await conn.close()

    by_class = {}
    for rec in dls:
        h = header_map(rec.headers)  # type: ignore[attr-defined]
        assert h[HEADER_SERVICE] == "sink-raw"
        assert h[HEADER_ERROR]
        by_class[rec.value] = h[HEADER_ERROR_CLASS]  # type: ignore[attr-defined]
    assert by_class[b"\xc1 not msgpack"] == "undecodable"
    assert by_class[encode_event(nul)] == "constraint"
    assert by_class[encode_event(huge_seq)] == "constraint"
    assert by_class[msgspec.msgpack.encode({"type": "FutureEvent", "agent_id": "x"})] == "unknown_type"


async def test_a_stop_waits_for_the_offsets_still_on_their_way(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """A batch's offsets travel to Kafka while the next batch is written. A stop (SIGTERM) must wait for
    them before the consumer closes, or a restart would write the last batch again. The coordinator here
    answers slowly (each commit starts 1 s late), so the stop comes while the last commit is on its way."""
    events = event_mix(300, agents=2)
    await publish(kafka_bootstrap, event_records(topics, events))
    runner = SinkRunner(RawWriter(), settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=100))
    commit = runner._commit

    async def slow_commit(records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        await asyncio.sleep(1.0)
        await commit(records)

    runner._commit = slow_commit  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    try:

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 60, interval=0.05), "raw sink did not write every event"
        assert not await wait_committed(kafka_bootstrap, runner.group_id, topics.raw, within=0.0)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    assert await wait_committed(kafka_bootstrap, runner.group_id, topics.raw, within=0.1)


class _DropsTheThirdWrite(RawWriter):
    """The real writer, but the third write loses its connection, after a second: long enough for the
    batches fetched ahead to be in memory, decoded, their records past the consumer's position."""

    writes = 0

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        self.writes += 1
        if self.writes == 3:
            await asyncio.sleep(1.0)
            raise ConnectionResetError("injected: the connection dropped mid-batch")
        return await super().write(conn, items)


async def test_a_failed_write_gives_back_every_batch_fetched_ahead(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """While one batch is written the next ones are fetched and decoded. When that write fails, the
    batches fetched ahead are given back before the retry, and the whole path (retry, rewind, paused
    wait, the rest of the stream) ends with every event as one row, none of them written twice. The
    rewind's exact positions are checked by the next test, which does not depend on how the consumer
    happened to split the partitions between batches."""
    events = event_mix(600, agents=6)  # about 70 records per partition: batches span partitions
    await publish(kafka_bootstrap, event_records(topics, events))
    writer = _DropsTheThirdWrite()
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=50)
    async with running(writer, settings) as runner:

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 60), "events were lost after the failed write"
        assert writer.writes > 3
        retries = {"table": "raw_events", "target": "postgres"}
        assert metric(runner, "desktrace_sink_retries_total", retries) == 1
        assert metric(runner, "desktrace_sink_rows_written_total", {"table": "raw_events"}) == len(events)
        assert metric(runner, "desktrace_sink_rows_duplicate_total", {"table": "raw_events"}) == 0


async def test_the_rewind_seeks_back_each_partition_the_batches_ahead_read(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """The rewind itself, on the real consumer: two batches fetched ahead, each holding a partition the
    other does not (one user's 50 UI events, then its 50 input events, batches of 50); after the rewind
    the consumer's position in each partition is the first offset those batches held."""
    mix = event_mix(2000, agents=1)
    ui, hid = ([e for e in mix if type(e).category == c][:50] for c in ("ui", "hid"))
    one_user = ui + hid
    await publish(kafka_bootstrap, event_records(topics, one_user))
    runner = SinkRunner(RawWriter(), settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=50))
    await runner.start()
    consumer = runner._consumer
    assert consumer is not None
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # a fetch that found nothing yet consumed nothing: fetch again
            runner._fetch_ahead()
            await asyncio.wait([t for _, t in runner._ahead])
            runner._ahead = [(g, t) for g, t in runner._ahead if t.result()[0]]
            if len(runner._ahead) == 2 or asyncio.get_running_loop().time() > deadline:
                break
        batches = [t.result()[0] for _, t in runner._ahead]
        held = [[TopicPartition(r.topic, r.partition) for r in b] for b in batches]
        assert len(held) == 2 and set(held[1]) - set(held[0]), "the second batch needs a partition of its own"
        first: dict[TopicPartition, int] = {}
        for b in batches:
            for r in b:
                first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        await runner._rewind_ahead()
        assert runner._ahead == []
        assert {tp: await consumer.position(tp) for tp in first} == first
    finally:
        await runner.close()


async def test_a_give_back_never_moves_a_partition_forward(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """Two give-backs of the same partition, in either order, leave it at the lowest offset either held:
    two batches retried at once each poll the paused consumer, and after a rebalance each may be handed
    records of a newly assigned partition, one chunk after the other; whichever gives its chunk back last
    must not seek past the other's. On the real consumer: one user's 60 UI events (one partition),
    consumed in chunks of 20."""
    ui = [e for e in event_mix(2000, agents=1) if type(e).category == "ui"][:60]
    await publish(kafka_bootstrap, event_records(topics, ui))
    runner = SinkRunner(RawWriter(), settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=50))
    await runner.start()
    consumer = runner._consumer
    assert consumer is not None
    try:
        chunks: list[list[ConsumerRecord[bytes, bytes]]] = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(chunks) < 3 and asyncio.get_running_loop().time() < deadline:
            got = await consumer.getmany(timeout_ms=1000, max_records=20)
            chunks += [recs for recs in got.values() if recs]
        assert [len(c) for c in chunks] == [20, 20, 20]
        first, second, third = chunks
        tp = TopicPartition(first[0].topic, first[0].partition)
        assert {TopicPartition(r.topic, r.partition) for c in chunks for r in c} == {tp}
        assert await consumer.position(tp) == third[-1].offset + 1
        runner._seek_back(first)
        runner._seek_back(second)  # given back after the earlier chunk: stays at the earlier chunk's start
        assert await consumer.position(tp) == first[0].offset
        runner._seek_back(second + first)  # one give-back, out of order: its lowest offset
        assert await consumer.position(tp) == first[0].offset
        again = await consumer.getmany(tp, timeout_ms=5000, max_records=20)
        assert [r.offset for r in again[tp]] == [r.offset for r in first]
        runner._seek_back(third)  # behind the position now: nothing was read past it, nothing to move
        assert await consumer.position(tp) == second[0].offset
    finally:
        await runner.close()


def _number_batches(runner: SinkRunner, batch_of: dict[asyncio.Task[Any] | None, int]) -> None:
    """Record in ``batch_of`` which batch (1, 2, ... in the runner's batch order) each write task belongs
    to, through the runner's ``_write_batch``, which runs in each batch's own task in batch order (two
    writes may reach the database in the other order)."""
    write_batch = runner._write_batch

    async def numbered(fetched: Any, generation: int, slot: Any) -> bool:
        if fetched[0]:
            batch_of[asyncio.current_task()] = len(batch_of) + 1
        return await write_batch(fetched, generation, slot)

    runner._write_batch = numbered  # type: ignore[method-assign]


class _HoldsTheFirstBatch(RawWriter):
    """The real writer, but the write of the runner's first batch waits (its transaction open) until
    released; counts the writes finished meanwhile (before or while it is held) and the most in the
    database at once. Its batches are numbered by :func:`_number_batches`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.batch_of: dict[asyncio.Task[Any] | None, int] = {}
        self.writes = self.in_flight = self.most = self.done_while_held = 0

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        self.writes += 1
        first = self.batch_of.get(asyncio.current_task()) == 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if first:
                await asyncio.wait_for(self.release.wait(), 60)
            result = await super().write(conn, items)
            if not first and not self.release.is_set():
                self.done_while_held += 1
            return result
        finally:
            self.in_flight -= 1


async def test_the_raw_sink_writes_two_batches_at_once_and_commits_them_in_order(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """On the real broker and database: while the first batch is held (its transaction open), the second
    batch is written on the other connection, but no offset is committed (committing the second's would
    skip the first's records after a crash), and no third batch starts (both slots are taken until
    their batches commit). Released, every event ends as one row and every partition is committed."""
    events = event_mix(600, agents=3)
    await publish(kafka_bootstrap, event_records(topics, events))
    writer = _HoldsTheFirstBatch()
    runner = SinkRunner(writer, settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=100))
    assert runner.concurrent_writes == 2
    _number_batches(runner, writer.batch_of)
    task = asyncio.create_task(runner.run())
    try:

        async def second_written() -> bool:
            return writer.done_while_held >= 1

        assert await wait_until(second_written, 30), "no second write at once"
        await asyncio.sleep(1.0)  # time for a wrong commit, or a third write, to happen
        assert (writer.writes, writer.done_while_held) == (2, 1) and writer.most <= 2
        assert await committed_offsets(kafka_bootstrap, runner.group_id, topics.raw) == {}
        writer.release.set()

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 60), "the raw sink did not write every event"
        assert await wait_committed(kafka_bootstrap, runner.group_id, topics.raw, within=15)
        assert metric(runner, "desktrace_sink_rows_duplicate_total", {"table": "raw_events"}) == 0
    finally:
        writer.release.set()
        runner.stop()
        await asyncio.wait_for(task, 30)


async def _giving_back(runner: SinkRunner, never: str) -> None:
    """Wait until a failed batch is retried and its give-back has taken the batches fetched ahead (fail
    with ``never`` after 30 s)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not (runner._batches_retrying and not runner._ahead):
        assert asyncio.get_running_loop().time() < deadline, never
        await asyncio.sleep(0.01)


class _FailsTheSecondBatchOnce(RawWriter):
    """The real writer, with two batches in flight: the second batch's first write loses its connection,
    and the first batch's write finishes only once that failure's give-back is under way (its slot then
    frees while the second batch is retried). Its batches are numbered by :func:`_number_batches`."""

    def __init__(self, runner_of: list[SinkRunner]) -> None:
        super().__init__()
        self.runner_of = runner_of
        self.batch_of: dict[asyncio.Task[Any] | None, int] = {}
        self.failed = 0
        self.first_done_while_retried = False

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        batch = self.batch_of.get(asyncio.current_task())
        (runner,) = self.runner_of
        if batch == 2 and not self.failed:
            self.failed += 1
            raise ConnectionResetError("injected: the connection dropped mid-batch")
        if batch == 1:
            await _giving_back(runner, "the second batch never failed")
            self.first_done_while_retried = True
        return await super().write(conn, items)


async def test_a_batch_freed_during_a_retry_takes_nothing_past_the_records_given_back(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """Two batches in flight; the later one fails and is retried, and its give-back waits for the batches
    fetched ahead (held here after they consumed their records, as a slow fetch would be) while the
    earlier one finishes and frees its slot. Nothing may be fetched past the records given back while the
    retry lasts: a batch fetched then, and given back in turn, would seek the partitions past them, and
    their records would never be written. Every event ends as one row, every partition committed."""
    events = event_mix(600, agents=6)
    await publish(kafka_bootstrap, event_records(topics, events))
    runners: list[SinkRunner] = []
    writer = _FailsTheSecondBatchOnce(runners)
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=50)
    runner = SinkRunner(writer, settings)
    runners.append(runner)
    _number_batches(runner, writer.batch_of)
    fetch, fetched, later_fetch = runner._fetch, [0], asyncio.Event()

    async def slow_fetches_ahead() -> Any:
        result = await fetch()
        if result[0]:
            fetched[0] += 1
            if fetched[0] in (3, 4):  # the batches ahead when the second one fails
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(later_fetch.wait(), 3.0)
            elif fetched[0] > 4:
                later_fetch.set()
        return result

    runner._fetch = slow_fetches_ahead  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    try:

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 60), "events were lost after the retried batch"
        assert writer.failed == 1 and writer.first_done_while_retried
        assert await wait_committed(kafka_bootstrap, runner.group_id, topics.raw, within=15)
        retries = {"table": "raw_events", "target": "postgres"}
        assert metric(runner, "desktrace_sink_retries_total", retries) == 1
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


class _FailsTheFirstBatchOnce(RawWriter):
    """The real writer; the runner's first batch's first write loses its connection once ``ready`` says
    so. Its batches are numbered by :func:`_number_batches`."""

    def __init__(self, ready: asyncio.Event) -> None:
        super().__init__()
        self.ready = ready
        self.batch_of: dict[asyncio.Task[Any] | None, int] = {}
        self.failed = 0

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        if self.batch_of.get(asyncio.current_task()) == 1 and not self.failed:
            await asyncio.wait_for(self.ready.wait(), 30)
            self.failed += 1
            raise ConnectionResetError("injected: the connection dropped mid-batch")
        return await super().write(conn, items)


async def test_a_batch_being_taken_when_another_fails_is_given_back_after_the_batches_ahead(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """The other order of the same race: the loop is waiting for the next batch (fetched, its records
    consumed) when the batch being written fails. The failure's give-back takes the batches fetched
    after it; the loop then gives its batch back too, and nothing else is fetched meanwhile: every
    partition ends at the lowest offset any of them held, and every event ends as one row."""
    events = event_mix(600, agents=6)
    await publish(kafka_bootstrap, event_records(topics, events))
    second_consumed = asyncio.Event()
    writer = _FailsTheFirstBatchOnce(second_consumed)
    runner = SinkRunner(writer, settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=50))
    _number_batches(runner, writer.batch_of)
    fetch, fetched, taken_while_retried = runner._fetch, [0], []

    async def second_fetch_held() -> Any:
        result = await fetch()
        if result[0]:
            fetched[0] += 1
            if fetched[0] == 2:  # the batch the loop waits for: held until the first batch failed
                second_consumed.set()
                await _giving_back(runner, "the first batch never failed")
            elif runner._batches_retrying:
                taken_while_retried.append(fetched[0])
        return result

    runner._fetch = second_fetch_held  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run())
    try:

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 60), "events were lost after the failed batch"
        assert writer.failed == 1
        # Only the batch fetched right after the loop's (the give-back awaits it) consumed records
        # while the first batch was retried.
        assert taken_while_retried in ([], [3]), f"fetched while retried: {taken_while_retried}"
        assert await wait_committed(kafka_bootstrap, runner.group_id, topics.raw, within=15)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)


class _SlowInTheDatabase(RawWriter):
    """The real writer, each write first waiting a second inside its transaction on the server
    (``pg_sleep``): a loaded database, with both slots' transactions open most of the time."""

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        await conn.execute("SELECT pg_sleep(1)")
        return await super().write(conn, items)


async def test_a_backend_terminated_mid_batch_costs_a_retry_not_a_row(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """The failure a database gives one connection while the other goes on (an operator's
    ``pg_terminate_backend``, an idle-in-transaction or statement timeout, a pooler's restart): the raw
    sink's backends are terminated one at a time, each in the middle of a batch's transaction while the
    other slot writes too. Each costs the batch a retry on a new connection, and every event ends as one
    row, every partition committed."""
    events = event_mix(3000, agents=6)
    await publish(kafka_bootstrap, event_records(topics, events))
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=100)
    sleeping = """SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                  AND pid <> pg_backend_pid() AND query LIKE '%pg_sleep%' AND state = 'active'"""
    async with running(_SlowInTheDatabase(), settings) as runner:
        conn = await asyncpg.connect(fresh_pg_dsn, timeout=5)
        terminated = 0
        pids: list[int] = []

        async def two_in_transactions() -> bool:
            pids[:] = [r["pid"] for r in await conn.fetch(sleeping)]
            return len(pids) == 2

        try:
            for _ in range(3):
                assert await wait_until(two_in_transactions, 30, interval=0.05), "never two writes at once"
                terminated += bool(await conn.fetchval("SELECT pg_terminate_backend($1)", pids[-1]))
                await asyncio.sleep(1.5)
        finally:
            await conn.close()
        assert terminated == 3

        async def all_rows() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

        assert await wait_until(all_rows, 90), "events were lost after a backend was terminated"
        assert await wait_committed(kafka_bootstrap, runner.group_id, topics.raw, 30)
        retries = {"table": "raw_events", "target": "postgres"}
        assert metric(runner, "desktrace_sink_retries_total", retries) >= 3


class _SlowFirstWrite(SessionWriter):
    """The real writer, but its first write takes 4 s (a slow database): time enough for a second sink
    to join the group and take partitions meanwhile."""

    writes = 0
    slow_done = False

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        self.writes += 1
        if self.writes == 1:
            await asyncio.sleep(4.0)
            try:
                return await super().write(conn, items)
            finally:
                self.slow_done = True
        return await super().write(conn, items)


async def test_a_batch_written_during_a_rebalance_never_lands_on_newer_sessions(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """The deployment runs two sessions sinks in one group, so every rolling update moves partitions. The
    first sink is writing a batch of every session's first version, slowly, when the second joins; once
    the second has partitions, the sessions' newer versions are published. The first's batch must not
    land on top of what the second writes for its partitions: the rebalance waits until the batch being
    written is written and its offsets committed. The table ends as the messages applied in topic
    order: every session at its last version."""
    t0 = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    keys = [f"corp\\user{i}" for i in range(60)]
    first = [make_session(k, "active", t0, t0 + timedelta(minutes=5)) for k in keys]
    newer = [make_session(k, "active", t0, t0 + timedelta(minutes=50)) for k in keys]
    await publish(kafka_bootstrap, session_records(topics, first))
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics)
    slow = _SlowFirstWrite()
    # The first sink's first batch is every first version (of every partition), whatever the fetches.
    first_settings = msgspec.structs.replace(settings, batch_size=len(keys), batch_wait_ms=5000)
    async with running(slow, first_settings):

        async def writing() -> bool:
            return slow.writes == 1

        assert await wait_until(writing, 30, interval=0.05)
        async with running(SessionWriter(), settings) as second:

            async def second_has_partitions() -> bool:
                return second._consumer is not None and bool(second._consumer.assignment())

            assert await wait_until(second_has_partitions, 30, interval=0.05)
            await publish(kafka_bootstrap, session_records(topics, newer))

            async def slow_write_done() -> bool:
                return slow.slow_done

            assert await wait_until(slow_write_done, 30, interval=0.05)

            async def all_newer() -> bool:
                ends = await fetchval(fresh_pg_dsn, "SELECT count(*) FROM sessions WHERE duration_s = 3000")
                return ends == len(keys)

            assert await wait_until(all_newer, 10), "the newer versions were not all written"
            await asyncio.sleep(1.0)
            rows = await fetchval(fresh_pg_dsn, "SELECT count(*) FROM sessions WHERE duration_s = 3000")
            assert rows == len(keys), f"{rows} of {len(keys)} sessions at their last version"


class _DatabaseDown(RawWriter):
    """The real writer while ``down`` is False; while it is True each write loses its connection, as
    during a database outage."""

    down = True
    failed = 0

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        if self.down:
            self.failed += 1
            raise ConnectionResetError("injected: the database is down")
        return await super().write(conn, items)


class _SlowWrites(RawWriter):
    """The real writer, each write taking a second longer (a loaded database): two batches are in flight
    most of the time."""

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        await asyncio.sleep(1.0)
        return await super().write(conn, items)


async def test_a_rebalance_while_two_raw_batches_are_written_loses_nothing(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """A second raw sink joins while the first has two batches in flight: the first's hand-over waits for
    both and commits them in order, the second reads on from there, and every event ends as one row,
    with every partition committed by the group."""
    events = event_mix(3000, agents=6)
    await publish(kafka_bootstrap, event_records(topics, events))
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=100)
    async with running(_SlowWrites(), settings) as first:
        hand_over, in_flight = first.hand_over, []

        async def counted_hand_over(revoked: Collection[TopicPartition]) -> None:
            in_flight.append(sum(not task.done() for _, task in first._handling))
            await hand_over(revoked)

        first.hand_over = counted_hand_over  # type: ignore[method-assign]

        async def two_in_flight() -> bool:
            return sum(not task.done() for _, task in first._handling) == 2

        assert await wait_until(two_in_flight, 30, interval=0.05)
        async with running(RawWriter(), settings) as second:

            async def second_has_partitions() -> bool:
                return second._consumer is not None and bool(second._consumer.assignment())

            assert await wait_until(second_has_partitions, 30, interval=0.05)
            assert in_flight and max(in_flight) == 2, f"batches in flight at the hand-overs: {in_flight}"

            async def all_rows() -> bool:
                return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

            assert await wait_until(all_rows, 90), "events were lost in the rebalance"
            assert await wait_committed(kafka_bootstrap, first.group_id, topics.raw, 30)


async def test_a_rebalance_during_a_database_outage_does_not_wait_for_the_database(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    """A sink retrying a batch while the database is down gives it up when its partitions are handed
    over, instead of holding up the group until the database is back: the second sink gets its
    partitions within seconds. Once the database is back, every event is written once."""
    events = event_mix(900, agents=6)
    await publish(kafka_bootstrap, event_records(topics, events))
    # Long waits between retries (5 s and more), as in production (up to 30 s): the hand-over must not
    # wait for the next retry either.
    settings = msgspec.structs.replace(
        settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=100),
        retry_initial_s=5.0,
        retry_max_s=10.0,
    )
    down = _DatabaseDown()
    async with running(down, settings) as first:
        hand_over, handed = first.hand_over, []

        async def timed_hand_over(revoked: Collection[TopicPartition]) -> None:
            started = asyncio.get_running_loop().time()
            await hand_over(revoked)
            handed.append(asyncio.get_running_loop().time() - started)

        first.hand_over = timed_hand_over  # type: ignore[method-assign]

        async def retrying() -> bool:
            return down.failed >= 1

        assert await wait_until(retrying, 30, interval=0.05)
        await asyncio.sleep(0.5)  # waiting for its next retry, partitions paused
        handed.clear()  # the hand-overs of the first sink's own joining
        second_writer = _DatabaseDown()
        async with running(second_writer, settings) as second:

            async def second_has_partitions() -> bool:
                return second._consumer is not None and bool(second._consumer.assignment())

            assert await wait_until(second_has_partitions, 20, interval=0.05)
            # The group waits for the first sink's hand-over: about a second (its paused wait's poll),
            # not until the database is back nor until the group gives up on it (the 6 s session).
            assert handed and max(handed) < 3.0, f"hand-overs done when the second got partitions: {handed}"
            down.down = second_writer.down = False

            async def all_rows() -> bool:
                return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)

            assert await wait_until(all_rows, 60), "events were lost"
            await asyncio.sleep(1.0)
            assert await fetchval(fresh_pg_dsn, "SELECT count(*) FROM raw_events") == len(events)


async def test_sessions_upserts_and_retractions_leave_the_unretracted(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    t0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)
    users = [f"corp\\user{i}" for i in range(4)]
    msgs: list[object] = []
    expected: dict[str, tuple[float, list[str]]] = {}
    for u in users:
        for k in range(10):
            start = t0 + timedelta(minutes=30 * k)
            s = make_session(u, "active", start, start + timedelta(minutes=5), ["PC-1"])
            msgs.append(s)
            expected[s.session_id] = (s.duration_s, s.hosts)
        # a corrected session (longer, two hosts) replaces the first one: same id, last write wins
        first = make_session(u, "active", t0, t0 + timedelta(minutes=9), ["PC-1", "PC-2"])
        msgs.append(first)
        expected[first.session_id] = (first.duration_s, first.hosts)
        # retract the 3rd; retract and re-publish the 4th; publish then retract a new inactive one
        third = make_session(u, "active", t0 + timedelta(minutes=60), t0 + timedelta(minutes=65))
        msgs.append(SessionRetraction(session_id=third.session_id, user_key=u))
        del expected[third.session_id]
        fourth = make_session(u, "active", t0 + timedelta(minutes=90), t0 + timedelta(minutes=95), ["PC-1"])
        msgs.append(SessionRetraction(session_id=fourth.session_id, user_key=u))
        msgs.append(fourth)
        idle = make_session(
            u, "inactive", t0 + timedelta(minutes=5), t0 + timedelta(minutes=30), reason="idle"
        )
        msgs.append(idle)
        msgs.append(SessionRetraction(session_id=idle.session_id, user_key=u))
        # a retraction of a session never seen is harmless
        msgs.append(SessionRetraction(session_id="never-published", user_key=u))
    bad = make_session(users[0], "active", t0 + timedelta(minutes=7), t0 + timedelta(minutes=8))
    bad_json = encode_session(bad).replace(b'"reason":null', b'"reason":"idle"', 1)
    assert bad_json != encode_session(bad)  # an active session with a reason: the table's CHECK refuses it
    records = session_records(topics, msgs)  # type: ignore[arg-type]
    records.insert(7, (topics.sessions, users[0].encode(), b"{not json"))
    records.insert(9, (topics.sessions, users[0].encode(), bad_json))
    await publish(kafka_bootstrap, records)

    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics, batch_size=16)
    async with running(SessionWriter(), settings) as runner:

        async def done() -> bool:
            consumed = metric(runner, "desktrace_sink_records_total", {"table": "sessions"})
            return consumed >= len(records)

        assert await wait_until(done, 60), "sessions sink did not consume every record"
        await asyncio.sleep(0.5)
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        rows = await conn.fetch("SELECT session_id, duration_s, hosts, tz, updated_at FROM sessions")
    finally:
        await conn.close()
    got = {r["session_id"]: (r["duration_s"], list(r["hosts"])) for r in rows}
    assert got == expected
    dls = await dead_letters(kafka_bootstrap, topics, 2)
    classes = sorted(header_map(r.headers)[HEADER_ERROR_CLASS] for r in dls)  # type: ignore[attr-defined]
    assert classes == ["constraint", "undecodable"]


async def test_health_server_metrics_and_readiness(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics
) -> None:
    settings = settings_for(kafka_bootstrap, fresh_pg_dsn, topics)
    async with running(SessionWriter(), settings) as runner:
        server = HealthServer(
            "127.0.0.1:0",
            runner.metrics.registry,
            {"kafka": runner.check_kafka, "postgres": runner.check_postgres},
        )
        async with server:

            def get(path: str) -> tuple[int, bytes]:
                try:
                    with urllib.request.urlopen(server.url + path, timeout=5) as resp:
                        return resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    return exc.code, exc.read()

            async def ready() -> bool:
                return (await asyncio.to_thread(get, "/readyz"))[0] == 200

            assert await wait_until(ready, 20)
            status, body = await asyncio.to_thread(get, "/metrics")
            assert status == 200
            assert b"desktrace_sink_rows_written_total" in body
            assert b"desktrace_sink_retries_total" in body
            assert (await asyncio.to_thread(get, "/healthz"))[0] == 200
            assert (await asyncio.to_thread(get, "/nope"))[0] == 404
        broken = HealthServer("127.0.0.1:0", readiness={"postgres": _failing})
        async with broken:
            with pytest.raises(urllib.error.HTTPError) as info:
                await asyncio.to_thread(urllib.request.urlopen, broken.url + "/readyz", None, 5)
            assert info.value.code == 503
            assert json.loads(info.value.read())["checks"] == {"postgres": "ConnectionRefusedError"}


async def _failing() -> bool:
    raise ConnectionRefusedError("no")


async def test_sessions_sink_command_runs_serves_health_and_stops_cleanly(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics, tmp_path: Path
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    sessions = [
        make_session(
            f"corp\\u{i % 5}", "active", t0 + timedelta(minutes=i), t0 + timedelta(minutes=i, seconds=30)
        )
        for i in range(50)
    ]
    retract = [SessionRetraction(session_id=s.session_id, user_key=s.user_key) for s in sessions[::5]]
    await publish(kafka_bootstrap, session_records(topics, [*sessions, *retract]))
    port = free_port()
    sink = sink_process("sessions", sink_env(kafka_bootstrap, fresh_pg_dsn, topics, port), tmp_path / "s.log")
    try:

        async def written() -> bool:
            return await fetchval(fresh_pg_dsn, "SELECT count(*) FROM sessions") == 40

        assert await wait_until(written, 60), sink.tail()

        async def ready() -> bool:
            return scrape(port, "/readyz")[0] == 200

        assert await wait_until(ready, 10)
        status, text = scrape(port)
        assert status == 200
        assert sample(text, "desktrace_sink_records_total", table="sessions") == 60
        # reduced per batch: an upsert and its retraction in one batch write nothing
        assert 40 <= (sample(text, "desktrace_sink_rows_written_total", table="sessions") or 0) <= 60
        assert (sample(text, "desktrace_sink_batch_size_count", table="sessions") or 0) >= 1
    finally:
        code = await asyncio.to_thread(sink.stop)
    assert code == 0
    lines = [json.loads(line) for line in sink.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(entry["msg"] == "sink stopped" for entry in lines)
    assert all(entry["service"] == "sink-sessions" for entry in lines)
