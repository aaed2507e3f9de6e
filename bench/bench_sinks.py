"""Sink write paths on a real PostgreSQL (run by hand):

    eval "$(.venv/bin/desktrace-local up)"
    .venv/bin/python bench/bench_sinks.py [--events 60000] [--batch 2000] [--sessions 20000]

Creates a throw-away database next to DESKTRACE_PG_DSN's, applies the migrations, and measures in the same
run, on the same rows (a realistic event mix over ~2 days, i.e. three partitions):

- baseline: bare ``COPY`` of the rows straight into ``raw_events`` (not idempotent);
- the sink's usual path: ``COPY`` straight into ``raw_events`` in a savepoint (``RawWriter.write`` on
  rows not yet there);
- the sink's staging path: ``COPY`` into a temp staging table + ``INSERT ... SELECT ... ON CONFLICT DO
  NOTHING`` (what it falls back to once a batch meets a duplicate);
- the alternative: ``INSERT ... SELECT FROM unnest($1::text[], ...) ON CONFLICT DO NOTHING``;
- the sink's writer on a full redelivery (every row a duplicate: one refused COPY, then staging);
- session upserts/s (insert, then update of the same ids), with a share of retractions.

Prints rows/s and each path's ratio to the baseline. Decoding + row building (CPU only) is measured too.

``--deadletters N`` (needs Kafka too: DESKTRACE_KAFKA_BOOTSTRAP) instead runs the raw sink itself
(``SinkRunner``, in process) over N pre-published records on private topics, twice in the same run: a
garbage-free baseline, then the same events with 20% garbage records mixed in. Prints good rows/s of
both runs, dead letters/s of the second (over the whole run and over the time spent in the dead-letter
path), and the ratio of the good-row rates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.postgres import with_database
from proto.codec import encode_event
from proto.sessions import Session, SessionRetraction, make_session
from sinks.migrations import apply_migrations
from sinks.rows import RAW_COLUMNS, RawRow, days_of
from sinks.writers import RawWriter, SessionWriter
from tests.support.events import event_mix

_UNNEST_TYPES = {
    "seq": "bigint",
    "ts": "timestamptz",
    "utc_offset_min": "integer",
    "last_input_ts": "timestamptz",
    "details": "text",  # cast to jsonb in the SELECT
}
_COLS = ", ".join(f'"{c}"' for c in RAW_COLUMNS)
_ARGS = ", ".join(f"${i + 1}::{_UNNEST_TYPES.get(c, 'text')}[]" for i, c in enumerate(RAW_COLUMNS))
_ALIASES = [f"c{i}" for i in range(len(RAW_COLUMNS))]
_UNNEST_SQL = (
    f"INSERT INTO raw_events ({_COLS}) "
    f"SELECT {', '.join(_ALIASES[:-1])}, {_ALIASES[-1]}::jsonb "
    f"FROM unnest({_ARGS}) AS u({', '.join(_ALIASES)}) "
    "ON CONFLICT (agent_id, seq, ts) DO NOTHING"
)


def batches(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def timed(label: str, n: int, fn: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await fn()
    elapsed = time.perf_counter() - started
    rate = n / elapsed
    print(f"  {label:<58} {n:>7} rows in {elapsed:6.2f} s = {rate:>9,.0f} rows/s")
    return rate


async def bench(dsn: str, n_events: int, batch: int, n_sessions: int, rounds: int) -> None:
    db = f"bench_sinks_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    try:
        bdsn = with_database(dsn, db)
        await apply_migrations(bdsn)
        conn = await asyncpg.connect(bdsn)
        try:
            await run(conn, n_events, batch, n_sessions, rounds)
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


async def run(conn: asyncpg.Connection, n_events: int, batch: int, n_sessions: int, rounds: int) -> None:
    events = event_mix(n_events, agents=20, step_ms=60000)  # ~2 days of 20 agents -> 3 partitions
    payloads = [encode_event(e) for e in events]
    writer = RawWriter(retention_days=0)
    writer.refresh(events[0].ts)
    t = time.perf_counter()
    rows: list[RawRow] = [writer.decode(p) for p in payloads]
    cpu = len(rows) / (time.perf_counter() - t)
    avg = sum(map(len, payloads)) / len(payloads)
    print(
        f"raw events: {len(rows)} (avg {avg:.0f} B msgpack), {len(days_of(rows))} partitions, batch {batch}"
    )
    print(f"  {'decode + row building (CPU only)':<58} {'':>7}                    {cpu:>9,.0f} rows/s")
    await writer.prepare(conn)
    await writer.before_write(conn, rows)
    parts = batches(rows, batch)

    async def truncate() -> None:
        await conn.execute("TRUNCATE raw_events")
        await conn.execute("VACUUM ANALYZE raw_events")

    async def bare_copy() -> None:
        for b in parts:
            async with conn.transaction():
                await conn.copy_records_to_table("raw_events", records=b, columns=RAW_COLUMNS)

    async def direct() -> None:
        for b in parts:
            writer.staging = False
            async with conn.transaction():
                await writer.write(conn, b)

    async def staged() -> None:
        for b in parts:
            writer.staging = True
            async with conn.transaction():
                await writer.write(conn, b)

    async def redelivered() -> None:
        writer.staging = False
        for b in parts:
            async with conn.transaction():
                await writer.write(conn, b)

    async def unnest() -> None:
        for b in parts:
            cols = list(zip(*b, strict=True))
            async with conn.transaction():
                await conn.execute(_UNNEST_SQL, *cols)

    results: dict[str, list[float]] = {}
    for rnd in range(rounds):  # interleaved rounds, median of each, to damp noise on a shared machine
        for label, fn in (
            ("baseline: bare COPY into raw_events", bare_copy),
            ("sink: COPY into raw_events in a savepoint", direct),
            ("sink, staging: COPY + INSERT ON CONFLICT DO NOTHING", staged),
            ("alt: INSERT SELECT unnest(arrays) ON CONFLICT DO NOTHING", unnest),
        ):
            await truncate()
            rate = await timed(f"[{rnd + 1}] {label}", len(rows), fn)
            results.setdefault(label, []).append(rate)
            assert await conn.fetchval("SELECT count(*) FROM raw_events") == len(rows)
        redelivery = "sink, full redelivery (all duplicates)"
        rate = await timed(f"[{rnd + 1}] {redelivery}", len(rows), redelivered)
        results.setdefault(redelivery, []).append(rate)
        assert await conn.fetchval("SELECT count(*) FROM raw_events") == len(rows)
    medians = {label: statistics.median(rates) for label, rates in results.items()}
    base = medians["baseline: bare COPY into raw_events"]
    print(f"median of {rounds} rounds, ratio to bare COPY:")
    for label, rate in medians.items():
        print(f"  {label:<58} {rate:>9,.0f} rows/s  x{rate / base:.2f}")

    # ---- sessions ----
    t0 = events[0].ts
    sessions = [
        make_session(
            f"corp\\user{i % 200}",
            "active",
            t0 + timedelta(minutes=i),
            t0 + timedelta(minutes=i + 3),
            ["PC-1"],
        )
        for i in range(n_sessions)
    ]
    updated = [
        make_session(s.user_key, "active", s.start, s.end + timedelta(seconds=30), ["PC-1", "PC-2"])
        for s in sessions
    ]
    mixed: list[Session | SessionRetraction] = []
    for i, s in enumerate(updated):
        mixed.append(s)
        if i % 10 == 0:
            mixed.append(SessionRetraction(session_id=s.session_id))
    sw = SessionWriter()
    await sw.prepare(conn)
    print(f"sessions: {n_sessions}, batch {batch}")

    async def apply(msgs: Sequence[Session | SessionRetraction]) -> None:
        for b in batches(msgs, batch):
            async with conn.transaction():
                await sw.write(conn, b)

    await timed("session upserts (new ids)", len(sessions), lambda: apply(sessions))
    await timed("session upserts (same ids, changed)", len(updated), lambda: apply(updated))
    await timed("session upserts + 10% retractions", len(mixed), lambda: apply(mixed))
    left = await conn.fetchval("SELECT count(*) FROM sessions")
    assert left == n_sessions - len(range(0, n_sessions, 10)), left


# ---- dead letters ------------------------------------------------------------------------------------


async def sink_run(
    bootstrap: str, dsn: str, records: Sequence[tuple[str, bytes | None, bytes]], good: int, bad: int,
    topics: Any, batch: int,
) -> tuple[float, float]:
    """Run the raw sink over ``records`` already on ``topics`` until ``good`` rows are written and ``bad``
    records dead-lettered: ``(elapsed s, s spent in the dead-letter path)``."""
    from sinks.metrics import SinkMetrics
    from sinks.runner import SinkRunner
    from tests.support.sinks import settings_for

    settings = settings_for(bootstrap, dsn, topics, batch_size=batch)
    writer = RawWriter(retention_days=0)
    metrics = SinkMetrics(writer.table)
    runner = SinkRunner(writer, settings, metrics)
    in_dead_letter = 0.0
    send, settle = runner._send_dead_letters, runner._settle_dead_letters

    async def timed_send(rejected: Any) -> Any:
        nonlocal in_dead_letter
        t = time.perf_counter()
        out = await send(rejected)
        in_dead_letter += time.perf_counter() - t
        return out

    async def timed_settle(letters: Any) -> None:
        nonlocal in_dead_letter
        t = time.perf_counter()
        await settle(letters)
        in_dead_letter += time.perf_counter() - t

    runner._send_dead_letters = timed_send  # type: ignore[method-assign]
    runner._settle_dead_letters = timed_settle  # type: ignore[method-assign]
    reg = metrics.registry
    await runner.start()
    try:
        started = time.perf_counter()
        while True:
            await runner.step()
            written = reg.get_sample_value("desktrace_sink_rows_written_total", {"table": "raw_events"}) or 0
            dead = reg.get_sample_value("desktrace_sink_dead_letters_total", {"table": "raw_events"}) or 0
            if written >= good and dead >= bad:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"sink did not finish: {written}/{good} rows, {dead}/{bad} dead letters")
        return time.perf_counter() - started, in_dead_letter
    finally:
        await runner.close()


async def bench_deadletters(bootstrap: str, dsn: str, n: int, batch: int) -> None:
    import random

    from devstack.topics import delete_topics, ensure_topics
    from proto.topics import Topics
    from tests.support.kafka import event_records, publish

    n_bad = n // 5
    n_good = n - n_bad
    events = event_mix(n_good, agents=50, step_ms=1000)
    rng = random.Random(5)
    runs = []
    for label, garbage, good in (
        ("garbage-free", 0, n_good), ("20% garbage", n_bad, n_good), ("all garbage", n_bad, 0)
    ):
        topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
        await ensure_topics(bootstrap, topics, partitions=3)
        records: list[Any] = event_records(topics, events[:good])
        for i in range(garbage):
            records.insert(rng.randrange(len(records) + 1), (topics.hid, b"corp\\x", b"\xc1 junk %d" % i))
        db = f"bench_dl_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'CREATE DATABASE "{db}"')
        try:
            bdsn = with_database(dsn, db)
            await apply_migrations(bdsn)
            await publish(bootstrap, records, max_batch_size=512 * 1024)
            elapsed, in_dl = await sink_run(bootstrap, bdsn, records, good, garbage, topics, batch)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()
            await delete_topics(bootstrap, topics)
        runs.append((label, elapsed, garbage, in_dl))
        line = f"  {label:<14} {good:>7} good rows in {elapsed:6.2f} s = {good / elapsed:>9,.0f} rows/s"
        if garbage:
            line += (f"; {garbage} dead letters = {garbage / elapsed:>9,.0f}/s over the run, "
                     f"{garbage / in_dl:>9,.0f}/s in the dead-letter path ({in_dl:.2f} s)")
        print(line, flush=True)
    base, mixed = runs[0][1], runs[1][1]
    print(f"good rows/s with 20% garbage vs garbage-free: x{base / mixed:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=60000)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--sessions", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pg-dsn", default=os.environ.get("DESKTRACE_PG_DSN", ""))
    p.add_argument("--deadletters", type=int, default=0, metavar="N",
                   help="run the raw sink over N records, garbage-free then 20%% garbage (needs Kafka)")
    p.add_argument(
        "--kafka-bootstrap", default=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    a = p.parse_args()
    if not a.pg_dsn:
        raise SystemExit('set DESKTRACE_PG_DSN (eval "$(.venv/bin/desktrace-local up)") or --pg-dsn')
    if a.deadletters:
        print(f"raw sink over {a.deadletters} records, batch {a.batch}")
        asyncio.run(bench_deadletters(a.kafka_bootstrap, a.pg_dsn, a.deadletters, a.batch))
        return
    asyncio.run(bench(a.pg_dsn, a.events, a.batch, a.sessions, a.rounds))


if __name__ == "__main__":
    main()
