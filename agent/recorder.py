"""Observations in, raw events out: the agent's pure core (no clock, no I/O).

The recorder decides which UI events a window snapshot means, runs every input through the HID throttle,
turns session/power notifications into presence events and produces heartbeats. Every event gets the
identity envelope and the next ``seq``. Times come only from the observations and from the ``now`` values
passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from agent.identity import Identity
from agent.observations import InputObservation, Observation, PresenceObservation, WindowSnapshot
from agent.settings import AgentSettings
from agent.throttle import HID_TYPE_FOR, HidThrottle, HidWrite
from proto.events import (
    EVENT_TYPES,
    AgentStart,
    AgentStop,
    DocumentOpen,
    DocumentSave,
    Envelope,
    Heartbeat,
    InputClass,
    SheetOpen,
    UiEvent,
    WindowOpen,
    WindowSwitch,
    WindowUpdate,
    to_utc_ms,
)

#: Context fields a UI event carries and HID events inherit.
CONTEXT_FIELDS: Final = (
    "app",
    "app_version",
    "exe_path",
    "pid",
    "title",
    "tab",
    "url",
    "file_path",
    "sheet",
    "hierarchy",
    "fields",
)
#: Fields whose change in the foreground window is a WindowUpdate.
UPDATE_FIELDS: Final = ("title", "tab", "url", "file_path")
#: How many windows the recorder remembers (to tell a new window from a known one).
MAX_WINDOWS: Final = 2048


class SnapshotFilter(Protocol):
    """What the recorder needs of :class:`agent.privacy.PrivacyFilter`."""

    def apply(self, snapshot: WindowSnapshot) -> WindowSnapshot | None: ...


@dataclass(frozen=True, slots=True)
class SpoolState:
    """The spool figures a heartbeat reports; ``dropped`` = drops not reported in an earlier heartbeat."""

    events: int = 0
    bytes: int = 0
    dropped: int = 0


def as_utc(ts: datetime) -> datetime:
    """UTC with millisecond precision; a naive time (Windows, pynput) is taken as the machine's local time."""
    if ts.tzinfo is None:
        ts = ts.astimezone()  # naive = local wall time of this machine
    return to_utc_ms(ts)


@dataclass(slots=True)
class _Pending:
    """A click's HID event held for ``fold_window``: if the click switches windows it is written as that
    UI event instead."""

    write: HidWrite
    context: dict[str, Any]


