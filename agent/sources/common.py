"""Platform-free helpers every source shares: which input caused a window change, and which foreground
snapshots are worth emitting. Pure and clock-free: callers pass the times."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

from agent.observations import WindowSnapshot
from proto.events import InputClass

#: How long after a click or key press a window change is still attributed to it.
DEFAULT_ATTRIBUTION_WINDOW = timedelta(seconds=1)

_EPOCH = datetime(1970, 1, 1).astimezone()


class InputAttributor:
    """Says which input class caused a window change at ``ts``.

    Guarantee: :meth:`cause` returns the class (``hardware``/``injected``) of the latest input seen by
    :meth:`on_input` when that input is at most ``window`` before ``ts`` (and not after it), else ``none``.
    """

    def __init__(self, window: timedelta = DEFAULT_ATTRIBUTION_WINDOW) -> None:
        self._window = window
        self._last: tuple[datetime, InputClass] | None = None

    def on_input(self, ts: datetime, injected: bool) -> None:
        self._last = (ts, "injected" if injected else "hardware")

    def cause(self, ts: datetime) -> InputClass:
        if self._last is None:
            return "none"
        last_ts, cls = self._last
        if timedelta(0) <= ts - last_ts <= self._window:
            return cls
        return "none"


def _content(snapshot: WindowSnapshot) -> WindowSnapshot:
    """The part of a snapshot that says what the window shows (no time, cause or transition flags)."""
    return msgspec.structs.replace(
        snapshot, ts=_EPOCH, input="none", new_window=False, document_event=None
    )


class ForegroundTracker:
    """Turns a stream of foreground-window snapshots into the ones worth emitting.

    Guarantees:

    - a snapshot identical in content to the last emitted one (same window, title, app, URL, ...; time and
      cause ignored) is dropped, unless it carries a ``document_event``;
    - a snapshot of a window id that was neither present at start-up (:meth:`__init__`) nor emitted before
      gets ``new_window=True``, exactly once per window id;
    - :meth:`forget` lets a closed window's id be reused as a new window.
    """

    def __init__(self, initial_windows: Iterable[str] = ()) -> None:
        self._known: set[str] = set(initial_windows)
        self._last: WindowSnapshot | None = None

    @property
    def last(self) -> WindowSnapshot | None:
        """The last snapshot :meth:`observe` let through."""
        return self._last

    def forget(self, window_ids: Iterable[str]) -> None:
        """Windows that closed: their ids count as new if they are ever seen again."""
        for wid in window_ids:
            self._known.discard(wid)

    def observe(self, snapshot: WindowSnapshot) -> WindowSnapshot | None:
        """Return the snapshot to emit (possibly with ``new_window`` set), or None when nothing changed."""
        new = snapshot.window_id not in self._known
        if new:
            self._known.add(snapshot.window_id)
            snapshot = msgspec.structs.replace(snapshot, new_window=True)
        elif (
            snapshot.document_event is None
            and self._last is not None
            and _content(self._last) == _content(snapshot)
        ):
            return None
        self._last = snapshot
        return snapshot


class Debouncer:
    """Coalesces bursts of change notifications (a title set through two properties, a page loading)
    into one read.

    Guarantee: after :meth:`poke` at ``t``, :meth:`fire` returns True exactly once, at the first call
    with ``now >= t0 + delay`` where ``t0`` is the first poke since the last firing; pokes in between do
    not postpone it (a title that changes continuously is still read every ``delay``). Times are plain
    monotonic seconds supplied by the caller.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._due: float | None = None

    @property
    def pending(self) -> bool:
        return self._due is not None

    def poke(self, now: float) -> None:
        if self._due is None:
            self._due = now + self.delay

    def cancel(self) -> None:
        self._due = None

    def timeout(self, now: float, default: float) -> float:
        """How long the caller may sleep: ``default``, or less when a firing is due sooner."""
        if self._due is None:
            return default
        return max(0.0, min(default, self._due - now))

    def fire(self, now: float) -> bool:
        if self._due is not None and now >= self._due:
            self._due = None
            return True
        return False
