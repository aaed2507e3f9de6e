"""``desktrace-agent simulate``: a fleet of synthetic users (:mod:`agent.simulator`) written as JSON Lines or
shipped to Kafka through the agent's own spool and shipper, with progress on stderr or as JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.settings import AgentSettings

if TYPE_CHECKING:
    from agent.simulator import FleetProgress

log = logging.getLogger("desktrace.agent")


def cmd_simulate(args: argparse.Namespace, settings: AgentSettings) -> int:
    from datetime import UTC, date, datetime

    from agent.runner import load_privacy
    from agent.simulator import (
        TIME_ZONES,
        Fleet,
        check_zones,
        last_complete_workday,
        make_users,
        parse_duration,
        parse_start,
        run_kafka,
        write_jsonl,
    )

    if args.users < 1:
        raise ValueError("--users must be at least 1")
    if args.speed < 0:
        raise ValueError("--speed must be 0 (as fast as possible) or positive")
    zones = check_zones(args.zones.split(",")) if args.zones else TIME_ZONES
    users = make_users(args.users, args.seed, zones)
    privacy = load_privacy(settings)  # the same filter `run` applies: simulated desks are private too
    if args.date:
        if args.start:
            raise ValueError("give either --date or --start, not both")
        if args.date == "last":
            day = last_complete_workday(datetime.now(UTC), zones)
        else:
            try:
                day = date.fromisoformat(args.date)
            except ValueError:
                raise ValueError(f"bad --date {args.date!r}: use YYYY-MM-DD or 'last'") from None
        fleet = Fleet.for_day(users, day, settings, privacy=privacy)
    else:
        start, duration = parse_start(args.start), parse_duration(args.duration)
        fleet = Fleet(users, start, duration, settings, privacy=privacy)
    if args.jsonl:
        if args.jsonl == "-":
            n = write_jsonl(fleet, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(args.jsonl, "wb") as f:
                n = write_jsonl(fleet, f)
        log.info("simulation written", extra={"kv": {"events": n, "users": args.users}})
        return 0
    state = settings.state_path / "simulator"
    state.mkdir(parents=True, exist_ok=True)
    progress = _progress_printer(args.progress)
    counts = asyncio.run(
        run_kafka(fleet, settings, args.speed, state, skip_idle=args.skip_idle, progress=progress)
    )
    log.info("simulation produced", extra={"kv": {**counts, "users": args.users}})
    return 0 if counts["left_in_spool"] == 0 else 1


def _progress_printer(mode: str) -> Callable[[FleetProgress], None] | None:
    """``json``: every report as one JSON line on stdout; ``plain``: a line on stderr every 5 s."""
    import json
    import time

    if mode == "none":
        return None
    if mode == "json":

        def emit(p: FleetProgress) -> None:
            sys.stdout.write(json.dumps(p.to_json()) + "\n")
            sys.stdout.flush()

        return emit
    last = [0.0]

    def plain(p: FleetProgress) -> None:
        now = time.monotonic()
        if p.done or now - last[0] >= 5.0:
            last[0] = now
            print(
                f"desktrace-agent simulate: simulated clock {p.sim_now:%Y-%m-%d %H:%M} UTC "
                f"(until {p.end:%Y-%m-%d %H:%M}), events produced {p.produced}, sent {p.sent}"
                + (" - done" if p.done else ""),
                file=sys.stderr,
                flush=True,
            )

    return plain
