"""Valid sample events of every type, for tests, the replay tool's examples and demos (no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from proto.events import EVENT_TYPES, HID_INPUT_CLASS, Envelope

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
