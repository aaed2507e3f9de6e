"""The batch processor over the worker's decoded state (``stream.live.LiveStates``), without a broker: what
the Faust wiring relies on when it writes state once per commit instead of once per batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from bench.bench_offline import disorder
from proto import events as E
from proto.codec import decode_session_message, encode_event
from proto.deadletter import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC
from proto.keys import event_user_key, user_key
from proto.sessions import Session
from proto.topics import Topics
from stream.core import Intake, Sessionizer, SessionizerConfig, decode_state
from stream.live import Flushed, LiveStates
from stream.metrics import StreamMetrics
from stream.processor import Incoming, Processor, Result
from stream.state import decode_record
from tests.sessionizer_helpers import assert_same_but_checkpoints
from tests.support.events import generate_events

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOPICS = Topics("b.")


def processor() -> tuple[Processor, CollectorRegistry]:
    registry = CollectorRegistry()
    return Processor(
        TOPICS, Sessionizer(SessionizerConfig(gap_s=300, presence_timeout_s=180, retention_s=86400)),
        StreamMetrics(registry), close_timeout_s=60,
    ), registry


def clicks(user: str, minutes: range, partition: int = 0, seq0: int = 0) -> list[Incoming]:
    out = []
    for i, m in enumerate(minutes):
        e = E.HardwareMouseClick(agent_id=f"a-{user}", seq=seq0 + i + 1, ts=T0 + timedelta(minutes=m),
                                 input="hardware", user=user, domain="corp", host="pc1")
        out.append(Incoming(TOPICS.hid, partition, seq0 + i, event_user_key(e).encode(), encode_event(e)))
    return out


def test_many_batches_one_write_per_changed_user_and_the_same_sessions_as_per_batch_writes() -> None:
    proc, _ = processor()
    states = LiveStates({})
    batches = [clicks("ann", range(b * 3, b * 3 + 3), seq0=b * 3) + clicks("bob", range(b, b + 1), 1, b)
               for b in range(6)]
    live_msgs = []
    for b in batches:
        result = proc.handle_batch(b, states, now=1000.0)
        assert result.writes == []  # state stays decoded until the commit
        live_msgs += result.messages
    written: list[Flushed] = []
    assert states.flush(written.append) == 2
    # The same batches with a write per user per batch (the table lookup API) publish the same records.
    ref, _ = processor()
    store: dict[bytes, bytes] = {}
    ref_msgs = []
    for b in batches:
        result = ref.handle_batch(b, store.get, now=1000.0)
        for w in result.writes:
            store[w.key] = w.value
        ref_msgs += result.messages
    assert [m.value for m in live_msgs] == [m.value for m in ref_msgs]
    # The same states, but for the checkpoints: a state kept decoded knows what is open and settles the
    # events that only extend it without a computation, which makes no checkpoints; one decoded for every
    # batch computes each time (``Sessionizer._extend``).
    assert {w.key for w in written} == set(store)
    for flushed in written:
        assert_same_but_checkpoints(decode_state(decode_record(flushed.value).core),
                                    decode_state(decode_record(store[flushed.key]).core))


def test_scan_closes_cached_and_stored_users_and_leaves_them_changed() -> None:
    proc, registry = processor()
    store: dict[bytes, bytes] = {}
    states = LiveStates(store, max_users=1)
    batch = clicks("ann", range(0, 3)) + clicks("bob", range(0, 3), partition=1)
    proc.handle_batch(batch, states, now=1000.0)
    states.flush()  # one of them stays decoded, the other is only stored
    assert len(states) == 1
    result = proc.scan(states, {0, 1}, now=1061.0)
    sessions = [decode_session_message(m.value) for m in result.messages]
    actives = sorted(s.user_key for s in sessions if isinstance(s, Session) and s.kind == "active")
    assert actives == ["corp\\ann", "corp\\bob"]
    assert states.changed == 2
    assert registry.get_sample_value("desktrace_stream_silence_closes_total") == 2
    assert proc.scan(states, {0, 1}, now=2000.0).messages == []  # closed once, also before the flush
    states.flush()
    assert all(decode_record(v).closed for v in store.values())


def _published(messages: list) -> dict[str, object]:
    """The sessions a consumer of ``messages`` holds at the end: upserts applied, retractions removed."""
    held: dict[str, object] = {}
    for m in messages:
        if m.topic != TOPICS.sessions:
            continue
        s = decode_session_message(m.value)
        if isinstance(s, Session):
            held[s.session_id] = s
        else:
            held.pop(s.session_id, None)
    return held


_Run = tuple[dict[str, object], set[bytes], dict]


def _keyed_run(records: list[Incoming], batch_of: int) -> tuple[_Run, float]:
    """``records`` through one processor in batches of ``batch_of``, settled per batch, then every user
    closed by a silence scan: the sessions held in the end, the users with a state and the events counted
    by topic and type; and the records counted as keyed otherwise than by their event's user."""
    proc, registry = processor()
    states = LiveStates({})
    msgs = [m for i in range(0, len(records), batch_of)
            for m in proc.handle_batch(records[i : i + batch_of], states, now=1000.0).messages]
    msgs += proc.scan(states, {0}, now=10.0**9).messages
    written: list[Flushed] = []
    states.flush(written.append)
    counted = {tuple(s.labels.values()): s.value for metric in registry.collect() for s in metric.samples
               if s.name == "desktrace_stream_events_total"}
    miskeyed = registry.get_sample_value("desktrace_stream_records_miskeyed_total")
    assert miskeyed is not None
    return (_published(msgs), {w.key for w in written}, counted), miskeyed


