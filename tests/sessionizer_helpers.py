"""Event builders and a consumer model shared by the sessionizer tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from proto.events import EVENT_TYPES, Envelope, InputClass
from proto.sessions import Session, SessionRetraction, fold_sessions
from stream.core.state import UserState, _Light

DAY = datetime(2024, 5, 6, tzinfo=UTC)
USER = "corp\\bob"


def at(h: int, m: int, s: int = 0, ms: int = 0) -> datetime:
    return DAY.replace(hour=h, minute=m, second=s, microsecond=ms * 1000)


class Builder:
    """Builds events of one user with increasing seq per agent."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []
        self._seq: dict[str, int] = {}

    def add(
        self,
        type_: str,
        ts: datetime,
        *,
        agent: str = "agent-1",
        host: str = "pc1",
        input_: InputClass = "none",
        tz: str = "Europe/Paris",
        **kw: Any,
    ) -> Envelope:
        seq = self._seq.get(agent, 0) + 1
        self._seq[agent] = seq
        if type_ == "Heartbeat":
            kw.setdefault("last_input_ts", None)
        e = EVENT_TYPES[type_](
            agent_id=agent, seq=seq, ts=ts, input=input_, user="bob", domain="corp", host=host, tz=tz, **kw
        )
        self.events.append(e)
        return e


class Consumer:
    """Applies upserts and retractions like a downstream consumer, checking they make sense."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.retracted: set[str] = set()

    def apply(self, upserts: Iterable[Session], retractions: Iterable[SessionRetraction]) -> None:
        retractions, upserts = list(retractions), list(upserts)
        for r in retractions:
            assert r.retracted
            assert r.session_id in self.sessions, "retraction of an id that is not published"
        assert len({r.session_id for r in retractions}) == len(retractions), "an id retracted twice"
        fold_sessions([*retractions, *upserts], self.sessions)
        self.retracted.update(r.session_id for r in retractions)
        self.retracted.difference_update(s.session_id for s in upserts)

    def final(self) -> list[Session]:
        assert not (self.retracted & set(self.sessions))
        return sorted(self.sessions.values(), key=lambda s: (s.start, s.kind))


def brief(sessions: Iterable[Session]) -> list[tuple[str, str | None, str, str]]:
    return [(s.kind, s.reason, s.start.strftime("%H:%M:%S"), s.end.strftime("%H:%M:%S")) for s in sessions]


def assert_same_but_checkpoints(a: UserState, b: UserState) -> None:
    """Two states equal in every field a state record holds (the wire format's field list) but the
    checkpoints, and in the open chain each knows (``UserState.tip``): what a settle that skips the
    computation (``Sessionizer._extend``) must leave as the computation does."""
    for name in (*(f for f in _Light.__struct_fields__ if f != "cks"), "tip"):
        assert getattr(a, name) == getattr(b, name), name
