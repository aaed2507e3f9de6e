"""Worked example 4 of ``shared/spec/sessions.md`` (the legacy span end: a change-only client shut down, a
client restarted, a laptop that slept) through the pure core, fed whole, one report at a time and shuffled,
and through the reference implementation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from proto.events import Envelope
from proto.sessions import Session
from stream.core import Sessionizer, SessionizerConfig, decode_state, encode_state
from tests.reference_sessions import reference_sessions
from tests.sessionizer_helpers import USER, Builder, Consumer

FRI = datetime(2024, 5, 10, tzinfo=UTC)  # a Friday
L4H = SessionizerConfig(legacy_max_span_s=4 * 3600, retention_s=7 * 86400)


def t(day: int, h: int, m: int = 0) -> datetime:
    return FRI + timedelta(days=day, hours=h, minutes=m)


def example4() -> list[Envelope]:
    b = Builder()
    for ts, state in [
        (t(0, 9), "working"),
        (t(0, 12), "stopped"),
        (t(0, 12, 45), "working"),
        (t(0, 15, 30), "stopped"),
        (t(0, 15, 40), "working"),
        (t(3, 9), "working"),  # Monday: the client was shut down on Friday
        (t(4, 8), "working"),  # Tuesday: restarted again (Monday's report repeats too)
        (t(5, 9), "stopped"),  # Wednesday: the laptop slept from Tuesday on
    ]:
        b.add("StateChange", ts, agent="gateway", input_="none", tz="UTC", state=state)
    return b.events


def span(s: Session) -> tuple[str, str | None, str, str]:
    return (s.kind, s.reason, s.start.strftime("%a %H:%M"), s.end.strftime("%a %H:%M"))


EXAMPLE4 = [
    ("active", None, "Fri 09:00", "Fri 12:00"),
    ("inactive", "idle", "Fri 12:00", "Fri 12:45"),
    ("active", None, "Fri 12:45", "Fri 15:30"),
    ("inactive", "idle", "Fri 15:30", "Fri 15:40"),
    ("active", None, "Fri 15:40", "Fri 15:45"),  # repeated state: at most G
    ("active", None, "Mon 09:00", "Mon 09:05"),  # repeated state again (Tuesday's report)
    ("active", None, "Tue 08:00", "Tue 12:00"),  # the next report is a change a day later: at most L
]  # Wednesday's `stopped` with no later report is a presence point: no session of positive length


def run(core: Sessionizer, batches: list[list[Envelope]], roundtrip: bool = False) -> list[Session]:
    consumer = Consumer()
    state = None
    for batch in batches:
        state, update = core.apply(USER, state, batch)
        assert not update.late
        consumer.apply(update.upserts, update.retractions)
        if roundtrip:
            state = decode_state(encode_state(state))
    assert state is not None
    state, update = core.close(USER, state)
    consumer.apply(update.upserts, update.retractions)
    return consumer.final()


def test_example_4_through_the_core_and_the_reference() -> None:
    events = example4()
    got = run(Sessionizer(L4H), [events])
    assert [span(s) for s in got] == EXAMPLE4
    assert [span(s) for s in reference_sessions(USER, events, legacy_max_span_s=4 * 3600)] == [
        span(s) for s in got
    ]
    # Nothing is credited on Saturday or Sunday, and Friday's active time is about 5 h 50 min.
    assert not [s for s in got if s.start.weekday() in (5, 6) or s.end.weekday() in (5, 6)]
    friday = sum(s.duration_s for s in got if s.kind == "active" and s.start.date() == FRI.date())
    assert friday == 3 * 3600 + 2 * 3600 + 45 * 60 + 5 * 60


def test_example_4_streamed_one_report_at_a_time_publishes_friday_when_monday_arrives() -> None:
    events = example4()
    core = Sessionizer(L4H)
    consumer = Consumer()
    state = None
    for e in events[:6]:  # up to Monday 09:00
        state, update = core.apply(USER, state, [e])
        consumer.apply(update.upserts, update.retractions)
    # Friday is settled as soon as Monday's report is seen, before any close timeout.
    assert [span(s) for s in consumer.final()] == EXAMPLE4[:5]
    assert run(Sessionizer(L4H), [[e] for e in events], roundtrip=True) == run(Sessionizer(L4H), [events])


def test_example_4_in_any_order_and_batching() -> None:
    events = example4()
    want = run(Sessionizer(L4H), [events])
    rnd = random.Random(4)
    for _ in range(30):
        shuffled = events[:]
        rnd.shuffle(shuffled)
        cuts = sorted(rnd.sample(range(1, len(events)), rnd.randint(0, 4)))
        batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
        assert run(Sessionizer(L4H), batches, roundtrip=rnd.random() < 0.5) == want


def test_default_cap_is_four_hours_and_stopped_is_capped_too() -> None:
    """A client silent for 20 days after `stopped` gets at most L of idle time, not 20 days."""
    b = Builder()
    for ts, state in [(t(0, 9), "working"), (t(0, 17, 29), "stopped"), (t(20, 9), "working")]:
        b.add("StateChange", ts, agent="gateway", input_="none", tz="UTC", state=state)
    core = Sessionizer(SessionizerConfig(retention_s=30 * 86400))
    assert core.config.legacy_max_span_s == 14400
    got = run(core, [b.events])
    assert [span(s) for s in got] == [
        ("active", None, "Fri 09:00", "Fri 13:00"),
        ("inactive", "idle", "Fri 17:29", "Fri 21:29"),
        ("active", None, "Thu 09:00", "Thu 09:00"),
    ]
    assert got == reference_sessions(USER, b.events)


def test_a_desktop_agent_beside_a_legacy_client_is_unaffected() -> None:
    """The cap applies to the legacy spans only: hardware input of the same user still chains by G."""
    b = Builder()
    b.add("StateChange", t(0, 9), agent="gateway", input_="none", tz="UTC", state="working")
    for m in range(0, 8 * 60, 4):
        b.add("HardwareKeyboardEvent", t(0, 9, m), input_="hardware", tz="UTC")
    b.add("StateChange", t(0, 17), agent="gateway", input_="none", tz="UTC", state="stopped")
    got = run(Sessionizer(L4H), [b.events])
    assert [span(s) for s in got if s.kind == "active"] == [("active", None, "Fri 09:00", "Fri 16:56")]
    assert got == reference_sessions(USER, b.events, legacy_max_span_s=4 * 3600)
