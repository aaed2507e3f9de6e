"""``desktrace-demo``: the whole pipeline on this machine, fed by simulated workstations.

Starts (or finds) the local Kafka and PostgreSQL, runs the stream worker, both sinks and the gateway as
local processes, lets a fleet of simulated users live through today's working day (at a speed-up) through
the real agent code (recorder, throttle, spool, shipper), waits until every session is closed and written,
then prints today's working-time report and the address and credentials of the web pages.

Each run uses its own topic prefix and a fresh ``desktrace_demo`` database, so runs never mix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime

from devstack._proc import DevstackError, stderr_progress
from devstack.pipeline import LocalPipeline, _script
from devstack.postgres import with_database
from devstack.stack import LocalStack, StackConfig, default_state_dir
from devstack.topics import ensure_topics
from proto.topics import Topics

DEMO_DB = "desktrace_demo"


def say(text: str) -> None:
    stderr_progress(f"demo: {text}")


async def _fresh_database(dsn: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            DEMO_DB,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DB}"')
        await conn.execute(f'CREATE DATABASE "{DEMO_DB}"')
    finally:
        await conn.close()
    return with_database(dsn, DEMO_DB)


async def _counts(dsn: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        raw = await conn.fetchval("SELECT count(*) FROM raw_events")
        sessions = await conn.fetchval("SELECT count(*) FROM sessions")
        return int(raw), int(sessions)
    except asyncpg.UndefinedTableError:
        return 0, 0
    finally:
        await conn.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="desktrace-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--users", type=int, default=12, help="simulated users (default 12)")
    p.add_argument(
        "--speed",
        type=float,
        default=1500.0,
        help="simulated seconds per real second (default 1500: a 10-hour day in 24 s)",
    )
    p.add_argument(
        "--hours", type=float, default=10.0, help="length of the simulated day from 07:00 UTC (default 10)"
    )
    p.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    p.add_argument(
        "--close-timeout",
        type=float,
        default=5.0,
        help="seconds of silence before the stream closes a user's sessions (default 5 for the demo)",
    )
    p.add_argument("--exit", action="store_true", help="stop everything after printing the report")
    p.add_argument("--password", default="", help="web password for user 'admin' (default: a random one)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DevstackError, RuntimeError, TimeoutError) as exc:
        print(f"desktrace-demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    config = StackConfig(
        kafka_bootstrap=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", ""),
        pg_dsn=os.environ.get("DESKTRACE_PG_DSN", ""),
        create_topics=False,
    )
    say("starting (or finding) Kafka and PostgreSQL")
    up = LocalStack(config).up()
    prefix = f"demo{int(time.time())}."
    topics = Topics(prefix)
    asyncio.run(ensure_topics(up.kafka_bootstrap, topics, partitions=3))
    demo_dsn = asyncio.run(_fresh_database(up.pg_dsn))
    password = args.password or secrets.token_urlsafe(9)
    log_dir = default_state_dir() / "demo" / prefix.rstrip(".")
    say(f"logs of this run: {log_dir}")

    pipeline = LocalPipeline(
        up.kafka_bootstrap,
        demo_dsn,
        log_dir,
        topic_prefix=prefix,
        close_timeout_s=args.close_timeout,
        extra_env={"DESKTRACE_WEB_PASSWORD": password, "DESKTRACE_LOG_LEVEL": "WARNING"},
    )
    with pipeline:
        today = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0)
        say(
            f"simulating {args.users} users from {today:%Y-%m-%d %H:%M} UTC, "
            f"{args.hours:g} h at x{args.speed:g}"
        )
        sim = subprocess.run(
            [
                _script("desktrace-agent"),
                "simulate",
                "--users",
                str(args.users),
                "--speed",
                str(args.speed),
                "--duration",
                f"{int(args.hours * 3600)}s",
                "--start",
                today.isoformat(),
                "--seed",
                str(args.seed),
            ],
            env={
                **os.environ,
                "DESKTRACE_KAFKA_BOOTSTRAP": up.kafka_bootstrap,
                "DESKTRACE_TOPIC_PREFIX": prefix,
                "DESKTRACE_STATE_DIR": str(log_dir / "agents"),
                "DESKTRACE_LOG_LEVEL": "WARNING",
            },
            check=False,
        )
        if sim.returncode != 0:
            raise RuntimeError(f"the simulated fleet failed (exit {sim.returncode})")
        wait_until_written(demo_dsn, args.close_timeout)
        say("today's report:")
        subprocess.run(
            [_script("desktrace-report"), "day", "--date", today.date().isoformat(), "--format", "table"],
            env={**os.environ, "DESKTRACE_PG_DSN": demo_dsn},
            check=False,
        )
        print(f"\nWeb pages: {pipeline.web_url}  (user: admin, password: {password})", flush=True)
        print(f"Prometheus metrics: {', '.join(pipeline.metrics_urls.values())}", flush=True)
        if args.exit:
            return 0
        print("The pipeline keeps running; press Ctrl-C to stop it.", flush=True)
        try:
            while all(s.alive() for s in pipeline.services.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            say("stopping")
        dead = [s.name for s in pipeline.services.values() if not s.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} stopped unexpectedly; see {log_dir}")
    return 0


def wait_until_written(dsn: str, close_timeout: float, limit: float = 180.0) -> None:
    """Wait until raw events and sessions stop changing for long enough that every session was closed."""
    quiet_needed = max(3 * close_timeout, 10.0)
    deadline = time.monotonic() + limit
    last: tuple[int, int] | None = None
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = asyncio.run(_counts(dsn))
        if now != last:
            say(f"written so far: {now[0]} raw events, {now[1]} sessions")
            last, since = now, time.monotonic()
        elif now[1] > 0 and time.monotonic() - since >= quiet_needed:
            return
        time.sleep(2)
    raise TimeoutError(f"sessions were still changing after {limit:.0f} s; see the service logs")


if __name__ == "__main__":
    raise SystemExit(main())
