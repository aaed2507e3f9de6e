"""A fleet of :class:`agent.simuser.SimUser` run through the real agent's recorder on a simulated clock.

:class:`Fleet` merges every user's observations in simulated-time order, each through its own
:class:`agent.recorder.Recorder` (with its HID throttle), over a span of UTC time or one local date lived by
every user in their own zone (:meth:`Fleet.for_day`, :func:`local_day_window`, :func:`last_complete_workday`).
:func:`write_jsonl` writes the events as JSON Lines (no Kafka).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import IO
from zoneinfo import ZoneInfo

from agent.observations import InputObservation, PresenceObservation
from agent.recorder import Recorder, SnapshotFilter, SpoolState, make_recorder
from agent.settings import AgentSettings
from agent.simuser import AgentStartMark, AgentStopMark, SimUser, Step, check_zones
from proto.codec import event_to_json
from proto.events import Envelope


def local_day_window(d: date, zones: Sequence[str]) -> tuple[datetime, datetime]:
    """The UTC span covering local date ``d`` in every zone: from the earliest local midnight starting
    ``d`` to the latest one ending it (23- and 25-hour DST days included as they are)."""
    starts, ends = [], []
    for z in zones:
        zone = ZoneInfo(z)
        starts.append(datetime.combine(d, dtime(), tzinfo=zone).astimezone(UTC))
        ends.append(datetime.combine(d + timedelta(days=1), dtime(), tzinfo=zone).astimezone(UTC))
    return min(starts), max(ends)


def last_complete_workday(now: datetime, zones: Sequence[str]) -> date:
    """The most recent Monday-Friday date that is over (its local midnight passed) in every one of ``zones``
    at ``now``: the same answer at every hour until the westernmost zone finishes another working day.

    A local date ``d`` is over in a zone when that zone's date at ``now`` is later than ``d``; so the
    candidate is the day before the earliest local date, moved back over Saturday and Sunday (the working
    week is Monday to Friday in every zone; public holidays are not modelled)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    d = min(now.astimezone(ZoneInfo(z)).date() for z in check_zones(zones)) - timedelta(days=1)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


@dataclass
class _Agent:
    user: SimUser
    recorder: Recorder
    steps: Iterator[Step]
    running: bool = False
    last_input: datetime | None = None


class Fleet:
    """Runs every user's observations through its own recorder, merged in simulated-time order.

    ``events(until)`` yields the raw events each agent would spool, in the order they would be written
    (heartbeats and held clicks released on the simulated clock, as the real agent's one-second tick does).
    """

    def __init__(
        self,
        users: list[SimUser],
        start: datetime,
        duration: timedelta,
        settings: AgentSettings | None = None,
        privacy: SnapshotFilter | None = None,
        *,
        day: date | None = None,
    ) -> None:
        settings = settings or AgentSettings()
        self.start, self.end = start, start + duration
        self.day = day
        self.agents: list[_Agent] = []
        for u in users:
            rec = make_recorder(settings, u.identity, privacy=privacy)
            steps = u.day(day, workday=True) if day is not None else u.days(self.start, self.end)
            self.agents.append(_Agent(u, rec, steps))
        self._heap: list[tuple[datetime, int, Step]] = []
        for i in range(len(self.agents)):
            self._advance(i)
        self.observations = 0
        self.spool_state: SpoolState | None = None

    @classmethod
    def for_day(
        cls,
        users: list[SimUser],
        day: date,
        settings: AgentSettings | None = None,
        privacy: SnapshotFilter | None = None,
    ) -> Fleet:
        """Every user lives through local date ``day`` in their own zone, as a working day (even on a
        weekend: the caller chose the date); the span is :func:`local_day_window` of their zones."""
        start, end = local_day_window(day, sorted({u.identity.tz for u in users}))
        return cls(users, start, end - start, settings, privacy, day=day)

    def any_running(self) -> bool:
        """True while some simulated agent runs (between its start and stop, machine awake)."""
        return any(a.running for a in self.agents)

    def _advance(self, i: int) -> None:
        step = next(self.agents[i].steps, None)
        if step is not None:
            heapq.heappush(self._heap, (step.ts, i, step))

    def next_time(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def events(self, until: datetime | None = None) -> Iterator[Envelope]:
        """Events from every step before ``until`` (default: the end of the simulation)."""
        until = until or self.end
        while self._heap and self._heap[0][0] < until:
            ts, i, step = heapq.heappop(self._heap)
            a = self.agents[i]
            yield from self._due(a, ts)
            yield from self._apply(a, step)
            self._advance(i)
        if until >= self.end:
            for a in self.agents:  # the simulation ends with agents still running: their last ticks
                yield from self._due(a, self.end)

    def _due(self, a: _Agent, now: datetime) -> Iterator[Envelope]:
        while a.running:
            due = a.recorder.next_due()
            if due is None or due > now:
                return
            idle = int((due - a.last_input).total_seconds() * 1000) if a.last_input else 0
            yield from a.recorder.tick(due, idle, self.spool_state)

    def _apply(self, a: _Agent, step: Step) -> list[Envelope]:
        self.observations += 1
        if isinstance(step, AgentStartMark):
            a.running = True
            return a.recorder.start(step.ts)
        if isinstance(step, AgentStopMark):
            a.running = False
            return a.recorder.stop(step.ts)
        if isinstance(step, InputObservation):
            a.last_input = step.ts
        out = a.recorder.observe(step)
        if isinstance(step, PresenceObservation):
            if step.kind == "Suspend":
                a.running = False  # a sleeping machine runs no agent
            elif step.kind == "Resume":
                a.running = True
        return out


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``8h``, ``2d``, ``1w`` or a number of seconds."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        if text and text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except ValueError:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 30m, 8h, 2d, 1w") from None


def parse_start(text: str | None) -> datetime:
    """An ISO date or date-time (UTC unless it has an offset); default: today 00:00 UTC."""
    if not text:
        now = datetime.now(UTC)
        return datetime(now.year, now.month, now.day, tzinfo=UTC)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"bad start {text!r}: use an ISO date like 2024-03-04 or 2024-03-04T06:00Z"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def write_jsonl(fleet: Fleet, out: IO[bytes]) -> int:
    """Write every event as one JSON line; returns the count."""
    n = 0
    for e in fleet.events():
        out.write(event_to_json(e) + b"\n")
        n += 1
    return n
