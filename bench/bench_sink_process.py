"""The raw sink as a whole process against a bare consume + COPY of the same rows, in one run (run by hand:
``nice .venv/bin/python bench/bench_sink_process.py [--events 200000] [--rounds 2] [--processes 2]``).

Publishes ``--events`` raw events (``tests.support.events.event_mix``, ~2 days of 20 agents) to fresh raw
topics, creates a throw-away database next to ``DESKTRACE_PG_DSN``'s with the migrations and the partitions,
then alternates, ``--rounds`` times each:

- baseline: a fresh Python process that consumes the topics (aiokafka, no group), decodes each record
  and builds its row exactly as the sink does (``RawWriter.decode``), and COPYs the rows straight into
  ``raw_events`` in batches (not idempotent, no staging, no offsets);
- subject: the ``desktrace-sink raw`` console script (``--processes`` of them, in one consumer group of
  their own), until every row is in ``raw_events``.

Each is timed from its first row in the table to the last (the table is emptied between runs) and the
ratio subject/baseline is printed (target >= 0.7).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.postgres import with_database
from devstack.topics import delete_topics, ensure_topics
from proto.topics import Topics
from sinks.migrations import apply_migrations
from sinks.writers import RawWriter
from tests.support.events import event_mix
from tests.support.kafka import publish_events
from tests.support.process import BIN

_BARE = r"""
import asyncio, sys
import asyncpg
from aiokafka import AIOKafkaConsumer
from proto.topics import Topics
from sinks.rows import RAW_COLUMNS
from sinks.writers import RawWriter

async def main(bootstrap, prefix, dsn, n, batch):
    writer = RawWriter(retention_days=0)
    conn = await asyncpg.connect(dsn)
    consumer = AIOKafkaConsumer(*Topics(prefix).raw, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    done = 0
    try:
        while done < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=batch)
            rows = [writer.decode(r.value) for recs in got.values() for r in recs]
            if rows:
                await conn.copy_records_to_table("raw_events", records=rows, columns=RAW_COLUMNS)
                done += len(rows)
    finally:
        await consumer.stop()
        await conn.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


ROOT = Path(__file__).resolve().parents[1]


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM raw_events"))


async def timed_fill(conn: asyncpg.Connection, procs: list[subprocess.Popen[bytes]], n: int) -> float:
    """Seconds from the first row in ``raw_events`` to the ``n``-th, written by ``procs``."""
    first = 0.0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        got = await _count(conn)
        now = time.perf_counter()
        if got and not first:
            first = now
        if got >= n:
            return now - first
        for proc in procs:
            if proc.poll() is not None and proc.returncode not in (0, None):
                raise RuntimeError(f"process exited with {proc.returncode}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{n} rows not written in time")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=0, help="the sink's batch_size (0: its default)")
    p.add_argument("--processes", type=int, default=1,
                   help="sink processes in one consumer group (the sink scales out by partitions; 6 here)")
    p.add_argument("--baseline-batch", type=int, default=2000, help="records per COPY of the baseline")
    p.add_argument("--bootstrap", default=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    p.add_argument("--dsn", default=os.environ.get("DESKTRACE_PG_DSN", ""))
    a = p.parse_args()
    prefix = f"benchsink{uuid.uuid4().hex[:6]}."
    topics = Topics(prefix)
    db = f"bench_sinkproc_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(a.dsn)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await ensure_topics(a.bootstrap, topics, partitions=6)
    try:
        bdsn = with_database(a.dsn, db)
        await apply_migrations(bdsn)
        events = event_mix(a.events, agents=20, step_ms=60000)
        n = await publish_events(a.bootstrap, topics, events)
        conn = await asyncpg.connect(bdsn)
        writer = RawWriter(retention_days=0)
        await writer.partitions.ensure(conn, {e.ts.date() for e in events})
        batch = a.baseline_batch
        subject = "desktrace-sink raw" + (f" x{a.processes}" if a.processes > 1 else "")
        best = {"bare consume + COPY": 0.0, subject: 0.0}
        env = {**os.environ, "DESKTRACE_PG_DSN": bdsn, "DESKTRACE_TOPIC_PREFIX": prefix,
               "DESKTRACE_KAFKA_BOOTSTRAP": a.bootstrap, "DESKTRACE_METRICS_ADDR": "off",
               "DESKTRACE_RAW_RETENTION_DAYS": "0", "DESKTRACE_LOG_LEVEL": "WARNING"}
        if a.batch:
            env["DESKTRACE_BATCH_SIZE"] = str(a.batch)
        for r in range(a.rounds):
            for name in (list(best) if r % 2 == 0 else list(best)[::-1]):
                await conn.execute("TRUNCATE raw_events")
                if name.startswith("bare"):
                    cmd = [sys.executable, "-c", _BARE, a.bootstrap, prefix, bdsn, str(n), str(batch)]
                    penv = {**os.environ, "PYTHONPATH": str(ROOT)}
                else:
                    cmd = [str(BIN / "desktrace-sink"), "raw"]
                    penv = {**env, "DESKTRACE_GROUP_ID": f"{prefix}sink{r}"}
                procs = [_spawn(cmd, penv) for _ in range(1 if name.startswith("bare") else a.processes)]
                try:
                    dt = await timed_fill(conn, procs, n)
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait(20)
                rate = n / dt
                best[name] = max(best[name], rate)
                print(f"round {r + 1}: {name:20s} {rate:10,.0f} rows/s", flush=True)
        base, sink = best["bare consume + COPY"], best[subject]
        print(f"{n:,} rows: bare consume + COPY {base:,.0f} rows/s, {subject} {sink:,.0f} rows/s, "
              f"ratio {sink / base:.2f}")
        await conn.close()
    finally:
        await delete_topics(a.bootstrap, topics)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
