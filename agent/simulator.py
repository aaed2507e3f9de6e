"""A fleet of synthetic users with realistic working days, driven by a simulated clock.

Each user has its own identity (login, domain, host, time zone, agent id) and its own
:class:`agent.recorder.Recorder` with its :class:`agent.throttle.HidThrottle` — the code the real agent runs
— fed with the observations a platform source would emit: arrival and logon, bursts of typing, clicks and
scrolling, window switches between browser, Excel, Word and mail (titles, tabs, URLs, sheets, document opens
and saves), reading pauses, short absences, locks at lunch and breaks, laptops suspended for meetings, logoff
in the evening, and for some users an RPA robot producing injected input. Everything is deterministic for a
given seed, start and duration.

A fleet simulates either a span of UTC time (``start`` + ``duration``: whatever days and weekends fall in
it) or one target local date (:meth:`Fleet.for_day`): then every user lives through that date in their own
time zone as a working day, and the simulated span is the union of those local days
(:func:`local_day_window`). :func:`last_complete_workday` picks the most recent Monday-Friday date that is
over in every zone, so a simulation of it is complete at any hour of any day (the demo's choice,
devstack/README.md).

The user model is :mod:`agent.simuser`, the fleet :mod:`agent.simfleet`; this module is the runner (and
re-exports both, the one import every caller uses). Two outputs: JSON Lines (fast, no Kafka:
:func:`write_jsonl`) and Kafka through the agent's own spool and shipper (:func:`run_kafka`), paced at any
speed-up of the simulated clock, optionally skipping the hours when no simulated agent runs, and reporting
its progress (:class:`FleetProgress`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from agent.observations import InputObservation
from agent.settings import AgentSettings
from agent.simfleet import (
    Fleet,
    last_complete_workday,
    local_day_window,
    parse_duration,
    parse_start,
    write_jsonl,
)
from agent.simuser import (
    DEMO_ZONES,
    TIME_ZONES,
    AgentStartMark,
    AgentStopMark,
    SimUser,
    Step,
    check_zones,
    make_users,
)

__all__ = [
    "DEMO_ZONES",
    "TIME_ZONES",
    "AgentStartMark",
    "AgentStopMark",
    "Fleet",
    "FleetProgress",
    "SimUser",
    "SimulatedSource",
    "Step",
    "check_zones",
    "last_complete_workday",
    "local_day_window",
    "make_users",
    "parse_duration",
    "parse_start",
    "run_kafka",
    "write_jsonl",
]

log = logging.getLogger("desktrace.agent.simulator")


@dataclass(frozen=True)
class FleetProgress:
    """Where a Kafka simulation is: its simulated clock within ``start``..``end``, the events its agents
    wrote to the spool (``produced``) and those Kafka acknowledged (``sent``)."""

    sim_now: datetime
    start: datetime
    end: datetime
    produced: int
    sent: int
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "sim_now": self.sim_now.isoformat(),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "produced": self.produced,
            "sent": self.sent,
            "done": self.done,
        }


async def run_kafka(
    fleet: Fleet,
    settings: AgentSettings,
    speed: float,
    state_dir: Path,
    *,
    skip_idle: bool = False,
    progress: Callable[[FleetProgress], None] | None = None,
) -> dict[str, int]:
    """Produce the fleet's events through one spool and the agent's shipper, pacing the simulated clock
    at ``speed`` times real time (``0`` = as fast as possible). With ``skip_idle`` the clock jumps over
    stretches when no simulated agent runs (nights between the zones' days). ``progress`` is called about
    five times a second and once at the end. Returns counts."""
    from agent.runner import SpoolWriter
    from agent.shipper import Shipper, producer_factory
    from agent.spool import Spool
    from common.kafka import client_options
    from proto.topics import Topics

    spool = Spool(state_dir / "simulator-spool.db", settings.spool_max_bytes)
    # one spool for the whole fleet: partial batches wait at most 1 s (not linger_s) so demos flow
    shipper = Shipper(
        spool,
        producer_factory(client_options(settings), settings.compression_type),
        batch_size=settings.batch_size,
        linger_s=min(settings.linger_s, 1.0),
    )
    writer = SpoolWriter(spool, Topics(settings.topic_prefix), on_spooled=shipper.wake)
    task = asyncio.create_task(shipper.run())
    wall0 = time.monotonic()
    sim0 = fleet.start
    produced = 0
    sim_now = fleet.start
    try:
        while True:
            if speed > 0:
                sim_now = sim0 + timedelta(seconds=(time.monotonic() - wall0) * speed)
                nt = fleet.next_time()
                if skip_idle and not fleet.any_running() and (nt is None or nt > sim_now):
                    sim0, wall0 = (fleet.end if nt is None else nt), time.monotonic()
                    sim_now = sim0
            else:
                nt = fleet.next_time()
                sim_now = fleet.end if nt is None else min(fleet.end, nt + timedelta(minutes=10))
            fleet.spool_state = writer.spool_state()
            batch = list(fleet.events(min(sim_now, fleet.end)))
            if batch:
                writer.write(batch, next_seq=0)
                produced += len(batch)
            if progress is not None:
                sent = shipper.stats.sent_events
                progress(FleetProgress(min(sim_now, fleet.end), fleet.start, fleet.end, produced, sent))
            if sim_now >= fleet.end:
                break
            # keep the spool from growing without bound when producing faster than Kafka takes it
            while len(spool) > 50_000:  # noqa: ASYNC110 - the spool is polled, it has no event to wait on
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2 if speed > 0 else 0)
    finally:
        shipper.stop(drain_s=60.0)
        await task
        left = len(spool)
        spool.close()
    if progress is not None:
        sent = shipper.stats.sent_events
        progress(FleetProgress(min(sim_now, fleet.end), fleet.start, fleet.end, produced, sent, done=True))
    return {
        "produced": produced,
        "sent": shipper.stats.sent_events,
        "left_in_spool": left,
        "observations": fleet.observations,
    }


class SimulatedSource:
    """A :class:`agent.observations.Source` that plays one synthetic user live: the observations of
    :meth:`SimUser.work` (typing, clicks, scrolls, switches between browser, Excel, Word and mail), with
    the pauses between them divided by ``speed`` and stamped with the real time they are emitted at.
    ``desktrace-agent run --source simulated`` uses it to run the real agent pipeline without a desktop."""

    def __init__(self, seed: int = 1, speed: float = 10.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.user = make_users(1, seed)[0]
        self.speed = speed
        self._stop = asyncio.Event()
        self._last_input = time.monotonic()

    async def run(self, emit: Any) -> None:
        t = datetime(2024, 1, 1, tzinfo=UTC)
        steps = self.user.work(t, datetime(9999, 1, 1, tzinfo=UTC))
        prev = t
        for step in steps:
            if isinstance(step, AgentStartMark | AgentStopMark):
                continue
            gap = (step.ts - prev).total_seconds() / self.speed
            prev = step.ts
            if gap > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), gap)
                    return
                except TimeoutError:
                    pass
            if self._stop.is_set():
                return
            if isinstance(step, InputObservation):
                self._last_input = time.monotonic()
            emit(msgspec.structs.replace(step, ts=datetime.now(UTC)))

    def stop(self) -> None:
        self._stop.set()

    def idle_ms(self) -> int:
        return int((time.monotonic() - self._last_input) * 1000)
