"""Topic names (``shared/spec/events.md``) and which raw topic each event type goes to."""

from __future__ import annotations

from typing import Final

import msgspec

from proto.events import Envelope

UI_TOPIC: Final = "desktrace.events.ui.v1"
HID_TOPIC: Final = "desktrace.events.hid.v1"
PRESENCE_TOPIC: Final = "desktrace.events.presence.v1"
SESSIONS_TOPIC: Final = "desktrace.sessions.v1"
DEADLETTER_TOPIC: Final = "desktrace.deadletter.v1"


class Topics(msgspec.Struct, frozen=True):
    """The topic names of one pipeline. ``prefix`` (setting ``topic_prefix``, empty by default) lets
    several isolated pipelines share one cluster, e.g. staging beside production, or one test beside
    another; production deployments leave it empty so the names are exactly the contract's."""

    prefix: str = ""

    @property
    def ui(self) -> str:
        return self.prefix + UI_TOPIC

    @property
    def hid(self) -> str:
        return self.prefix + HID_TOPIC

    @property
    def presence(self) -> str:
        return self.prefix + PRESENCE_TOPIC

    @property
    def sessions(self) -> str:
        return self.prefix + SESSIONS_TOPIC

    @property
    def deadletter(self) -> str:
        return self.prefix + DEADLETTER_TOPIC

    @property
    def raw(self) -> tuple[str, str, str]:
        """The three raw topics (same key, same partition count)."""
        return (self.ui, self.hid, self.presence)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.raw, self.sessions, self.deadletter)

    def for_event(self, event: Envelope) -> str:
        """The raw topic ``event`` is published on."""
        return self.for_category(type(event).category)

    def for_category(self, category: str) -> str:
        if category == "ui":
            return self.ui
        if category == "hid":
            return self.hid
        if category == "presence":
            return self.presence
        raise ValueError(f"unknown event category {category!r}")
