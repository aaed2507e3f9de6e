"""The synthetic events of the tests and benchmarks, from one module (the product's own simulator is
``agent.simulator``, which models a fleet of users for the demo):

- :func:`generate_events`: a few users' realistic morning (the sessionizer and stream tests, the benchmarks);
- :func:`event_mix`: ``n`` events in the proportions a desktop produces (the sink tests and benchmark);
- :func:`sample_event`, :func:`sample_fields`, :func:`every_event_type`: one valid event of each type.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec

from proto import events as E
from proto.events import EVENT_TYPES, HID_INPUT_CLASS, Envelope

# ---- a realistic morning ---------------------------------------------------------------------------------


class _Agent:
    def __init__(self, rng: random.Random, user: str, domain: str, host: str, version: str) -> None:
        self.agent_id = str(uuid.UUID(int=rng.getrandbits(128)))
        self.user, self.domain, self.host, self.version = user, domain, host, version
        self.seq = 0
        self.last_input: datetime | None = None

    def make(self, cls: type[E.Envelope], ts: datetime, **kw: Any) -> E.Envelope:
        self.seq += 1
        if "input" not in kw:
            kw["input"] = "hardware" if cls.__name__.startswith("Hardware") else "none"
        if kw["input"] == "hardware":
            self.last_input = ts if self.last_input is None else max(self.last_input, ts)
        return cls(
            agent_id=self.agent_id, seq=self.seq, ts=ts, user=self.user, domain=self.domain, host=self.host,
            host_domain=self.domain, tz="Europe/Berlin", utc_offset_min=60, agent_version=self.version, **kw,
        )


def generate_events(
    seed: int = 7, users: int = 4, hours: float = 3.0, start: datetime | None = None
) -> list[E.Envelope]:
    """A few users' realistic morning, time-ordered: agent start and logon, heartbeats every 60 s (with
    ``last_input_ts``), throttled HID input in work bursts separated by idle gaps longer and shorter than
    the default G, UI events, a lock/unlock, a suspend/resume, a second host for one user, injected input,
    a legacy ``StateChange`` client, and a logoff/agent stop at the end."""
    rng = random.Random(seed)
    t0 = start or datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
    out: list[E.Envelope] = []
    for u in range(users):
        login = f"user{u}"
        hosts = ["pc-" + login] + (["laptop-" + login] if u == 1 else [])
        for h, host in enumerate(hosts):
            agent = _Agent(rng, login, "corp", host, rng.choice(["1.4.0", "1.4.1", "1.5.0"]))
            begin = t0 + timedelta(minutes=rng.randint(0, 20) + 45 * h)
            end = begin + timedelta(hours=hours - 0.75 * h, minutes=rng.randint(-10, 10))
            out += _agent_day(rng, agent, begin, end)
    # a legacy client (POST /api/report through the gateway)
    legacy = _Agent(rng, "legacy", "shop", "till-1", "")
    t = t0 + timedelta(minutes=5)
    state = "working"
    while t < t0 + timedelta(hours=hours):
        out.append(legacy.make(E.StateChange, t, state=state))
        state = "stopped" if state == "working" and rng.random() < 0.3 else "working"
        t += timedelta(seconds=rng.choice([60, 60, 60, 120, 400]))
    out.sort(key=lambda e: e.ts)
    return out


def _agent_day(rng: random.Random, a: _Agent, begin: datetime, end: datetime) -> list[E.Envelope]:
    evs = [a.make(E.AgentStart, begin), a.make(E.Logon, begin + timedelta(seconds=2))]
    t = begin + timedelta(seconds=5)
    next_hb = begin + timedelta(seconds=60)
    locked = False
    suspended_until: datetime | None = None
    hid = [E.HardwareKeyboardEvent, E.HardwareMouseClick, E.HardwareMouseScroll]
    while t < end:
        while next_hb <= t:
            if suspended_until is None or next_hb >= suspended_until:
                evs.append(a.make(E.Heartbeat, next_hb, last_input_ts=a.last_input,
                                  idle_ms=rng.randint(0, 60000), spool_events=rng.randint(0, 5)))
            next_hb += timedelta(seconds=60)
        r = rng.random()
        if r < 0.70 and not locked:  # a minute of work: throttled HID + maybe a window switch
            for cls in rng.sample(hid, rng.randint(1, 3)):
                evs.append(a.make(cls, t + timedelta(milliseconds=rng.randint(0, 59_999)), app="excel"))
            if rng.random() < 0.4:
                evs.append(a.make(E.WindowSwitch, t + timedelta(seconds=rng.randint(0, 59)),
                                  input="hardware", app="outlook", title="Inbox"))
            if rng.random() < 0.1:
                evs.append(a.make(E.InjectedMouseClick, t + timedelta(seconds=rng.randint(0, 59)),
                                  input="injected"))
            t += timedelta(seconds=60)
        elif r < 0.85:  # idle: sometimes shorter, sometimes longer than G = 5 min
            t += timedelta(minutes=rng.choice([2, 4, 6, 9, 15]))
        elif r < 0.93 and not locked:
            evs.append(a.make(E.Lock, t))
            locked = True
            t += timedelta(minutes=rng.randint(3, 12))
            evs.append(a.make(E.Unlock, t, input="hardware"))
            locked = False
            t += timedelta(seconds=30)
        elif suspended_until is None:
            evs.append(a.make(E.Suspend, t))
            suspended_until = t + timedelta(minutes=rng.randint(10, 20))
            t = suspended_until
            evs.append(a.make(E.Resume, t))
            evs.append(a.make(E.WindowUpdate, t + timedelta(seconds=3), app="chrome", url="https://x.invalid/"))
        else:
            t += timedelta(minutes=1)
    evs.append(a.make(E.Logoff, end))
    evs.append(a.make(E.AgentStop, end + timedelta(seconds=1)))
    return evs


def shuffled_with_duplicates(events: Sequence[E.Envelope], seed: int = 11, dup_ratio: float = 0.1) -> list[
    E.Envelope
]:
    """The events in a random order, about ``dup_ratio`` of them twice (as agents resend after a crash)."""
    rng = random.Random(seed)
    out = list(events) + [e for e in events if rng.random() < dup_ratio]
    rng.shuffle(out)
    return out



# ---- a throughput mix ---------------------------------------------------------------------------------

_APPS = [
    ("chrome.exe", "https://intranet.example.com/wiki/page", "Wiki - Chrome"),
    ("EXCEL.EXE", "", "budget.xlsx - Excel"),
    ("WINWORD.EXE", "", "report.docx - Word"),
    ("outlook.exe", "", "Inbox - Outlook"),
    ("firefox.exe", "https://mail.example.org/inbox?x=1", "Mail - Firefox"),
]


def event_mix(
    n: int,
    agents: int = 4,
    start: datetime | None = None,
    seed: int = 7,
    step_ms: int = 700,
) -> list[Envelope]:
    """``n`` events from ``agents`` agents (one user each), in the proportions a desktop produces: mostly
    throttled HID events, window switches/updates, a heartbeat a minute, a few locks and saves."""
    rnd = random.Random(seed)
    if start is None:  # yesterday 08:00 UTC: inside any retention, spanning one or two partitions
        start = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=1)
    seqs = [0] * agents
    out: list[Envelope] = []
    for i in range(n):
        a = i % agents
        seqs[a] += 1
        ts = start + timedelta(milliseconds=step_ms * (i // agents) + a)
        app, url, title = _APPS[rnd.randrange(len(_APPS))]
        env: dict[str, Any] = {
            "agent_id": f"00000000-0000-4000-8000-{a:012d}",
            "seq": seqs[a],
            "ts": ts,
            "user": f"user{a}",
            "domain": "CORP",
            "host": f"PC-{a:03d}",
            "host_domain": "corp.example.com",
            "tz": "Europe/Berlin",
            "utc_offset_min": 60,
            "agent_version": "1.0.0",
        }
        ctx: dict[str, Any] = {
            "app": app,
            "title": title,
            "url": url,
            "pid": 1000 + a,
            "exe_path": f"C:\\Program Files\\{app}",
            "hierarchy": [
                E.UiNode(name=title, control_type="Window"),
                E.UiNode(name="Body", control_type="Pane"),
            ],
        }
        r = rnd.random()
        ev: Envelope
        if r < 0.45:
            ev = E.HardwareKeyboardEvent(input="hardware", **env, **ctx)
        elif r < 0.70:
            ev = E.HardwareMouseClick(input="hardware", **env, **ctx)
        elif r < 0.82:
            ev = E.WindowSwitch(input="hardware", **env, **ctx)
        elif r < 0.90:
            ev = E.WindowUpdate(input="none", **env, **ctx)
        elif r < 0.97:
            ev = E.Heartbeat(input="none", last_input_ts=ts - timedelta(seconds=3), idle_ms=3000, **env)
        elif r < 0.98:
            ev = E.DocumentSave(input="hardware", file_path="C:\\docs\\report.docx", **env, **ctx)
        elif r < 0.99:
            ev = E.Lock(input="none", **env)
        else:
            ev = E.Unlock(input="hardware", **env)
        out.append(ev)
    return out



# ---- one of every type ---------------------------------------------------------------------------------

#: A non-UTC, sub-millisecond instant: decoding must normalise it to UTC milliseconds.
BASE_TS = datetime(2024, 3, 4, 9, 15, 30, 123456, tzinfo=timezone(timedelta(hours=1)))


def sample_fields(
    type_name: str, seq: int = 0, user: str = "Alice", domain: str = "CORP", ts: datetime = BASE_TS
) -> dict[str, Any]:
    """JSON-ready fields of a valid event of ``type_name`` (every type-specific required field set)."""
    fields: dict[str, Any] = {
        "type": type_name,
        "agent_id": f"agent-{domain.lower()}-{user.lower()}",
        "seq": seq,
        "ts": (ts + timedelta(seconds=seq)).isoformat(),
        "input": HID_INPUT_CLASS.get(type_name, "none"),
        "user": user,
        "domain": domain,
        "host": "ws-01",
        "tz": "Europe/Berlin",
        "utc_offset_min": 60,
        "agent_version": "1.0.0",
    }
    cls = EVENT_TYPES[type_name]
    if cls.category in ("ui", "hid"):
        fields.update(
            {
                "app": "notepad.exe",
                "title": "notes.txt - Editor",
                "pid": 4242,
                "hierarchy": [{"name": "Editor", "control_type": "Window"}],
            }
        )
    if type_name == "Heartbeat":
        fields.update({"last_input_ts": (ts + timedelta(seconds=seq - 5)).isoformat(), "idle_ms": 5000})
    if type_name == "StateChange":
        fields["state"] = "working"
    return fields


def sample_event(type_name: str, seq: int = 0, user: str = "Alice", domain: str = "CORP") -> Envelope:
    """A valid event of ``type_name``."""
    return msgspec.convert(sample_fields(type_name, seq, user, domain), EVENT_TYPES[type_name], strict=False)


def every_event_type(user: str = "Alice", domain: str = "CORP") -> list[Envelope]:
    """One event of each of the contract's types, with distinct sequence numbers."""
    return [sample_event(name, seq, user, domain) for seq, name in enumerate(EVENT_TYPES)]
