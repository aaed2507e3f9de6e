"""The HID throttling rule of ``shared/spec/hid-throttle.md``: pure, clock-free, no I/O.

Every click, scroll and key press goes through :meth:`HidThrottle.on_input`; only the inputs that keep gaps
in activity visible at ``min_interval`` resolution come out as events to write. Hardware and injected input
are throttled independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from proto.events import HID_INPUT_CLASS, InputClass

#: The six HID type names (``proto.events.HID_TYPES``) and their input class.
HID_TYPE_NAMES: Final = tuple(HID_INPUT_CLASS)

#: (input class, kind) -> HID type name. ``kind`` as in :class:`agent.observations.InputObservation`.
HID_TYPE_FOR: Final[dict[tuple[str, str], str]] = {
    ("hardware", "click"): "HardwareMouseClick",
    ("injected", "click"): "InjectedMouseClick",
    ("hardware", "scroll"): "HardwareMouseScroll",
    ("injected", "scroll"): "InjectedMouseScroll",
    ("hardware", "key"): "HardwareKeyboardEvent",
    ("injected", "key"): "InjectedKeyboardEvent",
}


@dataclass(frozen=True, slots=True)
class HidWrite:
    """One HID event to write: its time and type (the type names the input class)."""

    ts: datetime
    type: str

    @property
    def input(self) -> InputClass:
        """``hardware`` or ``injected``."""
        return HID_INPUT_CLASS[self.type]


@dataclass(slots=True)
class _ClassState:
    last_input: HidWrite | None = None
    last_input_written: bool = False
    last_written: datetime | None = None


class HidThrottle:
    """Decides which HID inputs are written, exactly as ``hid-throttle.md`` says.

    Guarantees, per input class (hardware, injected; independent of each other), with ``M = min_interval``:

    - an input at ``t`` after a pause ``>= M`` since the previous input writes that previous input (unless it
      was already written; it keeps its own type and time) and then ``t``;
    - otherwise ``t`` is written when nothing of this class was written yet or the last write of this class
      (an HID event, or a UI event told through :meth:`on_written`) is ``>= M`` before ``t``;
    - otherwise nothing is written; only the time is remembered.

    Returned events are in time order, and per input class also across calls: an input time earlier than
    the latest time seen (the wall clock stepped backwards) is taken as that latest time, so a backwards
    clock step never makes a written event earlier than one written before it; time stands still until the
    inputs' clock passes the latest time again. The object keeps no clock: times come only from its
    arguments.
    """

    __slots__ = ("_latest", "_min", "_state")

    def __init__(self, min_interval: timedelta = timedelta(seconds=60)) -> None:
        if min_interval <= timedelta(0):
            raise ValueError("min_interval must be positive")
        self._min = min_interval
        self._state: dict[str, _ClassState] = {"hardware": _ClassState(), "injected": _ClassState()}
        self._latest: datetime | None = None

    def _monotonic(self, ts: datetime) -> datetime:
        """``ts``, or the latest time seen when ``ts`` is earlier (a backwards clock step)."""
        if self._latest is not None and ts < self._latest:
            return self._latest
        self._latest = ts
        return ts

    @property
    def min_interval(self) -> timedelta:
        return self._min

    def on_input(self, ts: datetime, hid_type: str) -> list[HidWrite]:
        """Record an input of type ``hid_type`` at ``ts``; return the HID events to write now."""
        try:
            cls = HID_INPUT_CLASS[hid_type]
        except KeyError:
            raise ValueError(f"unknown HID type {hid_type!r}; expected one of {HID_TYPE_NAMES}") from None
        st = self._state[cls]
        ts = self._monotonic(ts)
        now = HidWrite(ts, hid_type)
        out: list[HidWrite] = []
        last = st.last_input
        if last is not None and ts - last.ts >= self._min:
            if not st.last_input_written:
                out.append(last)
            out.append(now)
        elif st.last_written is None or ts - st.last_written >= self._min:
            out.append(now)
        for w in out:
            if st.last_written is None or w.ts > st.last_written:
                st.last_written = w.ts
        st.last_input = now
        st.last_input_written = bool(out)
        return out

    def on_written(self, ts: datetime, input: str) -> None:
        """A UI event with ``input`` (``hardware``/``injected``) was written at ``ts``; ``none`` is ignored.

        If that event stands for the last input of its class (same time), that input counts as written."""
        if input not in self._state:
            return
        st = self._state[input]
        ts = self._monotonic(ts)
        if st.last_written is None or ts > st.last_written:
            st.last_written = ts
        if st.last_input is not None and st.last_input.ts == ts:
            st.last_input_written = True
