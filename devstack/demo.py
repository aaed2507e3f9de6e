"""``desktrace-demo``: the whole pipeline on this machine, fed by simulated workstations.

Starts (or finds) the local Kafka and PostgreSQL, runs the stream worker, both sinks, the gateway and a
Prometheus server (scraping them all, with the project's alert rules) as local processes, and lets a fleet
of simulated users, living in a few time zones, go through one working day each in their own zone (at a
speed-up) through the real agent code (recorder, throttle, spool, shipper). It then checks that every stage
holds what the one before passed on (events sent, in Kafka, raw rows, sessions, active time per user),
prints that day's working-time report and the addresses of the web pages and of Prometheus.

The day is the most recent Monday-Friday date that is already over in every user's time zone (or --date),
so the demo shows the same complete day at any hour of any day. Each run uses its own topic prefix and a
fresh ``desktrace_demo`` database, so runs never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from agent.simulator import last_complete_workday, local_day_window
from common.settings import SettingsError
from devstack._proc import DevstackError
from devstack.demo_check import StageCounts, problem
from devstack.demo_counts import db_counts, fresh_database, kafka_counts
from devstack.demo_view import DemoView, say
from devstack.pipeline import LocalPipeline, _script
from devstack.prometheus import LocalPrometheus, find_prometheus
from devstack.settings import DemoOptions, load_options
from devstack.stack import LocalStack, StackConfig, default_state_dir
from devstack.topics import delete_topics, ensure_topics
from proto.topics import Topics

__all__ = ["DemoFailed", "choose_day", "load_options", "main", "run"]


class DemoFailed(RuntimeError):
    """The pipeline did not hold what the fleet sent; the message names the stage and every count."""


def main(argv: list[str] | None = None) -> int:
    try:
        opts = load_options(argv)
    except SettingsError as exc:
        print(f"desktrace-demo: {exc}", file=sys.stderr)
        return 2
    _stop_on_signals()
    try:
        return run(opts)
    except (DevstackError, RuntimeError, TimeoutError) as exc:
        print(f"desktrace-demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT stop the demo like Ctrl-C, so every service it started (each in a session of its
    own) is stopped too; SIGINT also when the shell started the demo with it ignored (a background job)."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def choose_day(now: datetime, zones: tuple[str, ...], given: date | None) -> date:
    """``given``, else the most recent working day over in every zone at ``now``."""
    return given or last_complete_workday(now, zones)


def run(args: DemoOptions) -> int:
    now = args.now or datetime.now(UTC)
    zones = args.zones[: args.users]  # the zones someone lives in
    day = choose_day(now, zones, args.date)
    lo, hi = local_day_window(day, zones)
    why = (
        "given with --date"
        if args.date
        else f"the most recent working day over in every zone at {now:%Y-%m-%d %H:%M} UTC"
    )
    say(f"the day: {day} ({day:%A}, {why}); users in {', '.join(zones)}")

    config = StackConfig(
        kafka_bootstrap=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", ""),
        pg_dsn=os.environ.get("DESKTRACE_PG_DSN", ""),
        create_topics=False,
    )
    say("starting (or finding) Kafka and PostgreSQL")
    up = LocalStack(config).up()
    prefix = f"demo{int(time.time())}{secrets.token_hex(2)}."
    topics = Topics(prefix)
    asyncio.run(ensure_topics(up.kafka_bootstrap, topics, partitions=3))
    demo_dsn = asyncio.run(fresh_database(up.pg_dsn, args.database))
    password = args.web_password or secrets.token_urlsafe(9)
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
    prometheus = None
    if args.prometheus:
        try:
            find_prometheus()
            prometheus = LocalPrometheus(pipeline.metrics_targets, log_dir / "prometheus")
        except DevstackError as exc:
            say(f"going on without Prometheus: {exc}")
    try:
        with pipeline:
            try:
                if prometheus is not None:
                    say("starting Prometheus")
                    prometheus.start()
                return _demo(
                    args,
                    day,
                    (lo, hi),
                    up.kafka_bootstrap,
                    topics,
                    demo_dsn,
                    log_dir,
                    pipeline,
                    prometheus,
                    password,
                )
            finally:
                if prometheus is not None:
                    prometheus.stop()
    finally:
        _delete_topics(up.kafka_bootstrap, topics)


def _demo(
    args: DemoOptions,
    day: date,
    window: tuple[datetime, datetime],
    bootstrap: str,
    topics: Topics,
    demo_dsn: str,
    log_dir: Path,
    pipeline: LocalPipeline,
    prometheus: LocalPrometheus | None,
    password: str,
) -> int:
    say(
        f"simulating {args.users} users through {day}, "
        f"{window[0]:%Y-%m-%d %H:%M} to {window[1]:%Y-%m-%d %H:%M} UTC, at x{args.speed:g}"
    )
    agent_env = {
        **os.environ,
        "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap,
        "DESKTRACE_TOPIC_PREFIX": topics.prefix,
        "DESKTRACE_STATE_DIR": str(log_dir / "agents"),
        "DESKTRACE_LOG_LEVEL": "WARNING",
    }
    argv = [
        _script("desktrace-agent"),
        "simulate",
        "--users",
        str(args.users),
        "--zones",
        ",".join(args.zones),
        "--date",
        day.isoformat(),
        "--speed",
        str(args.speed),
        "--skip-idle",
        "--seed",
        str(args.seed),
        "--progress",
        "json",
    ]
    with DemoView(args.progress) as view:
        counts, rc = asyncio.run(_run_fleet(argv, agent_env, demo_dsn, view, args.users))
        if rc != 0 and counts.produced == 0:
            raise DemoFailed(
                f"the simulated fleet failed (exit {rc}) before producing events; see the lines above"
            )

        async def deadlettered() -> int:
            return (await kafka_counts(bootstrap, topics))[1]

        counts = asyncio.run(
            _wait_stored(
                demo_dsn,
                counts,
                args.close_timeout,
                view,
                stopped=lambda: _stopped(pipeline),
                deadlettered=deadlettered,
            )
        )
    try:
        in_kafka, dead = asyncio.run(kafka_counts(bootstrap, topics))
        counts = replace(counts, in_kafka=in_kafka, deadlettered=dead)
    except Exception as exc:  # the counts of the other stages still tell the story
        say(f"could not count the messages in Kafka ({type(exc).__name__}); going on without")
    rows: list[dict[str, Any]] = []
    if counts.sessions:
        rows = _report_rows(demo_dsn, day)
        counts = replace(counts, users_with_activity=sum(1 for r in rows if r.get("active_s", 0) > 0))
    say(f"counts: {counts.line()}")
    for name in _stopped(pipeline):
        tail = pipeline.services[name].log_tail(10)
        raise DemoFailed(
            f"{name} stopped during the run; its last log lines:\n{tail}\n  counts: {counts.line()}"
            f"\n  service logs: {log_dir}"
        )
    trouble = problem(counts)
    if trouble:
        raise DemoFailed(f"{trouble}.\n  counts: {counts.line()}\n  service logs: {log_dir}")

    print(f"\nWorking time on {day} ({day:%A}), each user's own local date:", flush=True)
    zones = Counter(str(r.get("tz", "?")) for r in rows)
    print(
        "Users live in "
        + ", ".join(f"{z} ({n})" for z, n in sorted(zones.items()))
        + "; logon and activity times are their local times.",
        flush=True,
    )
    _print_report(demo_dsn, day)
    print(f"\nWeb pages: {pipeline.web_url}  (user: admin, password: {password})", flush=True)
    if prometheus is not None:
        print(
            f"Prometheus: {prometheus.url}  (scrape targets: {prometheus.url}targets, "
            f"alert rules: {prometheus.url}alerts)",
            flush=True,
        )
    print(f"Metrics: {', '.join(pipeline.metrics_urls.values())}", flush=True)
    if args.exit:
        return 0
    print("The pipeline keeps running; press Ctrl-C to stop it.", flush=True)
    try:
        while all(s.alive() for s in pipeline.services.values()) and (
            prometheus is None or prometheus.alive()
        ):
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping")
        return 0
    stopped = _stopped(pipeline)
    if prometheus is not None and not prometheus.alive():
        stopped.append("prometheus")
    raise RuntimeError(f"{', '.join(stopped)} stopped unexpectedly; see {log_dir}")


async def _run_fleet(
    argv: list[str], env: dict[str, str], dsn: str, view: DemoView, users: int
) -> tuple[StageCounts, int]:
    """Run ``desktrace-agent simulate --progress json``, showing its progress and the rows written."""
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    produced = sent = 0
    stop = asyncio.Event()

    async def watch_db() -> None:
        while not stop.is_set():
            try:
                raw, sessions = await db_counts(dsn)
                view.stored(raw, sent, sessions)
            except OSError:
                pass
            try:
                await asyncio.wait_for(stop.wait(), 2.0)
            except TimeoutError:
                pass

    watcher = asyncio.create_task(watch_db())
    try:
        async for line in proc.stdout:
            try:
                p = json.loads(line)
            except ValueError:
                continue
            produced, sent = int(p["produced"]), int(p["sent"])
            view.fleet(
                datetime.fromisoformat(p["sim_now"]),
                datetime.fromisoformat(p["start"]),
                datetime.fromisoformat(p["end"]),
                produced,
                sent,
                done=bool(p.get("done")),
            )
        rc = await proc.wait()
    finally:
        stop.set()
        await watcher
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    return StageCounts(users=users, produced=produced, sent=sent), rc


async def _wait_stored(
    dsn: str,
    counts: StageCounts,
    close_timeout: float,
    view: DemoView,
    stall_s: float = 90.0,
    limit_s: float = 900.0,
    stopped: Callable[[], list[str]] = list,
    deadlettered: Callable[[], Awaitable[int]] | None = None,
) -> StageCounts:
    """Wait until PostgreSQL holds every event sent (or the rest was dead-lettered) and the sessions stopped
    changing for long enough that every session was closed; give up when nothing changed for ``stall_s``,
    after ``limit_s`` or when a service stopped (the caller names the stage that holds less)."""
    quiet_needed = max(3 * close_timeout, 6.0)
    last: tuple[int, int, int] | None = None
    since = t0 = time.monotonic()
    raw = sessions = dead = 0
    polled_dead = 0.0
    while True:
        raw, sessions = await db_counts(dsn)
        if deadlettered is not None and raw < counts.sent and time.monotonic() - polled_dead >= 3.0:
            polled_dead = time.monotonic()
            with contextlib.suppress(Exception):  # counted again at the end; the wait goes on
                dead = await deadlettered()
        view.stored(raw, counts.sent, sessions)
        now = (raw, sessions, dead)
        if now != last:
            last, since = now, time.monotonic()
        quiet = time.monotonic() - since
        accounted = raw + dead >= counts.sent
        if counts.sent == 0 or (accounted and (sessions > 0 or raw == 0) and quiet >= quiet_needed):
            break
        if quiet >= stall_s or time.monotonic() - t0 >= limit_s or stopped():
            break
        await asyncio.sleep(1.0)
    view.stored(raw, counts.sent, sessions, done=True)
    return replace(counts, raw_rows=raw, sessions=sessions)


def _delete_topics(bootstrap: str, topics: Topics) -> None:
    """The run's topics go with it (its data stays in the database); best effort."""
    try:
        asyncio.run(asyncio.wait_for(delete_topics(bootstrap, topics), 20))
    except Exception as exc:
        say(f"could not delete this run's topics {topics.prefix}* ({type(exc).__name__}); harmless")


def _stopped(pipeline: LocalPipeline) -> list[str]:
    """The pipeline's services that are no longer running."""
    return [name for name, s in pipeline.services.items() if not s.alive()]


def _report_env(dsn: str) -> dict[str, str]:
    return {**os.environ, "DESKTRACE_PG_DSN": dsn}


def _report_rows(dsn: str, day: date) -> list[dict[str, Any]]:
    """The day report's rows as ``desktrace-report day --format json`` gives them."""
    import subprocess

    out = subprocess.run(
        [_script("desktrace-report"), "day", "--date", day.isoformat(), "--format", "json"],
        env=_report_env(dsn),
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        raise DemoFailed(
            f"desktrace-report failed (exit {out.returncode}): {out.stderr.decode(errors='replace')}"
        )
    data = json.loads(out.stdout or b"[]")
    return list(data) if isinstance(data, list) else list(data.get("rows", []))


def _print_report(dsn: str, day: date) -> None:
    import subprocess

    subprocess.run(
        [_script("desktrace-report"), "day", "--date", day.isoformat(), "--format", "table"],
        env=_report_env(dsn),
        check=False,
    )


if __name__ == "__main__":
    raise SystemExit(main())
