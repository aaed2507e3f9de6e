"""The contract's worked examples and the core's streaming behaviour (closure, corrections, late events,
duplicates, state round trip, pruning)."""

from __future__ import annotations

from datetime import timedelta

from proto.sessions import session_id
from stream.core import Sessionizer, SessionizerConfig, decode_state, encode_state
from tests.reference_sessions import reference_sessions
from tests.sessionizer_helpers import USER, Builder, Consumer, at, brief


def example1(b: Builder, with_0902: bool = True) -> None:
    for t in [at(9, 0), at(9, 2), at(9, 6)] if with_0902 else [at(9, 0), at(9, 6)]:
        b.add("HardwareKeyboardEvent", t, input_="hardware")
    t = at(8, 59)
    while t <= at(9, 20):
        b.add("Heartbeat", t)
        t += timedelta(seconds=60)
    b.add("Logoff", at(9, 20))


EXAMPLE1 = [
    ("inactive", "idle", "08:59:00", "09:00:00"),
    ("active", None, "09:00:00", "09:06:00"),
    ("inactive", "idle", "09:06:00", "09:20:00"),
]


def test_example_1() -> None:
    b = Builder()
    example1(b)
    state, update = Sessionizer().apply(USER, None, b.events)
    assert brief(update.upserts) == EXAMPLE1
    assert update.retractions == [] and update.late == [] and update.duplicates == 0
    assert all(s.hosts == ["pc1"] and s.user_key == USER for s in update.upserts)
    assert all(s.session_id == session_id(USER, s.kind, s.start) for s in update.upserts)
    assert [s.duration_s for s in update.upserts] == [60.0, 360.0, 840.0]
    # Everything closed by the Logoff: nothing left to close.
    assert Sessionizer().open_sessions(state) == 0
    assert brief(reference_sessions(USER, b.events)) == EXAMPLE1


def test_example_2() -> None:
    b = Builder()
    t = at(10, 0)
    while t <= at(10, 4):
        b.add("Heartbeat", t)
        t += timedelta(seconds=60)
    b.add("HardwareMouseClick", at(10, 0), input_="hardware")
    b.add("Lock", at(10, 0, 5))
    b.add("Unlock", at(10, 1), input_="hardware")
    b.add("HardwareKeyboardEvent", at(10, 3), input_="hardware")
    core = Sessionizer()
    consumer = Consumer()
    state, update = core.apply(USER, None, b.events)
    consumer.apply(update.upserts, update.retractions)
    # The last active session and the idle time after it stay open: the user may come back.
    assert core.open_sessions(state) == 2
    state, update = core.close(USER, state)
    consumer.apply(update.upserts, update.retractions)
    want = [
        ("active", None, "10:00:00", "10:00:00"),
        ("inactive", "locked", "10:00:00", "10:01:00"),
        ("active", None, "10:01:00", "10:03:00"),
        ("inactive", "idle", "10:03:00", "10:04:00"),
    ]
    assert brief(consumer.final()) == want
    assert core.open_sessions(state) == 0
    assert brief(reference_sessions(USER, b.events)) == want


def test_example_3_late_input_corrects_published_sessions() -> None:
    b = Builder()
    example1(b)
    late = next(e for e in b.events if e.ts == at(9, 2))
    early = [e for e in b.events if e is not late]
    core = Sessionizer()
    consumer = Consumer()
    state, update = core.apply(USER, None, early)
    consumer.apply(update.upserts, update.retractions)
    assert update.corrected == []
    assert brief(update.upserts) == [
        ("inactive", "idle", "08:59:00", "09:00:00"),
        ("active", None, "09:00:00", "09:00:00"),
        ("inactive", "idle", "09:00:00", "09:06:00"),
        ("active", None, "09:06:00", "09:06:00"),
        ("inactive", "idle", "09:06:00", "09:20:00"),
    ]
    published = {s.session_id: s for s in update.upserts}
    state = decode_state(encode_state(state))
    state, update = core.apply(USER, state, [late])
    consumer.apply(update.upserts, update.retractions)
    # Same user/kind/start: the active session keeps its id and is corrected; the others are retracted.
    assert brief(update.upserts) == [("active", None, "09:00:00", "09:06:00")]
    assert update.upserts[0].session_id == session_id(USER, "active", at(9, 0))
    assert update.corrected == [update.upserts[0].session_id]  # published before: a correction
    retracted = {r.session_id for r in update.retractions}
    assert retracted == {session_id(USER, "active", at(9, 6)), session_id(USER, "inactive", at(9, 0))}
    assert retracted <= set(published)
    assert all(r.user_key == USER for r in update.retractions)
    assert brief(consumer.final()) == EXAMPLE1


