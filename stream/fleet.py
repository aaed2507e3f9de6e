"""Fleet health derived from the events themselves: which agents are heard from, which went silent, how
many events they dropped from full spools, which versions run. Pure bookkeeping (the caller passes the
clock); the numbers become bounded-label gauges in :mod:`stream.metrics`.

Per agent the worker keeps a small :class:`AgentSeen` inside the user's state record, so the view survives
restarts and rebalances with the rest of the state. "Heard from" uses event time (capped at the wall clock,
so a skewed agent clock cannot look alive in the future); a backlog consumed late therefore does not make
long-dead agents look alive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Final

import msgspec

from proto.clock import epoch_ms
from proto.events import Heartbeat

RECENT_MS: Final = 5 * 60 * 1000
SILENT_MS: Final = 60 * 60 * 1000
KEEP_MS: Final = 24 * 60 * 60 * 1000
VERSION_MAX_LEN: Final = 40
#: Agents remembered per user (the most recently heard): a user has a few desktops; without a bound, events
#: under ever new agent ids (a misconfigured image, a hostile sender) grew the user's record without end.
MAX_AGENTS: Final = 256


class AgentSeen(msgspec.Struct, array_like=True, gc=False):
    """What the fleet view remembers about one agent: its latest event time, the version it reported then,
    and its latest heartbeat's time and cumulative ``spool_dropped`` (-1 before the first heartbeat)."""

    last_ms: int
    version: str = ""
    hb_ms: int = -1
    spool_dropped: int = -1


def observe(
    agents: MutableMapping[str, AgentSeen],
    events: Sequence[object],
    now_ms: int,
    times: Sequence[int] | None = None,
) -> int:
    """Fold ``events`` (raw events of one user) into ``agents``; return the spool drops newly reported.
    ``times``: the events' ``epoch_ms(ts)``, when the caller has them already.

    ``spool_dropped`` is read as a per-agent cumulative count that restarts at 0 when the agent restarts:
    the delta is ``new - old``, or ``new`` after a decrease (a restart), or ``new`` for an agent's first
    heartbeat. Only heartbeats newer than the last one counted are used, so duplicates and reordering never
    count twice.
    """
    dropped = 0
    if times is None:
        times = [epoch_ms(ev.ts) for ev in events]  # type: ignore[attr-defined]
    for ev, t in zip(events, times, strict=True):
        ts_ms = t if t < now_ms else now_ms
        seen = agents.get(ev.agent_id)  # type: ignore[attr-defined]
        if seen is None:
            seen = agents[ev.agent_id] = AgentSeen(last_ms=ts_ms, version=_version(ev))  # type: ignore[attr-defined]
        elif ts_ms >= seen.last_ms:
            seen.last_ms = ts_ms
            if ev.agent_version != seen.version:  # type: ignore[attr-defined]
                seen.version = _version(ev)
        if type(ev) is Heartbeat and ts_ms > seen.hb_ms:
            new = max(0, int(ev.spool_dropped))
            old = seen.spool_dropped
            dropped += new - old if 0 <= old <= new else new
            seen.hb_ms = ts_ms
            seen.spool_dropped = new
    return dropped


def prune(agents: MutableMapping[str, AgentSeen], now_ms: int, keep: int = MAX_AGENTS) -> None:
    """Forget agents not heard from for 24 hours (they count in no gauge any more), and all but the ``keep``
    most recently heard."""
    for agent_id in [a for a, s in agents.items() if now_ms - s.last_ms > KEEP_MS]:
        del agents[agent_id]
    keep_latest(agents, keep)


def keep_latest(agents: MutableMapping[str, AgentSeen], keep: int) -> None:
    """Forget all but the ``keep`` most recently heard agents."""
    if len(agents) > keep:
        by_age = sorted(agents.items(), key=lambda item: item[1].last_ms)
        for agent_id, _ in by_age[: len(agents) - keep]:
            del agents[agent_id]


def _version(ev: object) -> str:
    return (getattr(ev, "agent_version", "") or "unknown")[:VERSION_MAX_LEN]


class FleetSummary:
    """Counts over every agent of the users a worker owns, computed at one instant ``now_ms``."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.recent = 0
        self.silent = 0
        self.versions: Counter[str] = Counter()

    def add(self, agents: Mapping[str, AgentSeen]) -> None:
        for seen in agents.values():
            age = self.now_ms - seen.last_ms
            if age > KEEP_MS:
                continue
            self.versions[seen.version] += 1
            if age <= RECENT_MS:
                self.recent += 1
            elif age > SILENT_MS:
                self.silent += 1

    def capped_versions(self, max_values: int) -> dict[str, int]:
        """The ``max_values`` most used versions, every other one summed under ``"other"``."""
        top = self.versions.most_common()
        out = dict(top[:max_values])
        rest = sum(n for _, n in top[max_values:])
        if rest:
            out["other"] = out.get("other", 0) + rest
        return out
