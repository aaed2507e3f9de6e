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

Two outputs: JSON Lines (fast, no Kafka: :func:`write_jsonl`) and Kafka through the agent's own spool and
shipper (:func:`run_kafka`), paced at any speed-up of the simulated clock, optionally skipping the hours
when no simulated agent runs, and reporting its progress (:class:`FleetProgress`).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import msgspec

from agent.identity import AGENT_VERSION, Identity
from agent.observations import InputObservation, Observation, PresenceObservation, WindowSnapshot
from agent.recorder import Recorder, SnapshotFilter, SpoolState, make_recorder
from agent.settings import AgentSettings
from proto.codec import event_to_json
from proto.events import Envelope

log = logging.getLogger("desktrace.agent.simulator")

TIME_ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Europe/Warsaw",
    "Australia/Sydney",
)
#: The demo's default zones: a few hours apart, so each user's local day (and its report) differs from UTC's.
DEMO_ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata")
FIRST = (
    "anna",
    "ben",
    "chloe",
    "dmitri",
    "elif",
    "farid",
    "greta",
    "hiro",
    "ines",
    "jonas",
    "kemal",
    "lena",
    "marco",
    "nora",
    "omar",
    "priya",
    "quentin",
    "rosa",
    "sven",
    "tara",
    "uwe",
    "vera",
)
LAST = ("meyer", "smith", "tanaka", "kowalski", "rossi", "garcia", "novak", "berg", "khan", "silva")
SITES = (
    ("Jira", "https://jira.acme.example/browse/OPS-{n}", "OPS-{n}: rollout checklist - Jira"),
    ("Confluence", "https://wiki.acme.example/display/FIN/Page{n}", "Quarter close {n} - Confluence"),
    ("GitHub", "https://github.example/acme/billing/pull/{n}", "Fix rounding #{n} - acme/billing"),
    ("CRM", "https://crm.acme.example/accounts/{n}", "Account {n} | CRM"),
    ("Search", "https://search.example/?q=vat+rules+{n}", "vat rules {n} - Search"),
)
WORKBOOKS = ("Budget 2024.xlsx", "Forecast Q3.xlsx", "Headcount.xlsx", "Invoices March.xlsx")
SHEETS = ("Summary", "Data", "Q1", "Q2", "Q3", "Q4", "Pivot")
DOCUMENTS = ("Proposal ACME.docx", "Minutes weekly.docx", "Policy draft v3.docx", "Contract 2024-17.docx")
MAILS = ("Inbox - anna@acme.example - Outlook", "RE: invoice 4711 - Message", "Meeting notes - Message")

EPS = timedelta(milliseconds=1)


@dataclass
class AgentStartMark:
    ts: datetime


@dataclass
class AgentStopMark:
    ts: datetime


Step = Observation | AgentStartMark | AgentStopMark


@dataclass
class _Win:
    wid: str
    app: str
    exe: str
    title: str = ""
    url: str = ""
    tab: str = ""
    sheet: str = ""
    file_path: str = ""


