"""desktrace's wire contract: raw events, session records, topics, keys and codecs. No I/O here.

The contract is ``shared/spec/events.md`` and ``shared/spec/sessions.md``; its history and evolution rules
are in ``proto/CHANGELOG.md``.
"""

from proto.codec import (
    EventDecodeError,
    decode_event,
    decode_events,
    decode_session_message,
    encode_event,
    encode_session,
    event_from_json,
    event_to_json,
    read_jsonl,
)
from proto.events import (
    BREAK_TYPES,
    EVENT_TYPES,
    HID_INPUT_CLASS,
    HID_TYPES,
    PRESENCE_ENDING_TYPES,
    PRESENCE_TYPES,
    UI_TYPES,
    Envelope,
    RawEvent,
    to_utc_ms,
)
from proto.keys import event_user_key, user_key
from proto.sessions import Session, SessionRetraction, make_session, session_id
from proto.topics import Topics

SCHEMA_VERSION = "1.1.0"

__all__ = [
    "BREAK_TYPES",
    "EVENT_TYPES",
    "HID_INPUT_CLASS",
    "HID_TYPES",
    "PRESENCE_ENDING_TYPES",
    "PRESENCE_TYPES",
    "SCHEMA_VERSION",
    "UI_TYPES",
    "Envelope",
    "EventDecodeError",
    "RawEvent",
    "Session",
    "SessionRetraction",
    "Topics",
    "decode_event",
    "decode_events",
    "decode_session_message",
    "encode_event",
    "encode_session",
    "event_from_json",
    "event_to_json",
    "event_user_key",
    "make_session",
    "read_jsonl",
    "session_id",
    "to_utc_ms",
    "user_key",
]
