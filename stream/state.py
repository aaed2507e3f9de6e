"""What the worker stores per user in its changelog-backed table: the core's state plus the edge's own
bookkeeping (where the user's events arrive, when they were last heard, what was published, fleet info).

The table's key is the user key (UTF-8 bytes) and its value the msgpack bytes of :class:`UserRecord`, so
the changelog topic holds everything a restarted or rebalanced worker needs to continue exactly.
"""

from __future__ import annotations

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


def encode_record(record: UserRecord) -> bytes:
    """The table value of ``record``."""
    return _encoder.encode(record)


def decode_record(data: bytes) -> UserRecord:
    """The :class:`UserRecord` of a table value; raises ``msgspec.DecodeError`` on foreign bytes."""
    return _decoder.decode(data)
