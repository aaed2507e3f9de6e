"""Pruning a user who never leaves presence: a desk logged on and locked overnight, with heartbeats, is one
presence period for days, so the retention horizon never gives a hard cut. The core then cuts inside the
period (``Sessionizer._soft_cut``); the published sessions must be exactly those of a core that keeps
everything, and the state must stay bounded."""

from __future__ import annotations

import random

import pytest

from bench.bench_sessionizer import user_day
from proto.events import Envelope
from stream.core import Sessionizer, SessionizerConfig, decode_state, encode_state
from tests.sessionizer_helpers import Consumer

DAYS = 5
KEEP_ALL = SessionizerConfig(retention_s=30 * 86_400)  #: no pruning within the test's days
ONE_DAY = SessionizerConfig(retention_s=86_400)


def _view(consumer: Consumer) -> dict[str, object]:
    return {s.session_id: s for s in consumer.sessions.values()}


def _feed(core: Sessionizer, events: list[Envelope], batch: int, codec: bool) -> tuple[Consumer, int, int]:
    """Feed ``events`` in batches; returns the consumer's view after a final close, the largest number of
    facts the state held, and the state's floor."""
    consumer = Consumer()
    st = None
    most = 0
    for i in range(0, len(events), batch):
        st, update = core.apply("corp\\user1", st, events[i : i + batch])
        assert not update.late
        consumer.apply(update.upserts, update.retractions)
        most = max(most, len(st.ts))
        if codec:
            st = decode_state(encode_state(st))
    assert st is not None
    st, update = core.close("corp\\user1", st)
    consumer.apply(update.upserts, update.retractions)
    return consumer, most, st.floor


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_always_present_user_is_pruned_and_publishes_the_same_sessions(seed: int) -> None:
    rng = random.Random(seed)
    events = [e for day in range(DAYS) for e in user_day(1, rng, day)]
    # nearly in order: neighbours swapped, as a real stream delivers them
    for i in range(0, len(events) - 1, 7):
        if rng.random() < 0.3:
            events[i], events[i + 1] = events[i + 1], events[i]
    kept, kept_most, kept_floor = _feed(Sessionizer(KEEP_ALL), events, 50, False)
    pruned, most, floor = _feed(Sessionizer(ONE_DAY), events, 50, seed == 2)
    assert _view(pruned) == _view(kept)
    assert floor > kept_floor  # it was cut (the other never is)
    assert most < kept_most * 0.6, (most, kept_most)  # bounded by the horizon, not by the days


@pytest.mark.parametrize("seed", [4, 5])
def test_late_events_within_the_horizon_across_a_cut_change_nothing(seed: int) -> None:
    """Events up to a few hours late (far inside the 1-day horizon), in larger batches: every cut is
    older than the horizon, so none of them is late, and the sessions are the same again."""
    rng = random.Random(seed)
    events = [e for day in range(DAYS) for e in user_day(1, rng, day)]
    keyed = [(i + (rng.randint(1, 300) if rng.random() < 0.1 else 0), i, e) for i, e in enumerate(events)]
    keyed.sort(key=lambda x: (x[0], x[1]))
    events = [e for _, _, e in keyed]
    kept, _, _ = _feed(Sessionizer(KEEP_ALL), events, 200, False)
    pruned, _, floor = _feed(Sessionizer(ONE_DAY), events, 200, True)
    assert floor > 0
    assert _view(pruned) == _view(kept)