def test_records_keyed_as_another_user_or_not_at_all_reach_their_own_users() -> None:
    """The processor decodes and takes one record key's records at a time (its events still in the CPU's
    caches): the key only groups them. An event keyed as another user, or not keyed, still goes to its own
    user, with the same sessions and counts as when every record carries its user's key, and is counted as
    miskeyed; a record keyed as the agents and the gateway key it (one user here has upper-case and
    non-ASCII names) is not. (The states may differ in the order of facts with the same time, which arrive
    in another order: that order changes no session, which the closing scan shows.)"""
    rng = random.Random(5)
    name = "J\u00fcrgen.\u00d6zt\u00fcrk"
    events = [msgspec.structs.replace(e, user=name, domain="CORP") if e.user == "user1" else e
              for e in disorder(generate_events(seed=3, users=5, hours=2.0), rng)]
    right = [Incoming(TOPICS.for_event(e), 0, i, user_key(e.domain, e.user).encode(), encode_event(e))
             for i, e in enumerate(events)]  # as agent.runner keys them
    keys: list[bytes] = sorted({r.key for r in right if r.key is not None})
    assert len(keys) == 6 and "corp\\j\u00fcrgen.\u00f6zt\u00fcrk".encode() in keys  # and a legacy client
    variants = {
        "not keyed": [r._replace(key=None) for r in right],
        "keyed as the next user": [r._replace(key=keys[(keys.index(r.key or b"") + 1) % 6]) for r in right],
        "one key for everyone": [r._replace(key=keys[0]) for r in right],
        "keys that are no user's": [r._replace(key=b"\xff" + (r.key or b"")) for r in right],
        "a third keyed wrong": [r._replace(key=rng.choice(keys)) if rng.random() < 0.3 else r for r in right],
    }
    expected, miskeyed = _keyed_run(right, 400)
    assert len(expected[0]) > 20 and len(expected[1]) == 6
    assert miskeyed == 0
    for variant, records in variants.items():
        wrong = sum(v.key != r.key for v, r in zip(records, right, strict=True))
        assert wrong > 0
        assert _keyed_run(records, 400) == (expected, wrong), variant