class Recorder:
    """Turns observations into raw events.

    Guarantees:

    - UI events only for real changes: ``WindowOpen`` for a window not seen before (unless the source marks
      it ``known``: open before the agent started) or flagged ``new_window``,
      ``WindowSwitch`` when the foreground window changes, ``WindowUpdate`` when the foreground window's
      title, tab, URL or document changes, ``SheetOpen`` when its sheet changes, ``DocumentOpen`` /
      ``DocumentSave`` from the source's document events; nothing for a snapshot that changes nothing;
    - privacy first: every snapshot goes through ``privacy.apply`` before anything else; an excluded window
      yields no UI event, and HID events in it carry an empty window context;
    - a click (hardware or injected) that switches or opens a window within ``fold_window`` is written as
      that UI event with the click's input class, not as an HID event, and the throttle is told
      (hid-throttle.md example 2);
    - HID events pass through :class:`agent.throttle.HidThrottle` and carry the context of the latest UI
      event;
    - ``seq`` increases by one for every event returned, starting at ``next_seq``;
    - a backwards step of the wall clock never reorders the written events: a time earlier than the latest
      seen is stamped with the latest time instead (time stands still until the clock passes it again),
      and heartbeats keep their interval meanwhile. The one event older than one written before it is the
      one hid-throttle.md asks for: the previous input written after a pause, with its own time;
    - a ``Heartbeat`` at the latest ``heartbeat_interval`` after the previous one (checked on :meth:`tick`),
      with ``last_input_ts`` = the latest hardware input seen since start (throttled or not), ``None``
      before the first.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        next_seq: int = 0,
        hid_interval: timedelta = timedelta(seconds=60),
        heartbeat_interval: timedelta = timedelta(seconds=60),
        privacy: SnapshotFilter | None = None,
        extended_mode: bool = False,
        fold_window: timedelta = timedelta(seconds=1),
    ) -> None:
        self.identity = identity
        self.seq = next_seq
        self.throttle = HidThrottle(hid_interval)
        self.heartbeat_interval = heartbeat_interval
        self.privacy = privacy
        self.extended_mode = extended_mode
        self.fold_window = fold_window
        try:
            self._zone: ZoneInfo | None = ZoneInfo(identity.tz)
        except (ZoneInfoNotFoundError, ValueError):
            self._zone = None
        self._windows: OrderedDict[str, WindowSnapshot] = OrderedDict()
        self._foreground: str | None = None  # window id; "" = an excluded window
        self._context: dict[str, Any] = {}
        self._pending: _Pending | None = None
        self._last_input: tuple[datetime, InputClass, str] | None = None  # (ts, class, kind) of the latest
        self._awaiting_cause: tuple[datetime, InputClass] | None = (
            None  # UI event written for an input not seen yet
        )
        self._last_hw_input: datetime | None = None
        # per input class: the latest input's time and the window context it happened in
        self._input_context: dict[str, tuple[datetime, dict[str, Any]]] = {}
        self._next_heartbeat: datetime | None = None
        self._latest: datetime | None = None  # the latest event time: events never go back in time
        self.counts: dict[str, int] = {}

    # ---- lifecycle ------------------------------------------------------------------------------------

    def _mono(self, ts: datetime) -> datetime:
        """``ts`` in UTC, or the latest time seen when it is earlier (the wall clock stepped backwards):
        events never go back in time."""
        ts = as_utc(ts)
        if self._latest is not None and ts < self._latest:
            return self._latest
        self._latest = ts
        return ts

    def start(self, now: datetime, session_type: str = "") -> list[Envelope]:
        """``AgentStart`` (with the desktop ``session_type``, e.g. ``wayland``); heartbeats are due from
        ``now + heartbeat_interval``."""
        self._next_heartbeat = as_utc(now) + self.heartbeat_interval
        now = self._mono(now)
        return [self._event(AgentStart, now, "none", session_type=session_type)]

    def stop(self, now: datetime) -> list[Envelope]:
        """Flush a held click, then ``AgentStop``."""
        now = self._mono(now)
        out = self._flush_pending()
        out.append(self._event(AgentStop, now, "none"))
        return out

    def tick(self, now: datetime, idle_ms: int = 0, spool: SpoolState | None = None) -> list[Envelope]:
        """Call about once a second: releases a held click after ``fold_window`` and writes a heartbeat
        when one is due. After a backwards clock step a held click is released at once and the heartbeat
        schedule restarts from ``now`` (heartbeats keep coming; they are stamped with the latest time seen
        until the clock passes it again)."""
        now = as_utc(now)
        behind = self._latest is not None and now < self._latest
        out: list[Envelope] = []
        if self._pending is not None and (behind or now - self._pending.write.ts > self.fold_window):
            out += self._flush_pending()
        if self._next_heartbeat is None or self._next_heartbeat - now > self.heartbeat_interval:
            self._next_heartbeat = now + self.heartbeat_interval
        elif now >= self._next_heartbeat:
            out.append(self.heartbeat(now, idle_ms, spool))
        return out

    def heartbeat(self, now: datetime, idle_ms: int = 0, spool: SpoolState | None = None) -> Heartbeat:
        """A heartbeat now (and the next one a full interval later)."""
        self._next_heartbeat = as_utc(now) + self.heartbeat_interval
        now = self._mono(now)
        spool = spool or SpoolState()
        hb = self._event(
            Heartbeat,
            now,
            "none",
            last_input_ts=self._last_hw_input,
            idle_ms=max(0, int(idle_ms)),
            spool_events=spool.events,
            spool_bytes=spool.bytes,
            spool_dropped=spool.dropped,
        )
        assert isinstance(hb, Heartbeat)
        return hb

    def next_due(self) -> datetime | None:
        """When :meth:`tick` next has something to do (a held click to release, a heartbeat), if ever."""
        due = self._next_heartbeat
        if self._pending is not None:
            release = self._pending.write.ts + self.fold_window + timedelta(milliseconds=1)
            due = release if due is None or release < due else due
        return due

    # ---- observations ---------------------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[Envelope]:
        """The events one observation means, in the order to write them."""
        if isinstance(obs, InputObservation):
            return self._on_input(obs)
        if isinstance(obs, WindowSnapshot):
            return self._on_snapshot(obs)
        if isinstance(obs, PresenceObservation):
            out = self._flush_pending()
            out.append(self._event(EVENT_TYPES[obs.kind], self._mono(obs.ts), obs.input))
            if obs.kind in ("Lock", "Logoff", "Suspend"):
                self._awaiting_cause = None
            return out
        raise TypeError(f"not an observation: {type(obs).__name__}")

    def _on_input(self, obs: InputObservation) -> list[Envelope]:
        ts = self._mono(obs.ts)
        cls: InputClass = "injected" if obs.injected else "hardware"
        hid_type = HID_TYPE_FOR[(cls, obs.kind)]
        out = self._flush_pending()
        if cls == "hardware" and (self._last_hw_input is None or ts > self._last_hw_input):
            self._last_hw_input = ts
        awaiting = self._awaiting_cause
        if (
            obs.kind == "click"
            and awaiting is not None
            and awaiting[1] == cls
            and abs(ts - awaiting[0]) <= self.fold_window
        ):
            # the UI event this click caused was written already and went through the throttle
            self._awaiting_cause = None
            return out
        writes = self.throttle.on_input(ts, hid_type)
        if obs.kind == "click" and writes and writes[-1].ts == ts:
            # hold the click's own HID event: if it switches windows it is written as that UI event
            *earlier, last = writes
            writes = earlier
            self._pending = _Pending(last, self._context)  # _context is replaced, never changed in place
        self._last_input = (ts, cls, obs.kind)
        out += [self._hid(w, self._context_at(w)) for w in writes]
        self._input_context[cls] = (ts, self._context)  # the context this input happened in
        return out

    def _on_snapshot(self, raw: WindowSnapshot) -> list[Envelope]:
        snap = self.privacy.apply(raw) if self.privacy is not None else raw
        if snap is None:
            # an excluded window: no UI event; HID events carry an empty context
            out = self._flush_pending()
            self._foreground = ""
            self._context = {}
            return out
        ts = self._mono(snap.ts)
        if not self.extended_mode and snap.fields is not None:
            snap = msgspec.structs.replace(snap, fields=None)
        wid = snap.window_id
        prev = self._windows.get(wid)
        kinds: list[type[UiEvent]] = []
        if snap.new_window or (prev is None and not snap.known):
            kinds.append(WindowOpen)
        elif wid != self._foreground:
            kinds.append(WindowSwitch)
        elif prev is not None:
            if any(getattr(snap, f) != getattr(prev, f) for f in UPDATE_FIELDS):
                kinds.append(WindowUpdate)
            if snap.sheet and snap.sheet != prev.sheet:
                kinds.append(SheetOpen)
        if snap.document_event == "open":
            kinds.append(DocumentOpen)
        elif snap.document_event == "save":
            kinds.append(DocumentSave)
        self._windows[wid] = snap
        self._windows.move_to_end(wid)
        while len(self._windows) > MAX_WINDOWS:
            self._windows.popitem(last=False)
        self._foreground = wid
        if not kinds:
            return []
        # which input caused it: the source's word (it attributes a change to the input just before it),
        # or, when it does not say, a click just before a window switch/open
        input_cls: InputClass = snap.input
        switches = kinds[0] in (WindowOpen, WindowSwitch)
        last = self._last_input
        cause: tuple[datetime, InputClass, str] | None = None
        if (
            switches
            and last is not None
            and timedelta(0) <= ts - last[0] <= self.fold_window
            and (input_cls == last[1] or (input_cls == "none" and last[2] == "click"))
        ):
            cause = last
            input_cls = last[1]
        events: list[Envelope] = []
        pending, self._pending = self._pending, None
        if pending is not None and not (cause is not None and pending.write.ts == cause[0]):
            events.append(self._hid(pending.write, pending.context))
        # else: the held click is written as this UI event
        if switches and input_cls != "none" and cause is None:
            # the source says an input caused this switch and we have not seen it yet: run it through the
            # throttle now, so that what it writes for the gap before it comes first, in time order
            if input_cls == "hardware" and (self._last_hw_input is None or ts > self._last_hw_input):
                self._last_hw_input = ts
            for w in self.throttle.on_input(ts, HID_TYPE_FOR[(input_cls, "click")]):
                if w.ts != ts:
                    events.append(self._hid(w, self._context_at(w)))
            self._input_context[input_cls] = (ts, self._context)
            self._awaiting_cause = (ts, input_cls)
        self._context = {f: getattr(snap, f) for f in CONTEXT_FIELDS}
        for kind in kinds:
            events.append(self._event(kind, ts, input_cls, **self._context))
        if input_cls != "none":
            if cause is not None:
                self.throttle.on_written(cause[0], input_cls)  # that input is written (as this event)
            self.throttle.on_written(ts, input_cls)
        return events

    # ---- building events ------------------------------------------------------------------------------

    def _context_at(self, w: HidWrite) -> dict[str, Any]:
        """The window context an input written now happened in (an earlier input written late keeps the
        context of its own time)."""
        seen = self._input_context.get(w.input)
        return seen[1] if seen is not None and seen[0] == w.ts else self._context

    def _flush_pending(self) -> list[Envelope]:
        p, self._pending = self._pending, None
        return [self._hid(p.write, p.context)] if p is not None else []

    def _hid(self, w: HidWrite, context: dict[str, Any]) -> Envelope:
        return self._event(EVENT_TYPES[w.type], w.ts, w.input, **context)

    def _event(
        self, cls: type[Envelope] | Callable[..., Envelope], ts: datetime, input: InputClass, **kw: Any
    ) -> Envelope:
        ident = self.identity
        ev = cls(
            agent_id=ident.agent_id,
            seq=self.seq,
            ts=ts,
            input=input,
            user=ident.user,
            domain=ident.domain,
            host=ident.host,
            host_domain=ident.host_domain,
            tz=ident.tz,
            utc_offset_min=self._offset(ts),
            agent_version=ident.agent_version,
            **kw,
        )
        self.seq += 1
        name = type(ev).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return ev

    def _offset(self, ts: datetime) -> int:
        if self._zone is None:
            return 0
        off = ts.astimezone(self._zone).utcoffset()
        return int(off.total_seconds() // 60) if off is not None else 0


def make_recorder(
    settings: AgentSettings,
    identity: Identity,
    next_seq: int = 0,
    privacy: SnapshotFilter | None = None,
) -> Recorder:
    """A recorder configured from the agent settings (the runtime's and each simulated user's)."""
    return Recorder(
        identity,
        next_seq=next_seq,
        hid_interval=timedelta(seconds=settings.hid_interval_s),
        heartbeat_interval=timedelta(seconds=settings.heartbeat_s),
        privacy=privacy,
        extended_mode=settings.extended_mode,
    )


__all__ = ["Recorder", "SnapshotFilter", "SpoolState", "as_utc", "make_recorder"]
