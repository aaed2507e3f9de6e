"""``desktrace-sink``: the Kafka -> PostgreSQL sinks and their maintenance commands.

desktrace-sink raw          # raw topics -> raw_events (group <prefix>desktrace-sink-raw)
desktrace-sink sessions     # session topic -> sessions (group <prefix>desktrace-sink-sessions)
desktrace-sink migrate      # apply pending migrations and exit
desktrace-sink partitions   # create raw_events partitions ahead, drop the expired ones, and exit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from datetime import UTC, date, datetime

import asyncpg

from common.health import HealthServer
from common.logs import setup_logging
from common.settings import SettingsError, add_arguments, load
from sinks.metrics import SinkMetrics
from sinks.migrations import MigrationError, apply_migrations
from sinks.partitions import create_window, drop_expired
from sinks.runner import SinkRunner, Stopped
from sinks.settings import SECTION, SINK_HELP, SinkSettings, default_metrics_addr
from sinks.writers import RawWriter, SessionWriter, Writer

log = logging.getLogger("sinks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktrace-sink",
        description="Write desktrace Kafka topics to PostgreSQL (idempotent, at-least-once consumer groups) "
        "and maintain the schema.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("raw", "run the raw-events sink (raw topics -> raw_events)"),
        ("sessions", "run the sessions sink (session topic -> sessions)"),
        ("migrate", "apply pending schema migrations and exit"),
        ("partitions", "create raw_events partitions ahead and drop those past retention, then exit"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        add_arguments(p, SinkSettings, SINK_HELP)
    return parser


async def _upkeep(conn: asyncpg.Connection, settings: SinkSettings) -> tuple[list[date], list[str]]:
    """Create the partition window around today and drop the expired partitions: ``(created, dropped)``."""
    today = datetime.now(UTC).date()
    created = await create_window(
        conn, today, settings.partitions_behind_days, settings.partitions_ahead_days
    )
    return created, await drop_expired(conn, today, settings.raw_retention_days)


async def _maintain(settings: SinkSettings, runner: SinkRunner) -> None:
    """Periodic partition upkeep beside the raw sink (its own connection; failures are retried later)."""
    while not runner.stopping:
        try:
            conn = await asyncpg.connect(settings.pg_dsn, timeout=10)
            try:
                await _upkeep(conn, settings)
            finally:
                await conn.close()
        except Exception as exc:
            log.warning(
                "partition maintenance failed; will retry", extra={"kv": {"error": type(exc).__name__}}
            )
            await asyncio.sleep(min(60.0, settings.maintenance_interval_s))
            continue
        await asyncio.sleep(settings.maintenance_interval_s)


async def run_sink(name: str, settings: SinkSettings) -> int:
    writer: Writer = RawWriter(settings.raw_retention_days) if name == "raw" else SessionWriter()
    metrics = SinkMetrics(writer.table)
    runner = SinkRunner(writer, settings, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    addr = settings.metrics_addr or default_metrics_addr(name, settings.topic_prefix)
    health: HealthServer | None = None
    if addr.lower() not in ("off", "none", "-"):
        health = HealthServer(
            addr, metrics.registry, {"kafka": runner.check_kafka, "postgres": runner.check_postgres}
        )
        await health.start()
    maintenance: asyncio.Task[None] | None = None
    try:
        if name == "raw":
            # Migrations first (the maintenance needs the partition function), then upkeep beside the loop.
            try:
                await runner.migrate()
            except Stopped:
                return 0
            maintenance = asyncio.create_task(_maintain(settings, runner))
        await runner.run()
    finally:
        if maintenance is not None:
            maintenance.cancel()
            with contextlib.suppress(BaseException):
                await maintenance
        if health is not None:
            await health.stop()
    log.info("sink stopped", extra={"kv": {"table": writer.table}})
    return 0


async def run_migrate(settings: SinkSettings) -> int:
    applied = await apply_migrations(settings.pg_dsn)
    print(json.dumps({"applied": applied}))
    return 0


async def run_partitions(settings: SinkSettings) -> int:
    await apply_migrations(settings.pg_dsn)
    conn = await asyncpg.connect(settings.pg_dsn, timeout=30)
    try:
        created, dropped = await _upkeep(conn, settings)
    finally:
        await conn.close()
    print(json.dumps({"created": [d.isoformat() for d in created], "dropped": dropped}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load(SinkSettings, args, section=SECTION)
    except SettingsError as exc:
        print(f"desktrace-sink: {exc}", file=sys.stderr)
        return 2
    setup_logging(f"sink-{args.command}", settings.log_level, settings.log_format)
    if not settings.pg_dsn:
        print("desktrace-sink: no PostgreSQL DSN: set --pg-dsn / DESKTRACE_PG_DSN / pg_dsn", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        if args.command in ("raw", "sessions"):
            return asyncio.run(run_sink(args.command, settings))
        if args.command == "migrate":
            return asyncio.run(run_migrate(settings))
        return asyncio.run(run_partitions(settings))
    except MigrationError as exc:
        log.error("migration failed", extra={"kv": {"error": str(exc)}})
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.error(
            "database unreachable",
            extra={"kv": {"error": type(exc).__name__, "after_s": round(time.monotonic() - started, 1)}},
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
