"""What the worker stores per user in its changelog-backed table: the core's state plus the edge's own
bookkeeping (where the user's events arrive, when they were last heard, what was published, fleet info).

The table's key is the user key (UTF-8 bytes) and its value the msgpack bytes of :class:`UserRecord`,
zlib-compressed (level 1: a day of heartbeats compresses about 3.5x, for about a third of the encoding
time), so the changelog topic holds everything a restarted or rebalanced worker needs to continue exactly
and the in-memory table of 100,000 users fits in a few hundred MB. Uncompressed values (written by earlier
versions) are still read.
"""

from __future__ import annotations

import zlib
from typing import Final

import msgspec

from stream.fleet import AgentSeen


class UserRecord(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """One user's state on the stream worker.

    - ``core``: ``stream.core.encode_state`` bytes, the sessionizer's own state;
    - ``partition``: the raw-topic partition the user's events arrive on, which is also the changelog
      partition the record is written to (so the worker owning that partition recovers it);
    - ``last_seen``: wall clock (Unix seconds) when this worker last consumed an event of the user;
    - ``closed``: the silence close ran after the latest event (so it runs once per silence);
    - ``open_sessions``: the core's open session count after the latest update (for the gauge);
    - ``published``: ids of sessions published and not retracted, with their start (Unix ms), to count
      corrections; entries older than the retention horizon are pruned;
    - ``agents``: fleet-health bookkeeping per agent id (``stream.fleet``).
    """

    core: bytes
    partition: int
    last_seen: float
    closed: bool = False
    open_sessions: int = 0
    published: dict[str, int] = msgspec.field(default_factory=dict)
    agents: dict[str, AgentSeen] = msgspec.field(default_factory=dict)


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(UserRecord)


#: First byte of a zlib stream (deflate, 32 KiB window). Never the first byte of a UserRecord's msgpack,
#: which is a map (0x80-0x8f, 0xde, 0xdf).
_ZLIB_HEAD: Final = 0x78


def encode_record(record: UserRecord) -> bytes:
    """The table value of ``record`` (compressed msgpack)."""
    return zlib.compress(_encoder.encode(record), 1)


def decode_record(data: bytes) -> UserRecord:
    """The :class:`UserRecord` of a table value, compressed or not; raises ``msgspec.DecodeError`` or
    ``ValueError`` on foreign bytes."""
    if data[:1] and data[0] == _ZLIB_HEAD:
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise ValueError(f"not a compressed state record: {exc}") from None
    return _decoder.decode(data)
