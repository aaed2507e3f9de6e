"""Bounding one user's state against floods (``docs/sessions.md``, "Bounds against floods"): what
``Sessionizer.shed`` forgets and what it keeps, and the bound on seq ranges kept for duplicate detection.
A user the worker cannot store any more must lose its oldest facts, never its newest sessions, and never
stop the worker."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from unittest import mock

from bench.bench_sessionizer import user_day
from proto import events as E
from proto.events import Envelope
from stream.core import Sessionizer, SessionizerConfig, decode_state, encode_state
from stream.core import sessionizer as core_module
from tests.sessionizer_helpers import Consumer

USER = "corp\\user1"
LONG = SessionizerConfig(retention_s=30 * 86_400)  #: no pruning by the horizon within the tests' days


def _days(n: int, seed: int = 3) -> list[Envelope]:
    rng = random.Random(seed)
    return [e for day in range(n) for e in user_day(1, rng, day)]


def _run(events: list[Envelope], shed_at: int | None = None, keep: int = 0) -> tuple[Consumer, int, int]:
    """Feed ``events`` in order in batches of 50, shedding to ``keep`` facts after ``shed_at`` events; the
    consumer's view after a final close, the facts shed and the floor the cut left."""
    core = Sessionizer(LONG)
    consumer = Consumer()
    st = None
    shed = floor = 0
    for i in range(0, len(events), 50):
        st, update = core.apply(USER, st, events[i : i + 50])
        assert not update.late
        consumer.apply(update.upserts, update.retractions)
        if shed_at is not None and i <= shed_at < i + 50:
            shed = core.shed(st, keep)
            floor = st.floor
            st = decode_state(encode_state(st))  # what the worker stores and recovers
    assert st is not None
    st, update = core.close(USER, st)
    consumer.apply(update.upserts, update.retractions)
    return consumer, shed, floor


def test_shedding_at_a_published_session_changes_no_session() -> None:
    """A desk's events over three days, in order; after a day and a half the state is shed to 1,000 facts.
    The cut is at the start of a published active session, so the consumer ends with exactly the sessions
    of a run that kept everything: the older ones were published and final, the newer ones are computed
    from the same facts."""
    events = _days(3)
    whole, _, _ = _run(events)
    shed_view, shed, floor = _run(events, shed_at=len(events) // 2, keep=1_000)
    assert shed > 1_000
    assert floor > 0
    assert shed_view.final() == whole.final()


def test_a_forced_cut_keeps_every_session_that_starts_after_it() -> None:
    """A user with legacy reports (no cut can be proven harmless) is cut at its oldest kept fact. Every
    session that starts after the cut's day is exactly as without the cut; the core goes on applying."""
    events = _days(3)
    legacy = [
        E.StateChange(agent_id="gateway", seq=i + 1, ts=e.ts, input="none", user=e.user, domain=e.domain,
                      host=e.host, state="working" if i % 2 == 0 else "stopped")
        for i, e in enumerate(x for x in events if x.ts.minute == 0 and x.ts.second == 0)
    ]
    mixed = sorted(events + legacy, key=lambda e: e.ts)
    whole, _, _ = _run(mixed)
    at = len(mixed) // 2
    shed_view, shed, floor = _run(mixed, shed_at=at, keep=300)
    assert shed > 300
    cut = datetime.fromtimestamp(floor / 1000, UTC)
    next_day = (cut + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    after = [s for s in whole.final() if s.start >= next_day]
    assert after
    assert [s for s in shed_view.final() if s.start >= next_day] == after


def test_shedding_what_holds_fewer_facts_than_kept_does_nothing() -> None:
    core = Sessionizer(LONG)
    st, _ = core.apply(USER, None, _days(1)[:100])
    before = encode_state(st)
    assert core.shed(st, 1_000) == 0
    assert encode_state(st) == before


def test_seq_ranges_are_bounded_and_duplicates_of_dropped_ranges_change_nothing() -> None:
    """An agent that numbers its events at random leaves one seq range per event. Past the bound the
    oldest ranges are dropped; an event of a dropped range that comes again is taken again, and the
    sessions stay exactly those of a core that remembered every range (facts are a set)."""
    rng = random.Random(5)
    events = [
        e if i % 3 else E.HardwareMouseClick(
            agent_id="a-x", seq=rng.randrange(10**12), ts=e.ts, input="hardware", user=e.user,
            domain=e.domain, host=e.host)
        for i, e in enumerate(_days(1))
    ]
    replayed = events + events[: len(events) // 2]  # half of them again, after the ranges were dropped
    with mock.patch.object(core_module, "MAX_SEEN_RANGES", 64):
        bounded, _, _ = _run(replayed)
        core = Sessionizer(LONG)
        st, _ = core.apply(USER, None, events)
        assert sum(len(r) for r in st.seen.values()) // 3 <= 64
    unbounded, _, _ = _run(replayed)
    assert bounded.final() == unbounded.final()