def test_settled_once_per_commit_the_same_sessions_as_settled_per_batch() -> None:
    """The worker takes batches and settles once per commit: what it publishes in the end is what settling
    every batch publishes (sessions closing across batches, events out of order), with no more records."""
    minutes = [m for b in range(8) for m in range(b * 20, b * 20 + 6)]  # 6 clicks, then a 14-minute gap
    order = minutes[::2] + minutes[1::2]  # half of them come late
    recs: list[Incoming] = []
    for user, part in (("ann", 0), ("bob", 1)):
        every = clicks(user, range(0, 160), part)
        recs += [every[m] for m in order]
    batches = [recs[i : i + 7] for i in range(0, len(recs), 7)]
    each, _ = processor()
    each_states = LiveStates({})
    each_msgs = [m for b in batches for m in each.handle_batch(b, each_states, now=1000.0).messages]
    once, _ = processor()
    once_states = LiveStates({})
    once_msgs = []
    for i, b in enumerate(batches):
        once_msgs += once.handle_batch(b, once_states, now=1000.0, settle=False).messages
        assert once.unsettled > 0
        if i % 5 == 4:
            once_msgs += once.settle(once_states, now=1000.0).messages
            assert once.unsettled == 0
    once_msgs += once.settle(once_states, now=1000.0).messages
    assert all(m.topic == TOPICS.sessions for m in once_msgs + each_msgs)  # no dead letters
    assert len(_published(each_msgs)) >= 7 * 2  # sessions closed on the way, for both users
    assert _published(once_msgs) == _published(each_msgs)
    assert len(once_msgs) <= len(each_msgs)
    # And a silence close publishes the same open sessions from either.
    each_msgs += each.scan(each_states, {0, 1}, now=2000.0).messages
    once_msgs += once.scan(once_states, {0, 1}, now=2000.0).messages
    assert _published(once_msgs) == _published(each_msgs)


def test_a_user_in_every_batch_is_taken_once_per_settle_with_its_records_in_order() -> None:
    """Batches handed over between two settles wait as received: the settle takes each user's records of
    all of them in one take (a take's fixed cost once per commit), in the order they came, and the batches
    return nothing until then (their dead letters included)."""
    proc, _ = processor()
    states = LiveStates({})
    takes: list[tuple[str, list[int]]] = []
    real_take = proc.sessionizer.take

    def take(intake: Intake, events: list, times: list | None = None) -> None:
        takes.append((events[0].user, [e.seq for e in events]))
        real_take(intake, events, times)

    proc.sessionizer.take = take  # type: ignore[method-assign,assignment]
    garbage = Incoming(TOPICS.hid, 0, 99, b"corp\\ann", b"not msgpack")
    stray = clicks("ann", range(50, 51), seq0=50)[0]._replace(key=b"corp\\eve")  # ann's, keyed as eve
    for b in range(4):
        anns = clicks("ann", range(b * 3, b * 3 + 3), seq0=b * 3)[::-1]
        batch = anns + clicks("bob", range(b, b + 1), 1, b) + [garbage] * (b == 1) + [stray] * (b == 0)
        assert proc.handle_batch(batch, states, now=1000.0 + b, settle=False) == Result()
    assert takes == [] and proc.unsettled == 3  # (record keys)
    out = proc.settle(states, now=1010.0)
    assert takes == [("ann", [s for b in range(4) for s in (b * 3 + 3, b * 3 + 2, b * 3 + 1)]),
                     ("bob", [1, 2, 3, 4]), ("ann", [51])]  # the stray after the well-keyed records
    assert [m.topic for m in out.messages].count(TOPICS.deadletter) == 1
    ann = states.get(b"corp\\ann")
    # When its latest records came (not the settle; not the earlier batch of the stray taken after them).
    assert ann is not None and ann.record.last_seen == 1003.0


