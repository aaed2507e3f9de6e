"""Codecs, built once: msgpack for raw topics, JSON for the session topic and for JSON Lines.

Every decode failure is a :class:`EventDecodeError` with an ``error_class`` from
:data:`proto.deadletter.ERROR_CLASSES` and a message that names what is wrong (never a field's value), so a
consumer can dead-letter the record and go on.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Iterable, Iterator
from typing import Any, Final, overload

import msgspec

from proto.events import EVENT_TYPES, Envelope, RawEvent
from proto.sessions import Session, SessionMessage, SessionRetraction


class EventDecodeError(ValueError):
    """A record that cannot be turned into a valid event or session message."""

    def __init__(self, message: str, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


_msgpack_encoder: Final = msgspec.msgpack.Encoder()
_msgpack_decoder: Final = msgspec.msgpack.Decoder(RawEvent)
_json_encoder: Final = msgspec.json.Encoder()
_json_event_decoder: Final = msgspec.json.Decoder(RawEvent)
_TYPE_ERROR = re.compile(r"Invalid value '([^']*)' - at `\$\.type`")


class _SessionWire(msgspec.Struct, kw_only=True, gc=False):
    """Just enough of a session-topic value to pick its decoder."""

    session_id: str
    retracted: bool = False


_session_wire_decoder: Final = msgspec.json.Decoder(_SessionWire)
_session_decoder: Final = msgspec.json.Decoder(Session)
_retraction_decoder: Final = msgspec.json.Decoder(SessionRetraction)
#: What a decoder raises: ``msgspec.DecodeError`` (its subclass ``ValidationError`` included) or the
#: ``ValueError`` of a Struct's ``__post_init__`` check.
_DECODE_ERRORS: Final = (msgspec.DecodeError, ValueError)


def _classify(exc: msgspec.DecodeError | ValueError, what: str) -> EventDecodeError:
    """The :class:`EventDecodeError` of a failed decode: ``undecodable`` (not msgpack / JSON at all),
    ``unknown_type`` (a ``type`` tag this consumer does not know) or ``invalid`` (decodes, but breaks the
    schema)."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):  # tested first: it is a DecodeError too
        if m := _TYPE_ERROR.search(text):
            return EventDecodeError(
                f"unknown event type {m.group(1)!r}: this consumer knows {len(EVENT_TYPES)} types; "
                "upgrade it to read newer producers' events",
                "unknown_type",
            )
    elif isinstance(exc, msgspec.DecodeError):
        return EventDecodeError(f"undecodable {what}: {text}", "undecodable")
    return EventDecodeError(f"invalid {what}: {text}", "invalid")


# ---- raw events (msgpack) -------------------------------------------------------------------------------


def encode_event(event: Envelope) -> bytes:
    """The msgpack bytes of a raw event, as agents publish them."""
    return _msgpack_encoder.encode(event)


def decode_event(data: bytes) -> Envelope:
    """Decode one msgpack raw event; raises :class:`EventDecodeError`."""
    try:
        return _msgpack_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "raw event") from None


def decode_events(batch: Iterable[bytes]) -> Iterator[Envelope | EventDecodeError]:
    """Decode a batch with the shared decoder; a bad record yields its error in place, so the good ones
    around it are kept in order."""
    dec = _msgpack_decoder.decode
    for data in batch:
        try:
            yield dec(data)
        except _DECODE_ERRORS as exc:
            yield _classify(exc, "raw event")


# ---- JSON Lines ------------------------------------------------------------------------------------------


def event_to_json(event: Envelope) -> bytes:
    """One event as a JSON object (RFC 3339 times), without a newline."""
    return _json_encoder.encode(event)


def event_from_json(line: bytes | str) -> Envelope:
    """One JSON Lines event; only the fields ``events.md`` names are required."""
    try:
        return _json_event_decoder.decode(line)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "JSON event") from None


_UTF8_BOM: Final = codecs.BOM_UTF8
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@overload
def jsonl_lines(lines: Iterable[bytes]) -> Iterator[bytes]: ...
@overload
def jsonl_lines(lines: Iterable[str]) -> Iterator[str]: ...
@overload
def jsonl_lines(lines: Iterable[bytes | str]) -> Iterator[bytes | str]: ...
def jsonl_lines(lines: Iterable[bytes | str]) -> Iterator[bytes | str]:
    """The lines of one JSON Lines file as written by Windows tools too, one for one (line numbers stay):
    a leading UTF-8 byte order mark (Notepad, PowerShell's ``Out-File -Encoding utf8``) is dropped; a file
    that starts with a UTF-16 byte order mark (Windows PowerShell 5.1's ``>`` and ``Out-File``) is
    transcoded to UTF-8, with U+FFFD for any invalid code unit. Any other line is passed on as it is."""
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return iter(())
    if isinstance(first, str):
        return itertools.chain((first.removeprefix("\ufeff"),), it)
    if first.startswith(_UTF16_BOMS):
        return _from_utf16(itertools.chain((first,), it))  # type: ignore[arg-type]
    return itertools.chain((first.removeprefix(_UTF8_BOM),), it)


def _from_utf16(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """UTF-8 lines of a UTF-16 stream cut anywhere (a binary file's lines split at the byte 0x0A)."""
    decoder = codecs.getincrementaldecoder("utf-16")(errors="replace")  # the BOM picks the byte order
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *done, pending = pending.split("\n")
        for line in done:
            yield line.encode("utf-8", "surrogatepass") + b"\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.encode("utf-8", "surrogatepass")


def read_jsonl(lines: Iterable[bytes | str]) -> Iterator[tuple[int, Envelope | EventDecodeError]]:
    """``(line_number, event or error)`` for every non-blank line of one file, numbered from 1 (a byte
    order mark is dealt with as :func:`jsonl_lines` says)."""
    for n, line in enumerate(jsonl_lines(lines), 1):
        if not line.strip():
            continue
        try:
            yield n, _json_event_decoder.decode(line)
        except _DECODE_ERRORS as exc:
            yield n, _classify(exc, "JSON event")


# ---- sessions (JSON) -------------------------------------------------------------------------------------


def encode_session(message: SessionMessage) -> bytes:
    """JSON bytes of a session record or a retraction, as published on the session topic."""
    return _json_encoder.encode(message)


def decode_session_message(data: bytes) -> SessionMessage:
    """Decode a session-topic value into a :class:`Session` or a :class:`SessionRetraction`."""
    try:
        wire = _session_wire_decoder.decode(data)
        if wire.retracted:
            return _retraction_decoder.decode(data)
        return _session_decoder.decode(data)
    except _DECODE_ERRORS as exc:
        raise _classify(exc, "session record") from None


def to_builtins(obj: Any) -> Any:
    """Plain Python values (dicts, lists, RFC 3339 strings) for logging-free inspection and jsonb."""
    return msgspec.to_builtins(obj)
