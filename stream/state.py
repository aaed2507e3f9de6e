"""What the worker stores per user in its changelog-backed table: the core's state plus the edge's own
bookkeeping (where the user's events arrive, when they were last heard, fleet info).

The table's key is the user key (UTF-8 bytes) and its value :func:`encode_record`'s bytes: the msgpack of
:class:`UserRecord` without its core, zlib-framed (stored blocks: ``stream.core.state.STORED``), beside
the core's own bytes, which ``stream.core.encode_state`` compresses by chunk and mostly reuses from the
previous write. So the changelog topic holds everything a restarted or rebalanced worker needs to continue
exactly, the in-memory table of 100,000 users fits in a few hundred MB, and writing a changed user costs
its recent part rather than its whole retention horizon. Values written by earlier versions (one
compressed or plain msgpack record) are still read.
"""

from __future__ import annotations

import zlib
from typing import Final

import msgspec

from stream.core.state import WRITE_VERSIONS, zlib_framed
from stream.fleet import AgentSeen


class UserRecord(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """One user's state on the stream worker.

    - ``core``: ``stream.core.encode_state`` bytes, the sessionizer's own state;
    - ``partition``: the raw-topic partition the user's events arrive on, which is also the changelog
      partition the record is written to (so the worker owning that partition recovers it);
    - ``last_seen``: wall clock (Unix seconds) when this worker last consumed an event of the user;
    - ``closed``: the silence close ran after the latest event (so it runs once per silence);
    - ``open_sessions``: the core's open session count after the latest update (for the gauge);
    - ``agents``: fleet-health bookkeeping per agent id (``stream.fleet``);
    - ``unsent``: the values of the user's session messages (upserts and retractions, in the order sent)
      whose delivery this record does not know of. The worker writes a user's state before its output, so
      that a crash in between leaves a state that knows what it may not have published: a later owner
      re-sends these values before any newer output of the user. Empty once the output is acknowledged
      (``stream.processor.Processor.confirm``).
    """

    core: bytes
    partition: int
    last_seen: float
    closed: bool = False
    open_sessions: int = 0
    agents: dict[str, AgentSeen] = msgspec.field(default_factory=dict)
    unsent: list[bytes] = msgspec.field(default_factory=list)


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(UserRecord)


#: First byte of a zlib stream (deflate, 32 KiB window). Never the first byte of a UserRecord's msgpack,
#: which is a map (0x80-0x8f, 0xde, 0xdf).
_ZLIB_HEAD: Final = 0x78


class _Split(msgspec.Struct, array_like=True):
    """A table value since version 2: ``[2, zlib(msgpack(record without core)), core]``; versions 3 and 4
    are the same with the record's msgpack not compressed (about 120 bytes that zlib hardly shrinks); the
    version is the core's (``stream.core.encode_state``). The core's bytes are compressed by chunk already:
    compressing them again would cost more than the rest of the encoding."""

    v: int
    rest: bytes
    core: bytes


_split_decoder: Final = msgspec.msgpack.Decoder(_Split)
#: First byte of a :class:`_Split` value (a 3-element msgpack array).
_SPLIT_HEAD: Final = 0x93


def encode_record(record: UserRecord, version: int = 2) -> bytes:
    """The table value of ``record``: :class:`_Split`, version 2, 3 or 4 (``stream.core.WRITE_VERSIONS``;
    the worker writes both parts in the version of its ``state_format`` setting)."""
    if version not in WRITE_VERSIONS:
        raise ValueError(f"state record version {version} is not one of {WRITE_VERSIONS}")
    core, record.core = record.core, b""
    try:
        rest = _encoder.encode(record)
    finally:
        record.core = core
    if version == 2:
        rest = zlib_framed(rest)
    return _encoder.encode(_Split(version, rest, core))


def decode_record(data: bytes) -> UserRecord:
    """The :class:`UserRecord` of a table value (split, compressed or plain, as every version wrote them);
    raises ``msgspec.DecodeError`` or ``ValueError`` on foreign bytes."""
    head = data[0] if data else -1
    try:
        if head == _SPLIT_HEAD:
            split = _split_decoder.decode(data)
            if split.v not in WRITE_VERSIONS:
                raise ValueError(f"state record version {split.v} is not one of {WRITE_VERSIONS}")
            record = _decoder.decode(zlib.decompress(split.rest) if split.v == 2 else split.rest)
            record.core = split.core
            return record
        if head == _ZLIB_HEAD:
            data = zlib.decompress(data)
    except zlib.error as exc:
        raise ValueError(f"not a compressed state record: {exc}") from None
    return _decoder.decode(data)