@dataclass
class SimUser:
    """One synthetic person at one workstation."""

    identity: Identity
    rng: random.Random
    robot: bool = False
    windows: dict[str, _Win] = field(default_factory=dict)
    focus: str = ""
    n_windows: int = 0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.identity.tz)

    # ---- the day -----------------------------------------------------------------------------------

    def days(self, start: datetime, end: datetime) -> Iterator[Step]:
        """Every observation between ``start`` and ``end`` (UTC), in time order."""
        zone = self.zone
        d: date = start.astimezone(zone).date() - timedelta(days=1)
        last_day = end.astimezone(zone).date()
        while d <= last_day:
            for step in self.day(d):
                ts = step.ts
                if ts < start:
                    continue
                if ts >= end:
                    return
                yield step
            d += timedelta(days=1)

    def day(self, d: date, workday: bool = False) -> Iterator[Step]:
        """The observations of local date ``d``; a weekend day is mostly off unless ``workday``."""
        rng = self.rng
        zone = self.zone
        if not workday and d.weekday() >= 5 and rng.random() > 0.05:
            return

        def local(h: float) -> datetime:
            return (datetime(d.year, d.month, d.day, tzinfo=zone) + timedelta(hours=h)).astimezone(UTC)

        arrive = local(rng.gauss(8.6, 0.4))
        lunch = local(12.0 + rng.random())
        lunch_len = timedelta(minutes=rng.uniform(30, 60))
        brk = local(15.0 + rng.random())
        brk_len = timedelta(minutes=rng.uniform(8, 20))
        leave = max(arrive + timedelta(hours=rng.gauss(8.7, 0.5)), brk + brk_len + timedelta(minutes=20))
        meeting = local(10.0 + rng.random() * 1.5) if rng.random() < 0.3 else None
        robot_at = local(13.5 + rng.random() * 1.0) if self.robot else None

        t = arrive
        yield AgentStartMark(t)
        t += timedelta(milliseconds=rng.randint(200, 900))
        yield PresenceObservation(ts=t, kind="Logon", input="hardware")
        self.windows.clear()
        self.focus = ""
        t += timedelta(seconds=rng.uniform(5, 40))
        plan: list[tuple[datetime, str, timedelta]] = [(lunch, "Lock", lunch_len), (brk, "Lock", brk_len)]
        if meeting is not None:
            plan.append((meeting, "Suspend", timedelta(minutes=rng.uniform(25, 60))))
        if robot_at is not None:
            plan.append((robot_at, "robot", timedelta(minutes=rng.uniform(10, 25))))
        plan.sort()
        for at, what, length in plan:
            if at <= t:
                continue
            yield from self.work(t, at)
            t = at
            if what == "robot":
                yield from self.robot_run(t, t + length)
                t += length
                continue
            yield PresenceObservation(ts=t, kind=what, input="hardware" if what == "Lock" else "none")  # type: ignore[arg-type]
            t += length
            back = "Unlock" if what == "Lock" else "Resume"
            yield PresenceObservation(ts=t, kind=back, input="hardware" if back == "Unlock" else "none")  # type: ignore[arg-type]
            t += timedelta(seconds=rng.uniform(1, 5))
        yield from self.work(t, leave)
        t = max(t, leave)
        yield PresenceObservation(ts=t, kind="Logoff", input="hardware")
        yield AgentStopMark(t + timedelta(milliseconds=rng.randint(50, 500)))

    # ---- activity -------------------------------------------------------------------------------------

    def work(self, t: datetime, until: datetime) -> Iterator[Step]:
        """Segments of work in one application each, until ``until``."""
        rng = self.rng
        while t < until - timedelta(seconds=30):
            if rng.random() < 0.04:  # away from the desk without locking
                t += timedelta(minutes=rng.uniform(3, 12))
                continue
            app = rng.choices(("browser", "excel", "word", "mail"), weights=(4, 3, 2, 2))[0]
            t, steps = self.switch_to(t, app)
            yield from steps
            seg_end = min(until, t + timedelta(minutes=rng.uniform(1, 12)))
            while t < seg_end:
                r = rng.random()
                if r < 0.45:
                    for _ in range(rng.randint(5, 60)):  # a typing burst
                        t += timedelta(seconds=rng.uniform(0.12, 0.45))
                        yield InputObservation(ts=t, kind="key", injected=False)
                elif r < 0.65:
                    t += timedelta(seconds=rng.uniform(0.5, 4))
                    yield InputObservation(ts=t, kind="click", injected=False)
                elif r < 0.8:
                    for _ in range(rng.randint(3, 15)):
                        t += timedelta(seconds=rng.uniform(0.05, 0.4))
                        yield InputObservation(ts=t, kind="scroll", injected=False)
                elif r < 0.9:
                    t += timedelta(seconds=rng.uniform(5, 120))  # reading
                else:
                    t, steps = self.change_in_window(t)
                    yield from steps

    def _snapshot(self, t: datetime, w: _Win, **kw: Any) -> WindowSnapshot:
        return WindowSnapshot(
            ts=t,
            window_id=w.wid,
            app=w.app,
            exe_path=w.exe,
            pid=1000 + int(w.wid.split("-")[-1]),
            title=w.title,
            tab=w.tab,
            url=w.url,
            sheet=w.sheet,
            file_path=w.file_path,
            **kw,
        )

    def _new_window(self, app: str) -> _Win:
        rng = self.rng
        self.n_windows += 1
        wid = f"{app}-{self.n_windows}"
        exe = {"browser": "firefox", "excel": "EXCEL.EXE", "word": "WINWORD.EXE", "mail": "OUTLOOK.EXE"}[app]
        w = _Win(wid=wid, app=exe.split(".")[0].lower(), exe=f"C:\\Program Files\\{exe}")
        if app == "browser":
            self._navigate(w)
        elif app == "excel":
            book = rng.choice(WORKBOOKS)
            w.title, w.sheet, w.file_path = f"{book} - Excel", rng.choice(SHEETS), f"C:\\Users\\me\\{book}"
        elif app == "word":
            doc = rng.choice(DOCUMENTS)
            w.title, w.file_path = f"{doc} - Word", f"C:\\Users\\me\\{doc}"
        else:
            w.title = rng.choice(MAILS)
        return w

    def _navigate(self, w: _Win) -> None:
        _name, url, title = self.rng.choice(SITES)
        n = self.rng.randint(1, 400)
        w.url, w.title, w.tab = url.format(n=n), title.format(n=n) + " - Firefox", title.format(n=n)

    def switch_to(self, t: datetime, app: str, injected: bool = False) -> tuple[datetime, list[Step]]:
        """A click that brings ``app`` to the front (opening it if it has no window yet)."""
        rng = self.rng
        existing = [w for w in self.windows.values() if w.wid.startswith(app + "-")]
        opening = not existing or (app in ("word", "excel") and rng.random() < 0.15)
        w = self._new_window(app) if opening else rng.choice(existing)
        if w.wid == self.focus:
            return t, []
        t += timedelta(seconds=rng.uniform(0.3, 3))
        steps: list[Step] = [InputObservation(ts=t, kind="click", injected=injected)]
        t += timedelta(milliseconds=rng.randint(30, 400))
        cls = "injected" if injected else "hardware"
        doc = "open" if opening and app in ("word", "excel") else None
        steps.append(self._snapshot(t, w, new_window=opening, input=cls, document_event=doc))
        self.windows[w.wid] = w
        self.focus = w.wid
        return t, steps

    def change_in_window(self, t: datetime) -> tuple[datetime, list[Step]]:
        """Navigate, change sheet or save: an input, then the window shows something else."""
        rng = self.rng
        w = self.windows.get(self.focus)
        if w is None:
            return t + timedelta(seconds=1), []
        t += timedelta(seconds=rng.uniform(0.5, 5))
        doc: str | None = None
        kind = "click"
        if w.app == "firefox":
            self._navigate(w)
        elif w.app == "excel":
            w.sheet = rng.choice([s for s in SHEETS if s != w.sheet])
        elif w.app == "winword":
            kind, doc = "key", "save"
        else:
            w.title = rng.choice(MAILS)
        steps: list[Step] = [InputObservation(ts=t, kind=kind, injected=False)]  # type: ignore[arg-type]
        t += timedelta(milliseconds=rng.randint(30, 300))
        steps.append(self._snapshot(t, w, input="hardware", document_event=doc))
        return t, steps

    def robot_run(self, t: datetime, until: datetime) -> Iterator[Step]:
        """An RPA robot copying data between the CRM and Excel: injected keys and clicks."""
        rng = self.rng
        while t < until:
            for app in ("browser", "excel"):
                t, steps = self.switch_to(t, app, injected=True)
                yield from steps
                for _ in range(rng.randint(10, 40)):
                    t += timedelta(seconds=rng.uniform(0.05, 0.3))
                    yield InputObservation(ts=t, kind="key", injected=True)
                t += timedelta(seconds=rng.uniform(1, 8))