def test_duplicates_are_counted_and_ignored() -> None:
    b = Builder()
    example1(b)
    core = Sessionizer()
    state, first = core.apply(USER, None, b.events[:10])
    state, update = core.apply(USER, state, b.events + b.events[:3])
    assert update.duplicates == 10 + 3
    consumer = Consumer()
    consumer.apply(first.upserts, first.retractions)
    consumer.apply(update.upserts, update.retractions)
    assert brief(consumer.final()) == EXAMPLE1


def test_late_events_beyond_the_horizon_are_returned_not_applied() -> None:
    core = Sessionizer(SessionizerConfig(retention_s=3600))
    b = Builder()
    example1(b)  # 08:59 .. 09:20
    state, _ = core.apply(USER, None, b.events)
    b2 = Builder()
    b2.add("HardwareKeyboardEvent", at(12, 0), input_="hardware", agent="agent-2")
    stale = b2.add("HardwareKeyboardEvent", at(10, 59, 59), input_="hardware", agent="agent-2")
    fresh = b2.add("HardwareKeyboardEvent", at(11, 0), input_="hardware", agent="agent-2")
    state, update = core.apply(USER, state, b2.events)
    assert update.late == [stale]
    assert update.duplicates == 0
    consumer = Consumer()
    consumer.apply(update.upserts, update.retractions)
    state, update = core.close(USER, state)
    consumer.apply(update.upserts, update.retractions)
    # The 11:00 input is within the horizon (12:00 - 1 h) and applied; the 10:59:59 one is not.
    assert brief(consumer.final()) == [
        ("active", None, "11:00:00", "11:00:00"),
        ("active", None, "12:00:00", "12:00:00"),
    ]
    assert core.latest_event_ts(state) == at(12, 0)
    assert fresh.ts == at(11, 0)
    # Example 1's facts ended long before the horizon and were pruned: the state stays bounded.
    assert min(state.ts) >= at(11, 0).timestamp() * 1000
    # A replay of a pruned event is late, never re-applied.
    state, update = core.apply(USER, state, [b.events[0]])
    assert update.late == [b.events[0]] and update.upserts == [] and update.retractions == []


def test_what_is_late_depends_on_the_order_of_the_events_not_on_their_batches() -> None:
    """An event is late when it is older than the horizon behind a newer event that came before it: the
    same events in one batch or one at a time give the same late events and the same sessions (a
    backlog spanning more than the horizon, read in one fetch, loses nothing)."""
    b = Builder()
    b.add("HardwareKeyboardEvent", at(9, 0), input_="hardware")
    b.add("HardwareKeyboardEvent", at(11, 0), input_="hardware")
    stale = b.add("HardwareKeyboardEvent", at(9, 30), input_="hardware")
    b.add("HardwareKeyboardEvent", at(11, 30), input_="hardware")
    outcomes = []
    for batches in ([b.events], [[e] for e in b.events], [b.events[:2], b.events[2:]]):
        core = Sessionizer(SessionizerConfig(retention_s=3600))
        state, late, consumer = None, [], Consumer()
        for batch in batches:
            state, update = core.apply(USER, state, batch)
            late += update.late
            consumer.apply(update.upserts, update.retractions)
        assert state is not None
        state, update = core.close(USER, state)
        consumer.apply(update.upserts, update.retractions)
        outcomes.append((late, brief(consumer.final())))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    late, sessions = outcomes[0]
    assert late == [stale]  # 09:30 came after 11:00; 09:00 came first
    assert ("active", None, "09:00:00", "09:00:00") in sessions


def test_state_stays_bounded_over_many_days() -> None:
    core = Sessionizer(SessionizerConfig(retention_s=2 * 86400))
    state = None
    sizes = []
    for day in range(8):
        b = Builder()
        b._seq["agent-1"] = day * 10_000
        base = at(8, 0) + timedelta(days=day)
        for minute in range(0, 9 * 60):
            t = base + timedelta(minutes=minute)
            b.add("Heartbeat", t, last_input_ts=t - timedelta(seconds=20) if minute % 50 < 40 else None)
            if minute % 50 < 40:
                b.add("HardwareKeyboardEvent", t + timedelta(seconds=7), input_="hardware")
        b.add("Logoff", base + timedelta(hours=9))
        state, _ = core.apply(USER, state, b.events)
        sizes.append(len(encode_state(state)))
    assert state is not None
    assert max(sizes[3:]) < 1.3 * min(sizes[3:])  # a plateau: at most ~3 days of facts are kept
    assert len(state.seen["agent-1"]) <= 3 * 4


def test_latest_event_ts_and_empty_state() -> None:
    core = Sessionizer()
    state, update = core.apply(USER, None, [])
    assert core.latest_event_ts(state) is None
    assert update.upserts == [] and core.open_sessions(state) == 0
    state, update = core.close(USER, state)
    assert update.upserts == []
