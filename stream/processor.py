"""The worker's batch logic without Kafka: records in, state writes and output messages out.

:class:`Processor` turns one consumed batch (bytes as received) into per-user state updates (one per user
per batch), session upserts/retractions and dead letters, and scans the stored states for users silent for
``close_timeout`` of wall-clock time. The Faust wiring (``stream.app``) feeds it and writes what it returns;
the clock is passed in, so everything here is testable without a broker.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from proto.clock import epoch_ms
from proto.codec import EventDecodeError, decode_events, encode_session
from proto.deadletter import deadletter_headers, deadletter_record
from proto.events import Envelope
from proto.keys import event_user_key
from proto.topics import Topics
from stream import fleet
from stream.core import Sessionizer, Update
from stream.live import LiveStates, LiveUser
from stream.metrics import StreamMetrics
from stream.state import UserRecord, decode_record

SERVICE = "stream"
log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class Incoming(NamedTuple):
    """One consumed raw record, as received."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int | None = None  #: Kafka record timestamp (ms), when known


class Outgoing(NamedTuple):
    """One record to produce (a session message or a dead letter). ``source_ms``: for a session record,
    the Kafka timestamp of the earliest record of its user in the batch that produced it (the publish
    latency metric's start)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers | None = None
    source_ms: int | None = None


class StateWrite(NamedTuple):
    """A new table value for ``key``, to be written to changelog ``partition``."""

    key: bytes
    partition: int
    value: bytes


class _UserBatch(NamedTuple):
    """One user's records of a batch, their decoded events and the events' times (epoch ms), aligned."""

    records: list[Incoming]
    events: list[Envelope]
    times: list[int]


@dataclass
class Result:
    """What one batch or one scan produced, in the order it must be written."""

    writes: list[StateWrite] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)


class Processor:
    """Applies batches to per-user state through the pure sessionizer and says what to publish.

    Guarantees: every record of a batch is either folded into its user's state or dead-lettered with its
    bytes as received (undecodable, invalid, unknown type, late, or a sessionizer failure for that user);
    one bad record or one failing user never stops the others. The output of a state change is returned
    together with the state write, so the caller can make both durable before committing offsets.
    """

    def __init__(
        self,
        topics: Topics,
        sessionizer: Sessionizer,
        metrics: StreamMetrics,
        *,
        close_timeout_s: float,
        versions_max: int = 20,
    ) -> None:
        self.topics = topics
        self.sessionizer = sessionizer
        self.metrics = metrics
        self.close_timeout_s = close_timeout_s
        self.versions_max = versions_max
        self._user_keys: dict[tuple[str, str], str] = {}  #: (domain, user) -> user key, a cache
        kinds = ("active", "inactive")
        self._published_by_kind = {k: metrics.sessions_published.labels(k) for k in kinds}
        self._corrections_by_kind = {k: metrics.corrections.labels(k) for k in kinds}

    # ---- batches ---------------------------------------------------------------------------------------

    def handle_batch(
        self,
        batch: Sequence[Incoming],
        states: LiveStates | Callable[[bytes], bytes | None],
        now: float,
    ) -> Result:
        """Handle ``batch`` (records with ``topic``, ``partition``, ``offset``, ``key``, ``value``).

        ``states``: the worker's :class:`stream.live.LiveStates` (state changes stay there until its next
        flush; ``Result.writes`` is empty), or a lookup of stored table values (then every changed user's
        new value is in ``Result.writes``, one per user).
        """
        if not isinstance(states, LiveStates):
            stored = LiveStates(_LookupStore(states))
            return _with_writes(stored, lambda live: self.handle_batch(batch, live, now))
        m = self.metrics
        m.batch_size.observe(len(batch))
        out = Result()
        groups: dict[str, _UserBatch] = {}
        counts: Counter[tuple[str, type]] = Counter()
        ukeys = self._user_keys
        if len(ukeys) > 100_000:
            ukeys.clear()
        for rec, ev in zip(batch, decode_events([r.value for r in batch]), strict=True):
            if isinstance(ev, EventDecodeError):
                self._deadletter(out, rec, str(ev), ev.error_class)
                continue
            counts[(rec.topic, type(ev))] += 1
            ukey = ukeys.get((ev.domain, ev.user))
            if ukey is None:
                ukey = ukeys[(ev.domain, ev.user)] = event_user_key(ev)
            group = groups.get(ukey)
            if group is None:
                group = groups[ukey] = _UserBatch([], [], [])
            group.records.append(rec)
            group.events.append(ev)
            group.times.append(epoch_ms(ev.ts))
        for (topic, cls), n in counts.items():
            m.events.labels(topic, cls.__name__).inc(n)
        now_ms = int(now * 1000)
        for ukey, group in groups.items():
            self._handle_user(out, ukey, group, states, now, now_ms)
        return out

    def _handle_user(
        self,
        out: Result,
        ukey: str,
        group: _UserBatch,
        states: LiveStates,
        now: float,
        now_ms: int,
    ) -> None:
        key = ukey.encode()
        live = states.get(key)
        events = group.events
        try:
            new_state, update = self.sessionizer.apply(
                ukey, live.core if live is not None else None, events, group.times
            )
            open_sessions = self.sessionizer.open_sessions(new_state)
        except Exception as exc:
            # A sessionizer bug must not stop the other users: keep this user's events for a replay. The
            # core may have changed the decoded state part-way: the user goes back to its stored state.
            log.exception("sessionizer failed for one user; events dead-lettered", extra={"kv": {
                "error_class": "other", "events": len(events), "exception": type(exc).__name__}})
            self.metrics.user_errors.inc()
            states.forget(key)
            for rec in group.records:
                self._deadletter(out, rec, f"sessionizer failed: {type(exc).__name__}", "other")
            return
        partition = group.records[-1].partition
        if live is None:
            live = LiveUser(UserRecord(core=b"", partition=partition, last_seen=now), new_state)
        else:
            live.core = new_state
        record = live.record
        record.partition, record.last_seen, record.closed = partition, now, False
        record.open_sessions = open_sessions
        dropped = fleet.observe(record.agents, events, now_ms, group.times)
        if dropped:
            self.metrics.spool_dropped.inc(dropped)
        fleet.prune(record.agents, now_ms)
        source_ms = None
        if update.upserts:
            stamps = [ts for r in group.records if (ts := getattr(r, "timestamp", None)) is not None]
            source_ms = min(stamps) if stamps else None
        self._emit(out, key, update, now, source_ms)
        if update.late:
            self._deadletter_late(out, group, update.late)
        if update.duplicates:
            self.metrics.duplicates.inc(update.duplicates)
        states.put(key, live)

    def _load(self, key: bytes, raw: bytes | None) -> UserRecord | None:
        if raw is None:
            return None
        try:
            return decode_record(raw)
        except (msgspec.DecodeError, ValueError):
            # Not ours (e.g. an older, incompatible format): start the user afresh rather than stall.
            log.error("unreadable state record replaced", extra={"kv": {"bytes": len(raw)}})
            return None

    def _emit(
        self,
        out: Result,
        key: bytes,
        update: Update,
        now: float,
        source_ms: int | None = None,
    ) -> None:
        m = self.metrics
        topic = self.topics.sessions
        messages = out.messages
        if update.retractions:
            upserted = {s.session_id for s in update.upserts}
            for r in update.retractions:
                if r.session_id in upserted:
                    continue
                messages.append(Outgoing(topic, key, encode_session(r)))
                m.retractions.inc()
        corrected = update.corrected
        for s in update.upserts:
            messages.append(Outgoing(topic, key, encode_session(s), None, source_ms))
            kind = s.kind
            self._published_by_kind[kind].inc()
            if corrected and s.session_id in corrected:
                self._corrections_by_kind[kind].inc()
            m.close_lag.observe(max(0.0, now - s.end.timestamp()))

    def _deadletter_late(self, out: Result, group: _UserBatch, late: Iterable[Envelope]) -> None:
        by_id: dict[tuple[str, int], list[Incoming]] = defaultdict(list)
        for rec, ev in zip(group.records, group.events, strict=True):
            by_id[(ev.agent_id, ev.seq)].append(rec)
        for ev in late:
            self.metrics.late.inc()
            recs = by_id.get((ev.agent_id, ev.seq))
            if recs:
                self._deadletter(
                    out, recs.pop(0),
                    "event older than the user's retention horizon (retention setting): not sessionized",
                    "late",
                )

    def _deadletter(self, out: Result, rec: Incoming, error: str, error_class: str) -> None:
        headers = deadletter_headers(error, error_class, SERVICE, rec.topic, rec.partition, rec.offset)
        dl = deadletter_record(rec.key, rec.value, headers)
        out.messages.append(Outgoing(self.topics.deadletter, dl.key, dl.value, dl.headers))
        self.metrics.deadlettered.labels(error_class).inc()
        if dl.truncated:
            self.metrics.deadletters_truncated.inc()

    # ---- silence scan ----------------------------------------------------------------------------------

    def scan(
        self,
        states: LiveStates | Iterable[tuple[bytes, bytes]],
        partitions: Container[int],
        now: float,
    ) -> Result:
        """Close users silent for ``close_timeout`` (wall clock) among the users of ``partitions``, and
        refresh the gauges (open sessions, users, fleet) from them.

        ``states``: the worker's :class:`stream.live.LiveStates` (closed users are changed there), or the
        stored table items (then the closed users' new values are in ``Result.writes``)."""
        if not isinstance(states, LiveStates):
            return _with_writes(LiveStates(dict(states)), lambda live: self.scan(live, partitions, now))
        m = self.metrics
        out = Result()
        now_ms = int(now * 1000)
        summary = fleet.FleetSummary(now_ms)
        users = open_total = 0
        for key, live, raw in states.users():
            record = live.record if live is not None else self._load(key, raw)
            if record is None or record.partition not in partitions:
                continue
            users += 1
            summary.add(record.agents)
            if not record.closed and now - record.last_seen >= self.close_timeout_s:
                if live is None:
                    live = states.get(key)
                if live is not None:
                    self._close(out, key, live, now)
                    states.put(key, live)
                    record = live.record
            open_total += record.open_sessions
        m.users.set(users)
        m.open_sessions.set(open_total)
        m.agents_recent.set(summary.recent)
        m.agents_silent.set(summary.silent)
        m.agent_versions.clear()
        for version, n in summary.capped_versions(self.versions_max).items():
            m.agent_versions.labels(version).set(n)
        return out

    def _close(self, out: Result, key: bytes, live: LiveUser, now: float) -> None:
        ukey = key.decode("utf-8", "replace")
        record = live.record
        if live.core is not None:
            try:
                live.core, update = self.sessionizer.close(ukey, live.core)
                record.open_sessions = self.sessionizer.open_sessions(live.core)
            except Exception as exc:
                log.exception("sessionizer close failed for one user", extra={"kv": {
                    "exception": type(exc).__name__}})
                self.metrics.user_errors.inc()
                # closed all the same: do not retry every scan; the next event retries through apply
            else:
                self.metrics.silence_closes.inc()
                self._emit(out, key, update, now)
        record.closed = True


def _with_writes(live: LiveStates, run: Callable[[LiveStates], Result]) -> Result:
    """``run`` on ``live`` (states of stored table values), its changed users' values added to the result's
    ``writes``: how the processor answers a caller that holds no :class:`LiveStates`."""
    out = run(live)
    live.flush(lambda f: out.writes.append(StateWrite(*f)))
    return out


class _LookupStore(dict[bytes, bytes]):
    """A table lookup seen as a store for :class:`LiveStates`: reads go to the lookup, writes stay here."""

    def __init__(self, lookup: Callable[[bytes], bytes | None]) -> None:
        super().__init__()
        self._lookup = lookup

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        value = super().get(key)
        if value is None:
            value = self._lookup(key)
        return default if value is None else value