def test_the_scan_settles_the_users_it_closes_and_only_those() -> None:
    """A silence close needs the user's taken events settled first; the other users wait for the commit
    (the scan runs often: settling everyone there would settle once per scan instead of once per commit)."""
    proc, _ = processor()
    states = LiveStates({})
    taken = proc.handle_batch(clicks("ann", range(0, 3)), states, now=1000.0, settle=False)
    assert taken.messages == [] and proc.unsettled == 1
    proc.handle_batch(clicks("bob", range(0, 3), partition=1), states, now=1050.0, settle=False)
    closed = proc.scan(states, {0, 1}, now=1061.0)  # ann silent for close_timeout, bob not
    assert proc.unsettled == 1
    sessions = _published(closed.messages).values()
    assert [(s.user_key, s.kind) for s in sessions] == [("corp\\ann", "active")]  # type: ignore[attr-defined]
    assert _published(proc.settle(states, now=1062.0).messages) == {}  # bob's session is still open


def test_taken_records_past_the_limit_are_settled_with_the_batch() -> None:
    proc, registry = processor()
    proc.max_taken_records = 5
    states = LiveStates({})
    proc.handle_batch(clicks("ann", range(0, 3)), states, now=1000.0, settle=False)
    assert proc.unsettled == 1
    forced = "desktrace_stream_forced_settle_seconds_count"
    assert registry.get_sample_value(forced) == 0
    proc.handle_batch(clicks("ann", range(30, 33), seq0=3), states, now=1000.0, settle=False)
    assert proc.unsettled == 0  # 6 records waited: settled
    assert registry.get_sample_value(forced) == 1  # and counted apart from the commits' settles
    live = states.get(b"corp\\ann")
    assert live is not None and live.record.open_sessions == 1 and live.core is not None
    assert live.core.open_from is not None  # the 09:30 session is open, the 09:00 one was published


def test_a_failing_user_goes_back_to_its_stored_state_and_the_others_go_on() -> None:
    proc, registry = processor()
    states = LiveStates({})
    proc.handle_batch(clicks("ann", range(0, 2)) + clicks("bob", range(0, 2)), states, now=1000.0)
    states.flush()
    real_settle = proc.sessionizer.settle

    def settle(user_key: str, intake: Intake) -> object:
        if user_key == "corp\\ann":
            raise RuntimeError("bug")
        return real_settle(user_key, intake)

    proc.sessionizer.settle = settle  # type: ignore[method-assign,assignment]
    # Two batches taken, then settled: every record of the failing user since its stored state goes.
    dead = []
    ann_records: list[Incoming] = []
    for m0 in (2, 4):
        ann_records += clicks("ann", range(m0, m0 + 2), 2, m0)
        result = proc.handle_batch(
            ann_records[-2:] + clicks("bob", range(m0, m0 + 2), seq0=m0), states, now=1001.0, settle=False,
        )
        dead += [m for m in result.messages if m.topic == TOPICS.deadletter]
    assert dead == []
    result = proc.settle(states, now=1002.0)
    dead = [m for m in result.messages if m.topic == TOPICS.deadletter]
    assert len(dead) == 4 and all(m.key == b"corp\\ann" for m in dead)
    assert sorted(int(dict(m.headers or [])[HEADER_SOURCE_OFFSET]) for m in dead) == [2, 3, 4, 5]
    # Each dead letter is its record whole, with where it came from: the records were held until the
    # settle, and nothing a replay needs may be lost there.
    assert [m.value for m in dead] == [r.value for r in ann_records]
    headers = [dict(m.headers or []) for m in dead]
    assert [h[HEADER_SOURCE_TOPIC] for h in headers] == [r.topic.encode() for r in ann_records]
    assert [h[HEADER_SOURCE_PARTITION] for h in headers] == [str(r.partition).encode() for r in ann_records]
    assert registry.get_sample_value("desktrace_stream_sessionizer_errors_total") == 1
    ann, bob = states.get(b"corp\\ann"), states.get(b"corp\\bob")
    assert ann is not None and ann.core is not None and len(ann.core.ts) == 2  # as stored
    assert bob is not None and bob.core is not None and len(bob.core.ts) == 6