# ---- the fleet ----------------------------------------------------------------------------------------


def check_zones(zones: Sequence[str]) -> tuple[str, ...]:
    """``zones`` as IANA names this machine knows; a ValueError names the first unknown one."""
    from zoneinfo import ZoneInfoNotFoundError

    out = tuple(z.strip() for z in zones if z.strip())
    if not out:
        raise ValueError("no time zone given: use IANA names like Europe/Berlin,America/New_York")
    for z in out:
        try:
            ZoneInfo(z)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {z!r}: use an IANA name like Europe/Berlin") from None
    return out


def make_users(n: int, seed: int, zones: Sequence[str] = TIME_ZONES) -> list[SimUser]:
    """``n`` users with distinct identities, spread over ``zones`` in turn (user ``i`` lives in
    ``zones[i % len(zones)]``); one in eight (the 4th, 12th, ...) runs an RPA robot."""
    zones = check_zones(zones)
    rng = random.Random(seed)
    users = []
    for i in range(n):
        login = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}"
        tz = zones[i % len(zones)]
        domain = "ACME" if rng.random() < 0.8 else f"WS-{i:04d}"
        host = f"WS-{i:04d}"
        ident = Identity(
            agent_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            user=login,
            domain=domain,
            host=host,
            host_domain="acme.example" if domain == "ACME" else "WORKGROUP",
            tz=tz,
            agent_version=AGENT_VERSION,
        )
        users.append(SimUser(identity=ident, rng=random.Random(rng.getrandbits(64)), robot=i % 8 == 3))
    return users


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
