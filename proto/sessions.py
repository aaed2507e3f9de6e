"""Session records published on ``desktrace.sessions.v1`` (``shared/spec/sessions.md``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, MutableMapping
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from msgspec import Meta, Struct, field
from msgspec.structs import force_setattr

from proto.clock import epoch_ms
from proto.events import AwareDatetime, to_utc_ms

SessionKind = Literal["active", "inactive"]
InactiveReason = Literal["idle", "locked"]

#: Namespace of the deterministic session ids (uuid5).
SESSION_ID_NAMESPACE = uuid.UUID("5b0d7a52-3c57-4f0e-9a8f-2f7f1d0c9e11")


def session_id(user_key: str, kind: str, start: datetime) -> str:
    """The id of a session: derived only from ``user_key``, ``kind`` and ``start`` (ms, UTC)."""
    millis = epoch_ms(to_utc_ms(start))
    return str(uuid.uuid5(SESSION_ID_NAMESPACE, f"{user_key}\x1f{kind}\x1f{millis}"))


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
