"""What platform sources observe, before the recorder turns it into events.

Sources only watch (ActivityWatch's watchers): they emit these plain records and know nothing of events,
throttling, privacy, spooling or Kafka. :mod:`agent.recorder` interprets them. All times are tz-aware UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal, Protocol

from msgspec import Struct, field

from proto.events import FieldValue, InputClass, UiNode


class WindowSnapshot(Struct, kw_only=True):
    """The foreground window as a source sees it at ``ts``. ``window_id`` is the platform handle (hwnd,
    X11 window id) as text; ``document_event`` is set when the source saw a document open or save.
    ``input`` is the input class that caused the change, when the source knows it. ``new_window`` says
    something new opened (a window, a tab, a URL: a ``WindowOpen`` even for a window id seen before);
    ``known`` says the window existed before the agent started (never a ``WindowOpen`` for it)."""

    ts: datetime
    window_id: str
    app: str = ""
    app_version: str = ""
    exe_path: str = ""
    pid: int = 0
    title: str = ""
    tab: str = ""
    url: str = ""
    file_path: str = ""
    sheet: str = ""
    hierarchy: list[UiNode] = field(default_factory=list)
    fields: list[FieldValue] | None = None
    document_event: Literal["open", "save"] | None = None
    new_window: bool = False
    known: bool = False
    input: InputClass = "none"


class InputObservation(Struct, kw_only=True):
    """One mouse click, scroll or key press; ``injected`` says software generated it."""

    ts: datetime
    kind: Literal["click", "scroll", "key"]
    injected: bool


PresenceKind = Literal["Logon", "Logoff", "Lock", "Unlock", "Suspend", "Resume"]


class PresenceObservation(Struct, kw_only=True):
    """A session or power notification."""

    ts: datetime
    kind: PresenceKind
    input: InputClass = "none"


Observation = WindowSnapshot | InputObservation | PresenceObservation
ObservationSink = Callable[[Observation], None]


class Source(Protocol):
    """One platform's watcher. ``run`` delivers observations to ``emit`` until ``stop`` is called;
    ``idle_ms`` is the operating system's idle time (time since the last input of any kind)."""

    async def run(self, emit: ObservationSink) -> None: ...

    def stop(self) -> None: ...

    def idle_ms(self) -> int: ...
