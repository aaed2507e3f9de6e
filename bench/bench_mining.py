"""Event-log export rate on a real PostgreSQL (run by hand, under nice):

    source /work/wt/stack.env   # or: eval "$(.venv/bin/desktrace-local up)"
    nice .venv/bin/python bench/bench_mining.py [--sim-users 10] [--users 100] [--days 30]

Creates a throw-away database next to DESKTRACE_PG_DSN's and fills it with a month of a simulated fleet:
``--sim-users`` users are run through the agent simulator (the real recorder and HID throttle; every event
type, not only UI events) and written with the raw sink's writer; their rows are then copied under new user
keys and agent ids until there are ``--users`` users. Then, in the same run, on the same rows:

- baseline: a bare ``COPY (SELECT <the export's columns> ... ORDER BY user_key, ts, ...) TO STDOUT`` of the
  UI events of the period, discarded as it arrives;
- ``desktrace-report export --format xes`` and ``--format ocel`` (subprocesses, output to a file), with
  their peak resident memory, for the first week and for the whole month (constant memory: the two peaks
  should be about the same);
- ``desktrace-report flow`` (the DFG, same read).

Prints events/s and each path's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.simulator import Fleet, make_users
from devstack.postgres import with_database
from proto.codec import encode_event
from reports.export import COUNT_SQL, _query_args, events_sql
from sinks.migrations import apply_migrations
from sinks.rows import RAW_COLUMNS
from sinks.writers import RawWriter

REPORT = str(Path(sys.executable).parent / "desktrace-report")


async def fill(dsn: str, sim_users: int, users: int, start: datetime, days: int) -> int:
    await apply_migrations(dsn)
    writer = RawWriter(retention_days=0)
    fleet = Fleet(make_users(sim_users, 11), start, timedelta(days=days))
    conn = await asyncpg.connect(dsn)
    try:
        await writer.prepare(conn)
        batch: list[tuple[object, ...]] = []
        t0 = time.perf_counter()
        n = 0
        for ev in fleet.events():
            batch.append(writer.decode(encode_event(ev)))
            if len(batch) >= 20000:
                await writer.before_write(conn, batch)
                async with conn.transaction():
                    n += (await writer.write(conn, batch))[0]
                batch.clear()
        if batch:
            await writer.before_write(conn, batch)
            async with conn.transaction():
                n += (await writer.write(conn, batch))[0]
        print(
            f"simulated {sim_users} users x {days} days: {n} raw events in {time.perf_counter() - t0:.1f} s"
        )
        cols = ", ".join(f'"{c}"' for c in RAW_COLUMNS)
        copies = max(0, -(-users // sim_users) - 1)
        t0 = time.perf_counter()
        for k in range(1, copies + 1):
            sel = cols.replace('"agent_id"', f"agent_id || '#c{k}'").replace(
                '"user_key"', f"user_key || '#c{k}'"
            )
            sel = sel.replace('"user"', f"\"user\" || '#c{k}'")
            await conn.execute(
                f"INSERT INTO raw_events ({cols}) SELECT {sel} FROM raw_events WHERE agent_id NOT LIKE '%#%'"
            )
        await conn.execute("ANALYZE raw_events")
        total = await conn.fetchval("SELECT count(*) FROM raw_events")
        nusers = await conn.fetchval("SELECT count(DISTINCT user_key) FROM raw_events")
        print(f"copied to {nusers} users: {total} raw events in {time.perf_counter() - t0:.1f} s")
        return int(total)
    finally:
        await conn.close()


async def copy_baseline(dsn: str, first: date, last: date) -> tuple[int, float, int]:
    """Rows, seconds and bytes of a bare COPY TO STDOUT of the export's rows (discarded)."""
    conn = await asyncpg.connect(dsn)
    try:
        args = _query_args(first, last, None)
        rows = int(await conn.fetchval(COUNT_SQL, *args))
        sql = events_sql(False)
        size = 0

        async def sink(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)

        t0 = time.perf_counter()
        await conn.copy_from_query(sql, *args, output=sink)
        return rows, time.perf_counter() - t0, size
    finally:
        await conn.close()


def run_cli(dsn: str, *args: str) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one ``desktrace-report`` run."""
    env = {**os.environ, "DESKTRACE_PG_DSN": dsn}
    t0 = time.perf_counter()
    proc = subprocess.Popen([REPORT, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"desktrace-report {' '.join(args)} failed: {err}")
    return dt, usage.ru_maxrss


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim-users", type=int, default=10)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start", default="2026-03-02")
    p.add_argument("--keep", action="store_true", help="keep the database (printed) for more runs")
    p.add_argument("--reuse", metavar="DSN", default="", help="measure a database kept by --keep (no fill)")
    a = p.parse_args()
    admin = os.environ.get("DESKTRACE_PG_DSN")
    if not admin:
        raise SystemExit("set DESKTRACE_PG_DSN (e.g. source /work/wt/stack.env)")
    name = f"bench_mining_{uuid.uuid4().hex[:8]}"
    if a.reuse:
        dsn, a.keep = a.reuse, True
    else:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        dsn = with_database(admin, name)
    try:
        start = datetime.fromisoformat(a.start).replace(tzinfo=UTC)
        if not a.reuse:
            await fill(dsn, a.sim_users, a.users, start, a.days)
        first = start.date() + timedelta(days=1)  # whole local days in every zone
        last = start.date() + timedelta(days=a.days - 2)
        week = first + timedelta(days=6)
        rows, base_s, size = await copy_baseline(dsn, first, last)
        base_rate = rows / base_s
        print(f"\nUI events {first}..{last}: {rows}")
        print(
            f"baseline COPY TO STDOUT       {base_s:7.2f} s  {base_rate:10,.0f} events/s  "
            f"({size / 1e6:.0f} MB text)"
        )
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("xes", "ocel"):
                for lo, hi, label in ((first, week, "1 week"), (first, last, "month")):
                    out = Path(tmp) / f"log.{fmt}"
                    dt, rss = run_cli(
                        dsn,
                        "export",
                        "--format",
                        fmt,
                        "--from",
                        str(lo),
                        "--to",
                        str(hi),
                        "--out",
                        str(out),
                        "--no-progress",
                    )
                    n = rows if label == "month" else None
                    mb = out.stat().st_size / 1e6
                    if n is None:
                        print(
                            f"export {fmt:4} {label:6}           {dt:7.2f} s  "
                            f"peak RSS {rss / 1024:6.0f} MiB  ({mb:.0f} MB)"
                        )
                    else:
                        rate = n / dt
                        print(
                            f"export {fmt:4} {label:6}           {dt:7.2f} s  {rate:10,.0f} events/s  "
                            f"ratio {rate / base_rate:5.2f}  peak RSS {rss / 1024:6.0f} MiB  ({mb:.0f} MB)"
                        )
        dt, rss = run_cli(dsn, "flow", "--from", str(first), "--to", str(last), "--format", "json")
        print(
            f"flow (DFG) month               {dt:7.2f} s  {rows / dt:10,.0f} events/s  "
            f"ratio {rows / dt / base_rate:5.2f}  peak RSS {rss / 1024:6.0f} MiB"
        )
    finally:
        if a.keep:
            print(f"kept database: {dsn}")
        else:
            conn = await asyncpg.connect(admin)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
