"""The worker's batch logic without Kafka: records in, state writes and output messages out.

:class:`Processor` turns consumed batches (bytes as received) into per-user state updates, session
upserts/retractions and dead letters, and scans the stored states for users silent for ``close_timeout``
of wall-clock time. The Faust wiring (``stream.app``) feeds it and writes what it returns; the clock is
passed in, so everything here is testable without a broker (a forced settle's duration is timed here for
its metric only: nothing depends on it).

A batch's events are taken into their users' states, each user's at once; the sessions they change are
recomputed when the processor *settles* (:meth:`Processor.settle`): at the end of the batch, or, for a
caller that holds its output until the next commit anyway (the worker), once per commit for every user
taken since the last one. That caller's batches wait, as received, until the settle, which takes every
user's records of all of them at once: a user's take and its recomputation each have a fixed cost (about
20 and 30 us), paid once per commit instead of once per batch for a user with events in every batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

import msgspec

from proto.clock import epoch_ms
from proto.codec import EventDecodeError, decode_events, encode_session
from proto.deadletter import deadletter_headers, deadletter_record
from proto.events import Envelope
from proto.keys import event_user_key
from proto.topics import Topics
from stream import fleet
from stream.core import Intake, Sessionizer, Update
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
    the Kafka timestamp of the earliest record of its user among those settled with it (the publish
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


_topic = attrgetter("topic")


class _UserBatch(NamedTuple):
    """One user's records of a batch, their decoded events and the events' times (epoch ms), aligned."""

    records: list[Incoming]
    events: list[Envelope]
    times: list[int]


class _Taken:
    """One user's events taken into its state since the last settle: the state being built, the records
    they came from (dead-lettered should the sessionizer fail on the user) and the earliest Kafka timestamp
    among them (the publish latency's start)."""

    __slots__ = ("intake", "live", "records", "source_ms")

    def __init__(self, intake: Intake, live: LiveUser) -> None:
        self.intake = intake
        self.live = live
        self.records: list[Incoming] = []
        self.source_ms: int | None = None


class _Waiting:
    """One record key's records handed over and not taken yet, in the order received, and when the latest
    of them was received (wall clock, s)."""

    __slots__ = ("now", "records")

    def __init__(self, records: list[Incoming], now: float) -> None:
        self.records = records
        self.now = now


@dataclass
class Result:
    """What one batch or one scan produced, in the order it must be written."""

    writes: list[StateWrite] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)


