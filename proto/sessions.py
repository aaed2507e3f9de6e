"""Session records published on ``desktrace.sessions.v1`` (``shared/spec/sessions.md``)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from msgspec import Meta, Struct, field
from msgspec.structs import force_setattr

from proto.clock import epoch_ms, from_epoch_ms
from proto.events import AwareDatetime, to_utc_ms

SessionKind = Literal["active", "inactive"]
InactiveReason = Literal["idle", "locked"]

#: Namespace of the deterministic session ids (uuid5).
SESSION_ID_NAMESPACE = uuid.UUID("5b0d7a52-3c57-4f0e-9a8f-2f7f1d0c9e11")


def session_id(user_key: str, kind: str, start: datetime) -> str:
    """The id of a session: derived only from ``user_key``, ``kind`` and ``start`` (ms, UTC)."""
    return session_id_ms(user_key, kind, epoch_ms(to_utc_ms(start)))


_NAMESPACE_BYTES = SESSION_ID_NAMESPACE.bytes


def session_id_ms(user_key: str, kind: str, start_ms: int) -> str:
    """:func:`session_id` of a start given in epoch milliseconds: ``uuid5(SESSION_ID_NAMESPACE, name)``
    (RFC 4122: SHA-1 of namespace and name, version 5, variant 10), built from the digest directly:
    ``uuid.uuid5`` and ``str(UUID)`` cost more than the stream's whole session record otherwise."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + f"{user_key}\x1f{kind}\x1f{start_ms}".encode(), usedforsecurity=False)
        .digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Session(Struct, kw_only=True, omit_defaults=False, gc=False):
    """One activity or inactivity session of one user.

    ``session_id`` always equals ``session_id(user_key, kind, start)``; ``reason`` is ``None`` for active
    sessions; ``hosts`` is sorted. ``tz`` is the user's IANA time zone as their latest event in the session
    reported it (added in 1.1; reports split days with it).
    """

    session_id: str
    user_key: str
    kind: SessionKind
    reason: InactiveReason | None
    start: AwareDatetime
    end: AwareDatetime
    duration_s: Annotated[float, Meta(ge=0)]
    hosts: list[str] = field(default_factory=list)
    tz: str = "UTC"

    def __post_init__(self) -> None:
        force_setattr(self, "start", to_utc_ms(self.start))
        force_setattr(self, "end", to_utc_ms(self.end))


def make_session(
    user_key: str,
    kind: SessionKind,
    start: datetime,
    end: datetime,
    hosts: list[str] | None = None,
    reason: InactiveReason | None = None,
    tz: str = "UTC",
) -> Session:
    """Build a :class:`Session` with its derived fields (id, duration) filled in."""
    start, end = to_utc_ms(start), to_utc_ms(end)
    return Session(
        session_id=session_id(user_key, kind, start),
        user_key=user_key,
        kind=kind,
        reason=None if kind == "active" else (reason or "idle"),
        start=start,
        end=end,
        duration_s=round((end - start).total_seconds(), 3),
        hosts=sorted(set(hosts or ())),
        tz=tz,
    )


def session_from_ms(
    user_key: str,
    kind: SessionKind,
    start_ms: int,
    end_ms: int,
    hosts: Iterable[str] = (),
    reason: InactiveReason | None = None,
    tz: str = "UTC",
) -> Session:
    """:func:`make_session` from epoch milliseconds (the stream's core counts in them): the same record,
    without the datetime round trips."""
    return Session(
        session_id=session_id_ms(user_key, kind, start_ms),
        user_key=user_key,
        kind=kind,
        reason=None if kind == "active" else (reason or "idle"),
        start=from_epoch_ms(start_ms),
        end=from_epoch_ms(end_ms),
        duration_s=round((end_ms - start_ms) / 1000, 3),
        hosts=sorted(set(hosts)),
        tz=tz,
    )


class SessionRetraction(Struct, kw_only=True, gc=False):
    """Says that a session published earlier no longer exists. ``user_key`` is added so that consumers
    and compaction can route it; only ``session_id`` and ``retracted`` are part of the contract."""

    session_id: str
    retracted: bool = True
    user_key: str | None = None


SessionMessage = Session | SessionRetraction


_Held = TypeVar("_Held")


def apply_session_messages(
    held: MutableMapping[str, _Held], messages: Iterable[SessionMessage], value: Callable[[Session], _Held]
) -> None:
    """Apply session-topic messages, in order, to ``held`` (``session_id`` -> ``value(record)``), as every
    consumer must (``shared/spec/sessions.md``): a record replaces whatever its id held and moves it last
    (``held`` keeps the order of each id's last write); a retraction removes its id (no-op when absent).

    The one fold of the project: the session sink, the offline tool and the tests' views all use it. A
    sessionizer :class:`Update` is applied as its retractions, then its upserts."""
    for msg in messages:
        held.pop(msg.session_id, None)
        if isinstance(msg, Session):
            held[msg.session_id] = value(msg)


def fold_sessions(
    messages: Iterable[SessionMessage], held: MutableMapping[str, Session] | None = None
) -> MutableMapping[str, Session]:
    """The sessions present after applying ``messages`` in order to ``held`` (a new dict by default)."""
    out: MutableMapping[str, Session] = {} if held is None else held
    apply_session_messages(out, messages, _same)
    return out


def _same(session: Session) -> Session:
    return session
