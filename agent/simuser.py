"""The simulated user model: who a synthetic user is and how their working day goes.

A :class:`SimUser` has its own identity (login, domain, host, time zone, agent id) and yields the
observations a platform source would emit through its day (:meth:`SimUser.work`): arrival and logon, bursts
of typing, clicks and scrolling, window switches between browser, Excel, Word and mail, reading pauses,
short absences, locks, suspends for meetings, logoff, and for some users an RPA robot's injected input.
Deterministic for a given seed. :mod:`agent.simfleet` runs many of them; :mod:`agent.simulator` ships them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from agent.identity import AGENT_VERSION, Identity
from agent.observations import InputObservation, Observation, PresenceObservation, WindowSnapshot

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