def test_a_user_failing_while_taken_loses_nothing_taken_before() -> None:
    """Records waiting are taken at the next settle, each user's at once; the silence scan takes them too
    (without settling a user still active). A user taken at a scan and failing when taken again at the
    commit's settle has the records of both takes dead-lettered, and starts again from its stored state."""
    proc, registry = processor()
    states = LiveStates({})
    proc.handle_batch(clicks("ann", range(0, 2)), states, now=1000.0, settle=False)
    assert proc.scan(states, {0}, now=1001.0).messages == [] and proc.unsettled == 1  # taken, not settled
    real_take = proc.sessionizer.take

    def take(intake: Intake, events: list, times: list | None = None) -> None:
        if any(e.seq == 3 for e in events):
            raise RuntimeError("bug")
        real_take(intake, events, times)

    proc.sessionizer.take = take  # type: ignore[method-assign,assignment]
    assert proc.handle_batch(clicks("ann", range(2, 4), seq0=2), states, now=1001.0, settle=False) == Result()
    result = proc.settle(states, now=1002.0)
    dead = [m for m in result.messages if m.topic == TOPICS.deadletter]
    assert sorted(int(dict(m.headers or [])[HEADER_SOURCE_OFFSET]) for m in dead) == [0, 1, 2, 3]
    assert registry.get_sample_value("desktrace_stream_sessionizer_errors_total") == 1
    assert proc.unsettled == 0 and states.get(b"corp\\ann") is None  # nothing stored yet: starts afresh


def test_a_user_failing_with_miskeyed_records_in_the_batch_loses_none_of_them() -> None:
    """The user's well-keyed records are taken first and fail; its records keyed as another user come
    after them in the batch's order of work. Every record of the user is then either dead-lettered (for a
    replay) or in its state, none twice, and the other user is not touched."""
    proc, registry = processor()
    states = LiveStates({})
    proc.handle_batch(clicks("ann", range(0, 2)) + clicks("bob", range(0, 2)), states, now=1000.0)
    states.flush()
    real_take = proc.sessionizer.take

    def take(intake: Intake, events: list, times: list | None = None) -> None:
        if any(e.user == "ann" and e.seq == 3 for e in events):
            raise RuntimeError("bug")
        real_take(intake, events, times)

    proc.sessionizer.take = take  # type: ignore[method-assign,assignment]
    keyed = clicks("ann", range(2, 4), seq0=2)
    strays = [r._replace(key=b"corp\\bob") for r in clicks("ann", range(4, 6), 1, seq0=4)]
    result = proc.handle_batch(strays[:1] + keyed + clicks("bob", range(2, 4), seq0=2) + strays[1:], states,
                               now=1001.0)
    dead = [m for m in result.messages if m.topic == TOPICS.deadletter]
    assert [m.value for m in dead] == [r.value for r in keyed]
    assert registry.get_sample_value("desktrace_stream_sessionizer_errors_total") == 1
    assert registry.get_sample_value("desktrace_stream_records_miskeyed_total") == 2
    ann, bob = states.get(b"corp\\ann"), states.get(b"corp\\bob")
    assert ann is not None and ann.core is not None and bob is not None and bob.core is not None
    minute = 60_000
    t0 = int(T0.timestamp() * 1000)
    assert list(ann.core.ts) == [t0, t0 + minute, t0 + 4 * minute, t0 + 5 * minute]  # stored + the strays
    assert list(bob.core.ts) == [t0 + m * minute for m in range(4)]


