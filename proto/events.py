"""Raw events: the wire contract of ``shared/spec/events.md`` as msgspec Structs.

One tagged union (:data:`RawEvent`), tag field ``type``, tag value the class name. Every event carries the
envelope of :class:`Envelope`; UI and HID events also carry the window context of :class:`WindowContext`.

Times are timezone-aware and normalised to UTC with millisecond precision when an event is built or decoded,
so every consumer sees the same instant and two copies of one event compare equal.

Evolution rules (see ``proto/CHANGELOG.md``): fields are only ever added, always with a default; a new event
type is a new tagged class, which old consumers reject as an unknown type (dead letter), never a crash.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal

import msgspec
from msgspec import Meta, Struct, field
from msgspec.structs import force_setattr

InputClass = Literal["hardware", "injected", "none"]
AwareDatetime = Annotated[datetime, Meta(tz=True)]
#: A character an identity field must not hold: NUL and the other control characters (C0, DEL, C1).
_CONTROL_CHARS: Final = r"\x00-\x1f\x7f-\x9f"
_CONTROL: Final = re.compile(f"[{_CONTROL_CHARS}]")
#: An identity field (agent id, user, domain, host): no NUL or other control character (C0, DEL, C1), which
#: PostgreSQL refuses in text and which would split one identity into look-alikes, and at most 1024
#: characters (identities end up in every session record and in the stream's state). Checked on decode.
#: The published schema states the rule as a ``pattern``; the decoders check it in ``__post_init__``
#: (:func:`check_identities`) instead of through msgspec's per-field regular expression, which cost about
#: 3.5 us per event, more than the rest of the decode (``docs/stream-performance.md``).
IdentityStr = Annotated[
    str,
    Meta(
        max_length=1024,
        description="at most 1024 characters, no NUL or other control characters",
        extra_json_schema={"pattern": f"^[^{_CONTROL_CHARS}]*$"},
    ),
]
#: The identity fields of every event, in wire order.
IDENTITY_FIELDS: Final = ("agent_id", "user", "domain", "host", "host_domain")
#: A short label kept in state and sessions (time zone name, agent version).
LabelStr = Annotated[str, Meta(max_length=256)]

#: The input classes an event may carry.
INPUT_CLASSES: Final = ("hardware", "injected", "none")


def check_identities(event: Envelope) -> None:
    """Raise ``ValueError`` naming the first identity field of ``event`` that holds a control character.

    One test of the fields joined: printable ASCII (the common case) needs no regular expression."""
    joined = event.agent_id + event.user + event.domain + event.host + event.host_domain
    if (joined.isascii() and joined.isprintable()) or _CONTROL.search(joined) is None:
        return
    for name in IDENTITY_FIELDS:
        if _CONTROL.search(getattr(event, name)) is not None:
            raise ValueError(
                f"`{name}` must not contain NUL or other control characters (C0, DEL, C1) - at `$.{name}`"
            )


def to_utc_ms(ts: datetime) -> datetime:
    """Return ``ts`` in UTC truncated to whole milliseconds; naive datetimes are refused."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    us = ts.microsecond
    if us % 1000:
        ts = ts.replace(microsecond=us - us % 1000)
    return ts


class UiNode(Struct, kw_only=True, omit_defaults=True, gc=False):
    """One element of a window hierarchy: its name and UI Automation / X11 control type."""

    name: str = ""
    control_type: str = ""


class FieldValue(Struct, kw_only=True, omit_defaults=True, gc=False):
    """An editable field seen in extended mode. A password field has ``password=True`` and never a value."""

    name: str = ""
    control_type: str = ""
    value: str | None = None
    edited: bool = False
    password: bool = False


