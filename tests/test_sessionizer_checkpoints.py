"""Where the core resumes from (``docs/sessions.md``, "Incremental recomputation"): an event a little before
the latest fact taken (a raw topic consumed a few seconds behind the others, a heartbeat's last input just
before the latest input event) must resume from a checkpoint, not recompute the presence period, which for
a desk that stays logged on is its whole retention horizon. Counted, not timed (``bench/bench_trickle.py``
measures the time); the sessions themselves are checked against the reference by the property tests."""

from __future__ import annotations

from bisect import bisect_left
from contextlib import ExitStack
from unittest import mock

from bench.bench_trickle import trickled
from stream.core import Sessionizer, SessionizerConfig, UserState
from stream.core import compute as compute_module
from stream.core import sessionizer as core_module
from tests.sessionizer_helpers import Consumer


def _trickle(keep_older: bool, extend_fast: bool = False) -> tuple[int, int, Consumer]:
    """Two days of history, then the third day one event per call with presence events up to 20 s late:
    the computations made from a cut, the facts they scanned, and the consumer's view. ``extend_fast``:
    events that only extend the open chain or the open inactive rest are settled without a computation
    (the default of the core; off here unless asked, so that every settle shows where it resumes from)."""
    history, last = trickled(3, 20.0, seed=2)
    core = Sessionizer(SessionizerConfig(retention_s=4 * 86_400), extend_fast=extend_fast)
    consumer = Consumer()
    st: UserState | None = None
    for i in range(0, len(history), 200):
        st, update = core.apply("corp\\user1", st, history[i : i + 200])
        consumer.apply(update.upserts, update.retractions)
    cuts = [0, 0]
    real = compute_module.compute

    def counting(state: UserState, c: int, *args: object, **kwargs: object) -> compute_module.Result:
        if args[3] is None:
            cuts[0] += 1
            cuts[1] += len(state.ts) - bisect_left(state.ts, c)
        return real(state, c, *args, **kwargs)  # type: ignore[arg-type]

    with ExitStack() as patches:
        patches.enter_context(mock.patch.object(core_module, "compute", counting))
        if not keep_older:
            patches.enter_context(mock.patch.object(core_module, "_older_checkpoints", lambda *a: []))
        for e in last:
            st, update = core.apply("corp\\user1", st, [e])
            consumer.apply(update.upserts, update.retractions)
    return cuts[0], cuts[1], consumer


def test_a_slightly_late_event_resumes_from_a_checkpoint_not_from_the_period_start() -> None:
    cuts, scanned, kept = _trickle(keep_older=True)
    assert cuts <= 3, cuts  # (a new presence period may start from its own cut)
    # Without the older checkpoints (only the latest computation's), the same trickle recomputes from the
    # start of the presence period over a hundred times, days of facts each: what this test guards.
    old_cuts, old_scanned, dropped = _trickle(keep_older=False)
    assert old_cuts > 50 and old_scanned > 100 * max(scanned, 1)
    assert kept.final() == dropped.final()  # the same sessions either way
    # Settling the events that only extend what is open without a computation keeps the checkpoints before
    # them: the late events still resume from one of them.
    fast_cuts, _, fast = _trickle(keep_older=True, extend_fast=True)
    assert fast_cuts <= 3, fast_cuts
    assert fast.final() == kept.final()