@pytest.mark.parametrize("let_go_by", ["a forced settle", "the silence scan"])
def test_records_let_go_of_before_the_commit_are_not_lost_when_the_user_fails_after(let_go_by: str) -> None:
    """Records taken are held for the dead-letter topic until their user is settled. A settle before the
    commit (forced by too many records waiting, or the silence scan closing the user) lets go of them; a
    failure afterwards sends the user back to a state that still has their events (before, to the last
    commit's state: their events were in neither the state nor the dead letters). The commit's flush then
    writes that state once."""
    proc, registry = processor()
    states = LiveStates({})
    proc.handle_batch(clicks("ann", range(0, 2)), states, now=1000.0)
    states.flush()

    def take(intake: Intake, events: list, times: list | None = None) -> None:
        if events[0].seq > (2 if events[0].user == "bob" else 5):
            raise RuntimeError("bug")
        real_take(intake, events, times)

    real_take = proc.sessionizer.take
    proc.sessionizer.take = take  # type: ignore[method-assign,assignment]
    if let_go_by == "a forced settle":
        proc.max_taken_records = 3
        proc.handle_batch(clicks("ann", range(2, 5), seq0=2), states, now=1001.0, settle=False)
    else:
        proc.handle_batch(clicks("ann", range(2, 5), seq0=2), states, now=1001.0, settle=False)
        now = 1001.0 + proc.close_timeout_s
        bob = clicks("bob", range(0, 2), seq0=0)  # taken just before the scan: not silent, not settled
        proc.handle_batch(bob, states, now=now, settle=False)
        assert proc.unsettled == 2  # (users)
        proc.scan(states, {0}, now=now)
        assert proc.unsettled == 1
        # bob's state as of the scan has facts not settled yet: it is not stored, and a failure of his
        # goes back to his state before them and dead-letters them.
        waits = proc.handle_batch(clicks("bob", range(2, 3), seq0=2), states, now=now, settle=False)
        assert waits.messages == []  # (records wait for the settle, which takes them)
        result = proc.settle(states, now=now)
        assert [m.value for m in result.messages if m.key == b"corp\\bob"] == [r.value for r in bob] + [
            clicks("bob", range(2, 3), seq0=2)[0].value]
        assert states.get(b"corp\\bob") is None
    assert proc.unsettled == 0
    late = clicks("ann", range(5, 7), seq0=5)
    result = proc.handle_batch(late, states, now=1200.0, settle=False)
    assert result.messages == []
    dead = [m for m in proc.settle(states, now=1200.0).messages if m.topic == TOPICS.deadletter]
    assert [m.value for m in dead] == [r.value for r in late]
    assert registry.get_sample_value("desktrace_stream_sessionizer_errors_total") == (
        1 if let_go_by == "a forced settle" else 2)
    ann = states.get(b"corp\\ann")
    assert ann is not None and ann.core is not None and len(ann.core.ts) == 5
    written: list[Flushed] = []
    assert states.flush(written.append) == 1
    stored = decode_record(written[0].value)
    assert written[0].key == b"corp\\ann" and len(decode_state(stored.core).ts) == 5


async def test_records_go_in_order_in_as_few_record_batches_as_the_batch_size_allows() -> None:
    """``send_in_batches`` with aiokafka's own record batch builder (what the worker's producer creates):
    a batch is sent when the next record does not fit, every record lands once and in order, and a record
    larger than the batch size still goes (alone)."""
    import asyncio

    from aiokafka.producer.message_accumulator import BatchBuilder
    from aiokafka.record.memory_records import MemoryRecords

    from stream.record_batches import send_in_batches

    class Producer:
        def __init__(self) -> None:
            self.sent: list[tuple[str, int, list[bytes]]] = []

        def create_batch(self) -> BatchBuilder:
            return BatchBuilder(1000, 0)

        async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[int]:
            records = MemoryRecords(bytes(batch._build()))  # the bytes Kafka receives, read by aiokafka
            values: list[bytes] = []
            while (read := records.next_batch()) is not None:
                values += [r.value for r in read]
            self.sent.append((topic, partition, values))
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            fut.set_result(len(self.sent))
            return fut

    producer = Producer()
    values = [bytes([65 + i % 26]) * (120 if i != 7 else 3000) for i in range(20)]
    sent = await send_in_batches(producer, "t", 2, values, lambda v: (b"k", v, []))
    assert [v for _, _, vs in producer.sent for v in vs] == values
    assert [items for items, _ in sent] == [vs for _, _, vs in producer.sent]
    assert all(t == "t" and p == 2 for t, p, _ in producer.sent)
    assert 3 <= len(producer.sent) < len(values)  # split by size, not one per record
    assert [values[7]] in [vs for _, _, vs in producer.sent]  # the large one alone
    assert [await fut for _, fut in sent] == list(range(1, len(producer.sent) + 1))