class Envelope(Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    """Fields every raw event carries. ``(agent_id, seq)`` identifies one event."""

    category: ClassVar[str] = ""

    agent_id: IdentityStr
    seq: Annotated[int, Meta(ge=0)]
    ts: AwareDatetime
    input: InputClass
    user: IdentityStr
    domain: IdentityStr
    host: IdentityStr
    host_domain: IdentityStr = ""
    tz: LabelStr = "UTC"
    utc_offset_min: int = 0
    agent_version: LabelStr = ""

    def __post_init__(self) -> None:
        ts = self.ts
        if ts.tzinfo is not UTC or ts.microsecond % 1000:  # not already UTC to the millisecond (rare)
            force_setattr(self, "ts", to_utc_ms(ts))
        check_identities(self)

    @property
    def type(self) -> str:
        """The event type name (the tag on the wire)."""
        return type(self).__name__


class WindowContext(Envelope, kw_only=True, omit_defaults=True, gc=False):
    """Envelope plus the context of the window the event happened in."""

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


# ---- UI events -------------------------------------------------------------------------------------------


class UiEvent(WindowContext, kw_only=True, omit_defaults=True, gc=False):
    category: ClassVar[str] = "ui"


class WindowOpen(UiEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A new top-level window appeared."""


class DocumentOpen(UiEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A document was opened in an application window."""


class DocumentSave(UiEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A document was saved."""


class SheetOpen(UiEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A spreadsheet sheet became active."""


class WindowSwitch(UiEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The foreground window changed."""


class WindowUpdate(UiEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The foreground window's title, tab, URL or sheet changed."""


# ---- HID events ------------------------------------------------------------------------------------------


class HidEvent(WindowContext, kw_only=True, omit_defaults=True, gc=False):
    category: ClassVar[str] = "hid"


class HardwareMouseClick(HidEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A person clicked (throttled, see hid-throttle.md)."""


class InjectedMouseClick(HidEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """Software clicked (throttled)."""


class HardwareMouseScroll(HidEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A person scrolled (throttled)."""


class InjectedMouseScroll(HidEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """Software scrolled (throttled)."""


class HardwareKeyboardEvent(HidEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A person pressed a key (throttled)."""


class InjectedKeyboardEvent(HidEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """Software pressed a key (throttled)."""


# ---- Presence events -------------------------------------------------------------------------------------


class PresenceEvent(Envelope, kw_only=True, omit_defaults=True, gc=False):
    category: ClassVar[str] = "presence"


class AgentStart(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The agent started in a user session. ``session_type`` is the kind of desktop session it watches
    (``x11``, ``wayland`` (only XWayland windows are seen), ``windows``, ...; "" when unknown)."""

    session_type: str = ""


class AgentStop(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The agent stopped (a break; ends presence)."""


class Logon(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The user logged on."""


class Logoff(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The user logged off (a break; ends presence)."""


class Lock(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The session was locked (a break; locked time is inactivity)."""


class Unlock(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The session was unlocked."""


class Suspend(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The machine went to sleep (a break; ends presence)."""


class Resume(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """The machine woke up."""


class Heartbeat(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """Sent every 60 s by default. ``last_input_ts`` is the latest hardware input seen since the agent
    started (``None`` before the first); ``idle_ms`` the OS idle time. ``spool_*`` report the agent's
    local queue so that the fleet's health is visible without scraping desktops."""

    last_input_ts: AwareDatetime | None
    idle_ms: Annotated[int, Meta(ge=0)] = 0
    spool_events: int = 0
    spool_bytes: int = 0
    spool_dropped: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        lit = self.last_input_ts
        if lit is not None and (lit.tzinfo is not UTC or lit.microsecond % 1000):
            force_setattr(self, "last_input_ts", to_utc_ms(lit))


class StateChange(PresenceEvent, tag=True, kw_only=True, omit_defaults=True, gc=False):
    """A legacy client's ``working``/``stopped`` report, produced by the HTTP gateway."""

    state: Literal["working", "stopped"]


UiEventT = WindowOpen | DocumentOpen | DocumentSave | SheetOpen | WindowSwitch | WindowUpdate
HidEventT = (
    HardwareMouseClick
    | InjectedMouseClick
    | HardwareMouseScroll
    | InjectedMouseScroll
    | HardwareKeyboardEvent
    | InjectedKeyboardEvent
)
PresenceEventT = (
    AgentStart | AgentStop | Logon | Logoff | Lock | Unlock | Suspend | Resume | Heartbeat | StateChange
)

#: The tagged union of every raw event.
RawEvent = UiEventT | HidEventT | PresenceEventT

UI_TYPES: Final[tuple[type[UiEvent], ...]] = (
    WindowOpen,
    DocumentOpen,
    DocumentSave,
    SheetOpen,
    WindowSwitch,
    WindowUpdate,
)
HID_TYPES: Final[tuple[type[HidEvent], ...]] = (
    HardwareMouseClick,
    InjectedMouseClick,
    HardwareMouseScroll,
    InjectedMouseScroll,
    HardwareKeyboardEvent,
    InjectedKeyboardEvent,
)
PRESENCE_TYPES: Final[tuple[type[PresenceEvent], ...]] = (
    AgentStart,
    AgentStop,
    Logon,
    Logoff,
    Lock,
    Unlock,
    Suspend,
    Resume,
    Heartbeat,
    StateChange,
)
#: Every event class by its type name.
EVENT_TYPES: Final[dict[str, type[Envelope]]] = {
    cls.__name__: cls for cls in (*UI_TYPES, *HID_TYPES, *PRESENCE_TYPES)
}
#: The six HID type names and the input class each one stands for.
HID_INPUT_CLASS: Final[dict[str, InputClass]] = {
    cls.__name__: ("hardware" if cls.__name__.startswith("Hardware") else "injected") for cls in HID_TYPES
}
#: Break events (sessions.md rule 2) and the ones that also end presence (rule 4).
BREAK_TYPES: Final = frozenset({"Lock", "Logoff", "Suspend", "AgentStop"})
PRESENCE_ENDING_TYPES: Final = frozenset({"Logoff", "Suspend", "AgentStop"})


def replace(event: Envelope, **changes: object) -> Envelope:
    """A copy of ``event`` with ``changes`` applied (times normalised again)."""
    return msgspec.structs.replace(event, **changes)
