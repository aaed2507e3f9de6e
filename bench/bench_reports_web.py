"""Report pages and downloads for many users, on a real PostgreSQL (run by hand):

    source /work/wt/stack.env   # or: eval "$(.venv/bin/desktrace-local up)"
    nice .venv/bin/python bench/bench_reports_web.py [--users 500] [--repeat 3]

Creates a throw-away database next to DESKTRACE_PG_DSN's, applies the migrations, seeds ``--users`` users
with a working month (22 weekdays of March 2025, six sessions a day: active, locked, active, idle, active,
idle), and measures through the real gateway application (in-process ASGI, an admin login), in the same run:

- baseline: ``ReportService.month()`` / ``.week()`` (the queries and the arithmetic, nothing rendered);
- the month as JSON (``/api/v1/reports/month``) and the month page (``/?view=month``: heat map + tables);
- the week as CSV (``/api/v1/reports/week?format=csv``) and the week page.

Prints the median time of ``--repeat`` runs, the bytes of each answer and each one's ratio to its baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.postgres import with_database
from gateway.app import create_app
from gateway.auth import hash_password
from gateway.settings import GatewaySettings
from sinks.migrations import apply_migrations
from sinks.rows import SESSION_COLUMNS

DAY = date(2025, 3, 12)
SHAPE = [
    ("active", None, 150),
    ("inactive", "locked", 20),
    ("active", None, 180),
    ("inactive", "idle", 10),
    ("active", None, 110),
    ("inactive", "idle", 15),
]  # minutes


def sessions(users: int) -> list[tuple[Any, ...]]:
    rows = []
    for u in range(users):
        key = f"corp\\user{u:04d}"
        for d in range(1, 32):
            day = date(2025, 3, d)
            if day.weekday() >= 5:
                continue
            t = datetime(2025, 3, d, 7, tzinfo=UTC) + timedelta(minutes=u % 60)
            for kind, reason, minutes in SHAPE:
                end = t + timedelta(minutes=minutes)
                rows.append(
                    (str(uuid.uuid4()), key, kind, reason, t, end, minutes * 60.0, ["pc"], "Europe/Berlin")
                )
                t = end
    return rows


async def timed(fn: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), size


async def main(users: int, repeat: int) -> None:
    base = os.environ.get("DESKTRACE_PG_DSN", "")
    if not base:
        sys.exit("set DESKTRACE_PG_DSN (source /work/wt/stack.env or desktrace-local up)")
    name = f"bench_reports_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(base, name)
    try:
        await apply_migrations(dsn)
        rows = sessions(users)
        conn = await asyncpg.connect(dsn)
        t0 = time.perf_counter()
        await conn.copy_records_to_table(
            "sessions",
            records=rows,
            columns=list(SESSION_COLUMNS),
        )
        await conn.execute("ANALYZE sessions")
        await conn.close()
        print(
            f"seeded {len(rows)} sessions of {users} users in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )

        settings = GatewaySettings(
            pg_dsn=dsn, web_users=f"boss:{hash_password('bench')}", api_tokens="bench-token"
        )
        app = create_app(settings, start_kafka=False)
        transport = httpx.ASGITransport(app=cast(Any, app), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=300) as c:
            await c.post("/login", data={"username": "boss", "password": "bench", "next": "/"})
            reports = await app.state.gateway.reports()

            wire: dict[str, int] = {}

            async def get(url: str) -> int:
                r = await c.get(url)  # httpx asks for gzip and decodes it
                assert r.status_code == 200, (url, r.status_code)
                wire[url] = r.num_bytes_downloaded
                return len(r.content)

            async def svc_month() -> int:
                return len(await reports.month(DAY))

            async def svc_week() -> int:
                return len(await reports.week(DAY))

            results = {
                "month: ReportService.month (baseline)": await timed(svc_month, repeat),
                "month: JSON /api/v1/reports/month": await timed(
                    lambda: get(f"/api/v1/reports/month?date={DAY}"), repeat
                ),
                "month: page /?view=month": await timed(lambda: get(f"/?view=month&date={DAY}"), repeat),
                "week: ReportService.week (baseline)": await timed(svc_week, repeat),
                "week: CSV /api/v1/reports/week?format=csv": await timed(
                    lambda: get(f"/api/v1/reports/week?date={DAY}&format=csv"), repeat
                ),
                "week: page /?view=week": await timed(lambda: get(f"/?view=week&date={DAY}"), repeat),
            }
            await app.state.gateway.close()
        print(f"{users} users, median of {repeat}")
        baseline = 0.0
        sent = iter(wire.values())
        for label, (secs, size) in results.items():
            if "baseline" in label:
                baseline = secs
                print(f"{label:46s} {secs * 1000:7.0f} ms   ({size} rows)")
                continue
            gz = next(sent) / 1e6
            ratio = secs / baseline
            print(f"{label:46s} {secs * 1000:7.0f} ms {size / 1e6:6.2f} MB ({gz:.2f} MB gzip) x{ratio:.2f}")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.users, args.repeat))
