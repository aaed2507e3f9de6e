"""The raw sink as a whole process against a bare consume + COPY of the same rows, in one run (run by hand:
``nice .venv/bin/python bench/bench_sink_process.py [--events 200000] [--rounds 2] [--processes 2]``).

Publishes ``--events`` raw events (``tests.support.events.event_mix``, ~2 days of 20 agents) to fresh raw
topics, creates a throw-away database next to ``DESKTRACE_PG_DSN``'s with the migrations and the partitions,
then alternates, ``--rounds`` times each:

- baseline: a fresh Python process that consumes the topics (aiokafka, no group, the sink's fetch size),
  decodes each record and builds its row exactly as the sink does (``RawWriter.decode``), and COPYs the
  rows straight into ``raw_events`` in batches, one after the other (not idempotent, no staging, no
  offsets);
- subject: the ``desktrace-sink raw`` console script (``--processes`` of them, in one consumer group of
  their own), until every row is in ``raw_events``.

Each is timed from its first row in the table until every row is in (watched through the last event of
each user on each topic, one index lookup per poll; the table is emptied between runs), and the ratio
subject/baseline is printed (target >= 0.7). Over the same span the CPU of each part is read from
``/proc`` and printed per row: the process under test, the PostgreSQL server (its backends, the WAL
writer, the checkpointer...), the broker (the ``java`` processes), this script (its row count polls) and
the machine as a whole, so a rate can be set against what the machine's cores allow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import busy_seconds, cpu_seconds, parent
from devstack.postgres import with_database
from devstack.topics import delete_topics, ensure_topics
from proto.events import Envelope
from proto.keys import user_key
from proto.topics import Topics
from sinks.migrations import apply_migrations
from sinks.settings import SinkSettings
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
from proto.events import Envelope
from proto.keys import user_key

async def main(bootstrap, prefix, dsn, n, batch, fetch_bytes):
    writer = RawWriter(retention_days=0)
    conn = await asyncpg.connect(dsn)
    consumer = AIOKafkaConsumer(*Topics(prefix).raw, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=fetch_bytes)
    await consumer.start()
    done = 0
    try:
        while done < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=batch)
            rows = [writer.decode(r.value) for recs in got.values() for r in recs]
            if rows:
                await conn.copy_records_to_table("raw_events", records=rows, columns=RAW_COLUMNS)
                done += len(rows)
        await asyncio.sleep(3600)  # stay until terminated, so its CPU can still be read
    finally:
        await consumer.stop()
        await conn.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])))
"""


ROOT = Path(__file__).resolve().parents[1]


def _pids(comm: str) -> list[int]:
    """The live processes whose command name is ``comm``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == comm:
                    found.append(int(d.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def cpu_snapshot(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds used so far by each part of the run (see the module docstring); ``machine`` is the busy
    time of all cores."""
    pg = _pids("postgres")
    postmaster = next((p for p in pg if parent(p) not in pg), 0)
    return {
        "under test": sum(cpu_seconds(p.pid, gone=0.0) for p in procs),
        # A backend that has exited stays counted in its postmaster's reaped children's time.
        "postgres": sum(cpu_seconds(p, children=p == postmaster, gone=0.0) for p in pg),
        "broker": sum(cpu_seconds(p, gone=0.0) for p in _pids("java")),
        "this script": cpu_seconds(os.getpid()),
        "machine": busy_seconds(),
    }


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM raw_events"))


def last_keys(events: list[Envelope]) -> list[tuple[str, int, datetime]]:
    """The key of the last event of each user on each raw topic, in publish order. Records are keyed by
    user, a sink writes each partition in offset order and commits whole batches, so once these rows are
    in the table every row is: a handful of index lookups instead of counting the table while it is
    written (a ``count(*)`` ten times a second cost the server several us per row, for both sides)."""
    last: dict[tuple[str, str], tuple[str, int, datetime]] = {}
    for e in events:
        last[(type(e).category, user_key(e.domain, e.user))] = (e.agent_id, e.seq, e.ts)
    return list(last.values())


_PRESENT = "SELECT EXISTS (SELECT 1 FROM raw_events WHERE agent_id = $1 AND seq = $2 AND ts = $3)"


async def timed_fill(
    conn: asyncpg.Connection,
    procs: list[subprocess.Popen[bytes]],
    keys: list[tuple[str, int, datetime]],
    n: int,
) -> tuple[float, dict[str, float], int]:
    """Seconds from the first row in ``raw_events`` until every row is in (all of ``keys`` are, see
    :func:`last_keys`), written by ``procs``; the CPU seconds of each part over that span and the rows
    written in it."""
    missing = list(keys)
    first = 0.0
    start: dict[str, float] = {}
    seen = 0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if not first:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM raw_events)"):
                first, start = time.perf_counter(), cpu_snapshot(procs)
                seen = await _count(conn)
        else:
            while missing and await conn.fetchval(_PRESENT, *missing[-1]):
                missing.pop()  # one unique-index lookup per poll while the rows are written
        if first and not missing:
            now, end = time.perf_counter(), cpu_snapshot(procs)
            total = await _count(conn)
            if total != n:
                raise RuntimeError(f"{total} rows in the table once the last keys were, not {n}")
            return now - first, {k: end[k] - start[k] for k in end}, total - seen
        for proc in procs:
            if proc.poll() is not None and proc.returncode not in (0, None):
                raise RuntimeError(f"process exited with {proc.returncode}")
        await asyncio.sleep(0.02)
    raise TimeoutError("rows not written in time")


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
        keys = last_keys(events)
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
                    cmd = [sys.executable, "-c", _BARE, a.bootstrap, prefix, bdsn, str(n), str(batch),
                           str(SinkSettings().kafka_fetch_partition_bytes)]
                    penv = {**os.environ, "PYTHONPATH": str(ROOT)}
                else:
                    cmd = [str(BIN / "desktrace-sink"), "raw"]
                    penv = {**env, "DESKTRACE_GROUP_ID": f"{prefix}sink{r}"}
                procs = [_spawn(cmd, penv) for _ in range(1 if name.startswith("bare") else a.processes)]
                try:
                    dt, cpu, rows = await timed_fill(conn, procs, keys, n)
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait(20)
                rate = rows / dt
                best[name] = max(best[name], rate)
                print(f"round {r + 1}: {name:20s} {rate:10,.0f} rows/s", flush=True)
                split = ", ".join(f"{k} {v / max(rows, 1) * 1e6:.1f}" for k, v in cpu.items())
                print(f"         CPU us per row: {split} (cores busy {cpu['machine'] / dt:.2f} of "
                      f"{os.cpu_count()})", flush=True)
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