class Processor:
    """Applies batches to per-user state through the pure sessionizer and says what to publish.

    Guarantees: every record of a batch is either folded into its user's state or dead-lettered with its bytes
    as received (undecodable, invalid, unknown type, late, or a sessionizer failure for that user); one bad
    record or one failing user never stops the others; every event goes to its own user whatever its record's
    key (the key only groups the records decoded together). The output of a state change is returned together
    with the state write, so the caller can make both durable before committing offsets. The records of a
    batch handed over with ``handle_batch(..., settle=False)`` wait here as received, then (taken by the
    next :meth:`settle` or :meth:`scan`) are in their users' decoded states only until settled: the caller
    settles (:meth:`settle`; :meth:`scan` settles the users it closes) before it writes any state, and the
    published sessions are the same whether it settles after every batch or after several. With
    ``keep_unsent``, a user's record holds the values of its session messages until :meth:`confirm`, and a
    user loaded with values an earlier owner did not confirm has them re-sent before its new output.
    """

    def __init__(
        self,
        topics: Topics,
        sessionizer: Sessionizer,
        metrics: StreamMetrics,
        *,
        close_timeout_s: float,
        versions_max: int = 20,
        max_taken_records: int = 200_000,
        keep_unsent: bool = False,
    ) -> None:
        self.topics = topics
        self.sessionizer = sessionizer
        self.metrics = metrics
        self.close_timeout_s = close_timeout_s
        self.versions_max = versions_max
        #: ``handle_batch(settle=False)`` takes and settles all the same once this many records wait or are
        #: taken (a taken record is kept until its user's settle, for the dead-letter topic should the
        #: sessionizer fail on the user), and stores the settled states (``LiveStates.checkpoint``): the
        #: state a failing user goes back to.
        self.max_taken_records = max_taken_records
        #: Keep each user's session output in its record (``UserRecord.unsent``) until :meth:`confirm`, and
        #: re-send what a stored record holds when a user is loaded with some: for a caller that writes the
        #: state before the output (the worker).
        self.keep_unsent = keep_unsent
        self._unsent: set[bytes] = set()  #: users whose ``unsent`` is this worker's own, not yet confirmed
        self._user_keys: dict[tuple[str, str], str] = {}  #: (domain, user) -> user key, a cache
        self._taken: dict[bytes, _Taken] = {}  #: users taken since the last settle, in the order taken
        self._taken_records = 0
        #: records handed over with ``settle=False`` and not taken yet, by record key (each key's in the order
        #: received), with the wall-clock time the latest of them was received (the user's ``last_seen``)
        self._waiting: dict[bytes | None, _Waiting] = {}
        self._waiting_records = 0
        kinds = ("active", "inactive")
        self._published_by_kind = {k: metrics.sessions_published.labels(k) for k in kinds}
        self._corrections_by_kind = {k: metrics.corrections.labels(k) for k in kinds}

    # ---- batches ---------------------------------------------------------------------------------------

    @property
    def unsettled(self) -> int:
        """Users (record keys) whose records were handed over or taken since the last settle."""
        return len(self._taken.keys() | self._waiting.keys())

    def handle_batch(
        self,
        batch: Sequence[Incoming],
        states: LiveStates | Callable[[bytes], bytes | None],
        now: float,
        *,
        settle: bool = True,
    ) -> Result:
        """Handle ``batch`` (records with ``topic``, ``partition``, ``offset``, ``key``, ``value``).

        ``states``: the worker's :class:`stream.live.LiveStates` (state changes stay there until its next
        flush; ``Result.writes`` is empty), or a lookup of stored table values (then every changed user's
        new value is in ``Result.writes``, one per user, and the batch is settled).

        ``settle``: take the batch's events into their users' states and recompute the sessions they change
        now (the output is in the result). False: the records wait, as received, for the next :meth:`settle`
        (or :meth:`scan`), which takes them with those of the batches handed over before it, each user's at
        once, and returns their output and dead letters; unless more than ``max_taken_records`` records are
        then waiting or taken, in which case they are taken and settled now. Each user's ``last_seen`` is
        the ``now`` of the latest batch that had a record of it.
        """
        if not isinstance(states, LiveStates):
            stored = LiveStates(_LookupStore(states))
            return _with_writes(stored, lambda live: self.handle_batch(batch, live, now))
        self.metrics.batch_size.observe(len(batch))
        self._wait(batch, now)
        out = Result()
        if settle:
            self._take_waiting(out, states)
            self._settle_into(out, states, now)
        elif self._taken_records + self._waiting_records >= self.max_taken_records:
            started = time.perf_counter()
            self._take_waiting(out, states)
            self._settle_into(out, states, now)
            states.checkpoint()  # the records let go of are in the state a failing user goes back to
            self.metrics.forced_settle_seconds.observe(time.perf_counter() - started)
        return out

    def settle(self, states: LiveStates, now: float) -> Result:
        """Take the records waiting, then recompute the sessions of every user whose events were taken since
        the last settle: their upserts and retractions (and the dead letters of the records that cannot be
        sessionized, or of a user the sessionizer fails on)."""
        out = Result()
        self._take_waiting(out, states)
        self._settle_into(out, states, now)
        return out

    def _wait(self, batch: Sequence[Incoming], now: float) -> None:
        """Add ``batch``'s records to those waiting, by record key."""
        waiting = self._waiting
        for rec in batch:
            w = waiting.get(rec.key)
            if w is None:
                waiting[rec.key] = _Waiting([rec], now)
            else:
                w.records.append(rec)
                w.now = now
        self._waiting_records += len(batch)

    def _take_waiting(self, out: Result, states: LiveStates) -> None:
        """Take every waiting record into its user's state, each record key's at once (their dead letters go
        to ``out``): one user's fixed cost of a take is paid once per settle, not once per batch."""
        if not self._waiting:
            return
        waiting, self._waiting, self._waiting_records = self._waiting, {}, 0
        m = self.metrics
        ukeys = self._user_keys
        if len(ukeys) > 100_000:
            ukeys.clear()
        counts: Counter[tuple[str, type]] = Counter()
        strays: list[tuple[Incoming, Envelope, float]] = []
        # One key's records at a time, decoded and taken at once: their events are still in the CPU's
        # caches when they are taken (decoding the whole batch first made taking them 1.5x as costly).
        for key, w in waiting.items():
            recs, now = w.records, w.now
            expected = _key_text(key)
            group = _UserBatch([], [], [])
            user = domain = None  # of the latest event found to be ``expected``'s
            for rec, ev in zip(recs, decode_events([r.value for r in recs]), strict=True):
                if isinstance(ev, EventDecodeError):
                    self._deadletter(out, rec, str(ev), ev.error_class)
                    continue
                if ev.user != user or ev.domain != domain:  # (two string comparisons cost less than a lookup)
                    ukey = ukeys.get((ev.domain, ev.user))
                    if ukey is None:
                        ukey = ukeys[(ev.domain, ev.user)] = event_user_key(ev)
                    if ukey != expected:
                        strays.append((rec, ev, now))  # keyed as another user (or not at all): taken below
                        continue
                    user, domain = ev.user, ev.domain
                group.records.append(rec)
                group.events.append(ev)
                group.times.append(epoch_ms(ev.ts))
            if group.records and expected is not None:  # (no record is in the group without one)
                counts.update(zip(map(_topic, group.records), map(type, group.events), strict=True))
                self._take_user(out, expected, group, states, now)
        if strays:
            self._take_strays(out, strays, states, counts)
        for (topic, cls), n in counts.items():
            m.events.labels(topic, cls.__name__).inc(n)

    def _take_strays(
        self,
        out: Result,
        strays: list[tuple[Incoming, Envelope, float]],
        states: LiveStates,
        counts: Counter[tuple[str, type]],
    ) -> None:
        """Take the events whose record key is not their user's key (a producer keying by something else,
        or not at all), grouped by user in the order they came; the spec keys every raw record by its
        user, so these are rare. Taken after the well-keyed events waiting, so a user's strays come after
        its other events of the same settle. (``strays``: record, event, time received.)"""
        self.metrics.miskeyed.inc(len(strays))
        groups: dict[str, _UserBatch] = {}
        received: dict[str, float] = {}  #: user key -> when the latest of its strays came
        ukeys = self._user_keys
        for rec, ev, now in strays:
            ukey = ukeys.get((ev.domain, ev.user))
            if ukey is None:
                ukey = ukeys[(ev.domain, ev.user)] = event_user_key(ev)
            group = groups.get(ukey)
            if group is None:
                group = groups[ukey] = _UserBatch([], [], [])
            group.records.append(rec)
            group.events.append(ev)
            group.times.append(epoch_ms(ev.ts))
            received[ukey] = max(received.get(ukey, now), now)
        for ukey, group in groups.items():
            counts.update(zip(map(_topic, group.records), map(type, group.events), strict=True))
            self._take_user(out, ukey, group, states, received[ukey])

    def _take_user(
        self,
        out: Result,
        ukey: str,
        group: _UserBatch,
        states: LiveStates,
        now: float,
    ) -> None:
        """Take ``group`` (``ukey``'s events, the latest received at ``now``) into the user's state."""
        key = ukey.encode()
        taken = self._taken.get(key)
        records = group.records
        try:
            if taken is None:
                live = states.get(key)
                if live is not None and live.record.unsent:
                    self._resend(out, key, live.record)
                intake = self.sessionizer.intake(live.core if live is not None else None)
                if live is None:
                    record = UserRecord(core=b"", partition=records[-1].partition, last_seen=now)
                    live = LiveUser(record, None)
                taken = _Taken(intake, live)
            intake = taken.intake
            dups = intake.dups
            self.sessionizer.take(intake, group.events, group.times)
        except Exception as exc:
            self._user_failed(out, states, key, taken, records, exc)
            return
        if taken.live.core is None:
            taken.live.core = intake.state
        again = key in self._taken  # (taken before in this settle: its strays come after its other records)
        if not again:
            self._taken[key] = taken
        for r in records:
            ts = getattr(r, "timestamp", None)
            if ts is not None and (taken.source_ms is None or ts < taken.source_ms):
                taken.source_ms = ts
        live = taken.live
        record = live.record
        record.partition, record.closed = records[-1].partition, False
        if not again or now > record.last_seen:
            record.last_seen = now
        dropped = fleet.observe(record.agents, group.events, int(now * 1000), group.times)
        if dropped:
            self.metrics.spool_dropped.inc(dropped)
        if intake.late:
            gone = {id(r) for r in self._deadletter_late(out, group, intake.late)}
            intake.late.clear()
            records = [r for r in records if id(r) not in gone]
        taken.records += records
        self._taken_records += len(records)
        if intake.dups > dups:
            self.metrics.duplicates.inc(intake.dups - dups)
        states.put(key, live)

    def _settle_into(self, out: Result, states: LiveStates, now: float) -> None:
        taken, self._taken, self._taken_records = self._taken, {}, 0
        now_ms = int(now * 1000)
        for key, t in taken.items():
            self._settle_user(out, states, key, t, now, now_ms)

    def _settle_user(
        self, out: Result, states: LiveStates, key: bytes, t: _Taken, now: float, now_ms: int
    ) -> None:
        try:
            new_state, update = self.sessionizer.settle(key.decode(), t.intake)
            n_open = self.sessionizer.open_sessions(new_state)
        except Exception as exc:
            self._user_failed(out, states, key, None, t.records, exc)
            return
        live = t.live
        live.core = new_state
        live.record.open_sessions = n_open
        fleet.prune(live.record.agents, now_ms)
        self._emit(out, key, update, now, t.source_ms if update.upserts else None, live.record)

    def _user_failed(
        self,
        out: Result,
        states: LiveStates,
        key: bytes,
        taken: _Taken | None,
        records: list[Incoming],
        exc: Exception,
    ) -> None:
        """A sessionizer bug must not stop the other users: this user's events since its stored state are
        dead-lettered for a replay, and it goes back to that state (the core may have changed the decoded
        state part-way)."""
        if taken is not None and taken.records:
            records = taken.records + records
            self._taken_records -= len(taken.records)
        self._taken.pop(key, None)
        log.exception("sessionizer failed for one user; events dead-lettered", extra={"kv": {
            "error_class": "other", "events": len(records), "exception": type(exc).__name__}})
        self.metrics.user_errors.inc()
        states.forget(key)
        for rec in records:
            self._deadletter(out, rec, f"sessionizer failed: {type(exc).__name__}", "other")

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
        record: UserRecord | None = None,
    ) -> None:
        """Add ``update``'s messages to ``out`` (and, with :attr:`keep_unsent`, their values to
        ``record.unsent``)."""
        m = self.metrics
        topic = self.topics.sessions
        messages = out.messages
        first = len(messages)
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
        if self.keep_unsent and record is not None and len(messages) > first:
            record.unsent.extend(msg.value for msg in messages[first:])
            self._unsent.add(key)

    def _resend(self, out: Result, key: bytes, record: UserRecord) -> None:
        """A user loaded with output its stored state does not know was delivered (its owner stopped between
        writing the state and the output's acknowledgement): send that output again, before any newer one
        of the user. Nothing to do for this worker's own unconfirmed output, which is in its outbox."""
        if not self.keep_unsent or key in self._unsent:
            return
        topic = self.topics.sessions
        out.messages.extend(Outgoing(topic, key, value) for value in record.unsent)
        self.metrics.resent.inc(len(record.unsent))
        self._unsent.add(key)

    def confirm(self, states: LiveStates) -> int:
        """The output so far is acknowledged: empty the ``unsent`` of every user that had some (those users'
        records are written again at the next flush, their cores' bytes as they are). Returns how many
        users."""
        users, self._unsent = self._unsent, set()
        for key in users:
            live = states.get(key)
            if live is not None and live.record.unsent:
                live.record.unsent = []
                states.put_record(key, live)
        return len(users)

    def _deadletter_late(self, out: Result, group: _UserBatch, late: Iterable[Envelope]) -> list[Incoming]:
        """Dead-letter the records of ``late`` (events of ``group``); returns those records."""
        gone: list[Incoming] = []
        by_id: dict[tuple[str, int], list[Incoming]] = defaultdict(list)
        for rec, ev in zip(group.records, group.events, strict=True):
            by_id[(ev.agent_id, ev.seq)].append(rec)
        for ev in late:
            self.metrics.late.inc()
            recs = by_id.get((ev.agent_id, ev.seq))
            if recs:
                rec = recs.pop(0)
                gone.append(rec)
                self._deadletter(
                    out, rec,
                    "event older than the user's retention horizon (retention setting): not sessionized",
                    "late",
                )
        return gone

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
        """Close users silent for ``close_timeout`` (wall clock) among the users of ``partitions`` (the
        records waiting are taken first; a user whose events were taken and not settled is settled first),
        and refresh the gauges (open sessions, users, fleet) from them (the open sessions as of each user's
        latest settle).

        ``states``: the worker's :class:`stream.live.LiveStates` (closed users are changed there), or the
        stored table items (then the closed users' new values are in ``Result.writes``)."""
        if not isinstance(states, LiveStates):
            return _with_writes(LiveStates(dict(states)), lambda live: self.scan(live, partitions, now))
        m = self.metrics
        out = Result()
        self._take_waiting(out, states)  # (their users' last_seen is when they were received)
        now_ms = int(now * 1000)
        summary = fleet.FleetSummary(now_ms)
        users = open_total = 0
        settled: list[bytes] = []
        for key, live, raw in states.users():
            record = live.record if live is not None else self._load(key, raw)
            if record is None or record.partition not in partitions:
                continue
            users += 1
            summary.add(record.agents)
            if record.unsent:
                self._resend(out, key, record)
            if not record.closed and now - record.last_seen >= self.close_timeout_s:
                if live is None:
                    live = states.get(key)
                taken = self._taken.pop(key, None)
                if taken is not None:  # taken since the last commit (a close_timeout below it): settle
                    self._taken_records -= len(taken.records)
                    self._settle_user(out, states, key, taken, now, now_ms)
                    settled.append(key)
                    live = states.get(key)  # as stored if the sessionizer failed on it
                if live is not None:
                    self._close(out, key, live, now)
                    states.put(key, live)
                    record = live.record
            open_total += record.open_sessions
        if settled:  # as after a forced settle: the records let go of are in the state a failure goes back to
            states.checkpoint(settled)
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
                self._emit(out, key, update, now, None, record)
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


def _key_text(key: bytes | None) -> str | None:
    """A record key as the user key it should be (``events.md``: raw records are keyed by user key), or
    None when it cannot be one."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None
