"""The incremental core, fed in any order, batching and duplication and then closed, publishes exactly the
sessions of the straightforward reference implementation (tests/reference_sessions.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from unittest import mock

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.clock import epoch_ms
from proto.events import Envelope, StateChange
from stream.core import Sessionizer, SessionizerConfig, decode_state, encode_state
from stream.core import sessionizer as core_module
from stream.core.state import NO_TIME
from tests.reference_sessions import reference_sessions
from tests.sessionizer_helpers import USER, Builder, Consumer, assert_same_but_checkpoints, at

T0 = at(9, 0)

# (type, input strategy) with weights by repetition: heartbeats and input dominate, like real streams.
TYPES = (
    ["Heartbeat"] * 6
    + ["HardwareMouseClick", "HardwareKeyboardEvent", "WindowSwitch"] * 2
    + [
        "InjectedMouseClick",
        "WindowUpdate",
        "Lock",
        "Unlock",
        "Logoff",
        "Logon",
        "Suspend",
        "Resume",
        "AgentStop",
        "AgentStart",
        "StateChange",
        "StateChange",
    ]
)

# Times: a coarse grid (so equal timestamps are common) plus an occasional millisecond offset.
offsets = st.tuples(st.integers(0, 160), st.sampled_from([0, 0, 0, 1, 999]))


# A desktop agent's stream with no legacy reports: input and heartbeats, now and then a window event, a lock
# or another break (where the core can settle events that only extend the open chain without computing).
DESK_TYPES = (
    ["Heartbeat"] * 5
    + ["HardwareMouseClick", "HardwareKeyboardEvent"] * 4
    + ["WindowSwitch", "WindowUpdate", "InjectedMouseClick", "Lock", "Unlock", "Suspend", "Resume"]
)

# A legacy client's stream: mostly its working/stopped reports (repeats included: restarts), a few events of
# a desktop agent of the same user around them.
LEGACY_TYPES = ["StateChange"] * 6 + ["Heartbeat", "HardwareKeyboardEvent", "Lock", "Logoff", "Suspend"]


@st.composite
def event_specs(
    draw: Any, types: list[str] = TYPES, steps: tuple[int, ...] = (20, 45, 60), ahead: int = 0
) -> list[dict[str, Any]]:
    """Events of one user; ``ahead``: a heartbeat's last input may be up to that many seconds after it (an
    agent whose input clock runs ahead)."""
    n = draw(st.integers(0, 45))
    step = draw(st.sampled_from(steps))
    specs = []
    for _ in range(n):
        type_ = draw(st.sampled_from(types))
        k, ms = draw(offsets)
        spec: dict[str, Any] = {"type": type_, "ts": T0 + timedelta(seconds=k * step, milliseconds=ms)}
        host = draw(st.sampled_from(["pc1", "pc1", "pc2"]))
        spec["host"] = host
        spec["agent"] = "gateway" if type_ == "StateChange" else f"agent-{host}"
        spec["tz"] = draw(st.sampled_from(["Europe/Paris", "Europe/Paris", "America/New_York"]))
        if type_.startswith("Hardware"):
            spec["input_"] = "hardware"
        elif type_.startswith("Injected"):
            spec["input_"] = "injected"
        else:
            spec["input_"] = draw(st.sampled_from(["none", "none", "hardware", "injected"]))
        if type_ == "Heartbeat":
            lit = draw(st.one_of(st.none(), st.integers(-ahead, 600)))
            spec["last_input_ts"] = None if lit is None else spec["ts"] - timedelta(seconds=lit)
        if type_ == "StateChange":
            spec["state"] = draw(st.sampled_from(["working", "stopped"]))
        specs.append(spec)
    return specs


def build(specs: list[dict[str, Any]]) -> list[Envelope]:
    b = Builder()
    for s in specs:
        s = dict(s)
        b.add(s.pop("type"), s.pop("ts"), **s)
    return b.events


def feed(
    core: Sessionizer,
    events: list[Envelope],
    order: list[int],
    cuts: list[int],
    dups: list[int],
    roundtrip: bool,
) -> Consumer:
    stream = [events[i] for i in order] + [events[i % len(events)] for i in dups if events]
    consumer = Consumer()
    state = None
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        batch = stream[start:cut]
        start = max(start, cut)
        if not batch:
            continue
        state, update = core.apply(USER, state, batch)
        assert not update.late
        # The bound that spares reading the published keys is never below one of them.
        assert state.pub_bound >= max(state.pub, default=NO_TIME)
        # The encoder's copy of the published keys (``UserState.pub_raw``, kept across updates) is never
        # stale: what is written is what the state holds.
        assert decode_state(encode_state(state, 4)).pub == state.pub
        consumer.apply(update.upserts, update.retractions)
        if roundtrip:
            state = decode_state(encode_state(state))
    if state is not None:
        state, update = core.close(USER, state)
        consumer.apply(update.upserts, update.retractions)
        assert core.open_sessions(state) == 0
    return consumer


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=event_specs(),
    data=st.data(),
    gp=st.sampled_from([(300.0, 180.0), (120.0, 180.0), (60.0, 60.0)]),
    cap=st.sampled_from([14400.0, 1800.0, 400.0, 90.0]),
    roundtrip=st.booleans(),
)
def test_incremental_core_equals_reference(
    specs: list[dict[str, Any]], data: Any, gp: tuple[float, float], cap: float, roundtrip: bool
) -> None:
    events = build(specs)
    n = len(events)
    order = data.draw(st.permutations(range(n)))
    dups = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=6)) if n else []
    cuts = data.draw(st.lists(st.integers(0, n + len(dups)), max_size=8))
    core = Sessionizer(SessionizerConfig(gap_s=gp[0], presence_timeout_s=gp[1], legacy_max_span_s=cap))
    consumer = feed(core, events, order, cuts, dups, roundtrip)
    got = consumer.final()
    want = reference_sessions(USER, events, gp[0], gp[1], cap)
    assert len({s.session_id for s in want}) == len(want)
    assert len({s.session_id for s in got}) == len(got)
    assert got == want


@settings(max_examples=60, deadline=None)
@given(specs=event_specs(), data=st.data())
def test_in_order_one_by_one_equals_reference(specs: list[dict[str, Any]], data: Any) -> None:
    """The common streaming case: events arrive in time order, one per batch."""
    events = build(specs)
    order = sorted(range(len(events)), key=lambda i: events[i].ts)
    consumer = feed(Sessionizer(), events, order, list(range(len(events))), [], False)
    assert consumer.final() == reference_sessions(USER, events)


@settings(max_examples=150, deadline=None)
@given(specs=event_specs(), data=st.data())
def test_nearly_in_order_small_batches_equal_reference(specs: list[dict[str, Any]], data: Any) -> None:
    """Like the worker sees it (three topics consumed at slightly different paces): mostly in order, a few
    events shifted by up to a few minutes, small batches. This is where the core resumes from checkpoints."""
    events = build(specs)
    jitter = [data.draw(st.sampled_from([0, 0, 0, 30, -30, 200])) for _ in events]
    order = sorted(range(len(events)), key=lambda i: events[i].ts.timestamp() + jitter[i])
    cuts = data.draw(st.lists(st.integers(0, len(events)), min_size=len(events) // 2, max_size=len(events)))
    consumer = feed(Sessionizer(), events, order, cuts, [], data.draw(st.booleans()))
    assert consumer.final() == reference_sessions(USER, events)


@settings(max_examples=200, deadline=None)
@given(
    specs=event_specs(LEGACY_TYPES),
    data=st.data(),
    cap=st.sampled_from([14400.0, 1200.0, 400.0, 90.0]),
)
def test_legacy_span_end_equals_reference(specs: list[dict[str, Any]], data: Any, cap: float) -> None:
    """Legacy reports (rule 1.3's span end: next report, capped at L, or at G after a repeated state), in
    order or shuffled, in small batches: the incremental core equals the reference."""
    events = build(specs)
    n = len(events)
    if data.draw(st.booleans()):
        order = sorted(range(n), key=lambda i: events[i].ts)
    else:
        order = data.draw(st.permutations(range(n)))
    cuts = data.draw(st.lists(st.integers(0, n), max_size=n))
    core = Sessionizer(SessionizerConfig(legacy_max_span_s=cap))
    consumer = feed(core, events, order, cuts, [], data.draw(st.booleans()))
    assert consumer.final() == reference_sessions(USER, events, legacy_max_span_s=cap)


@settings(max_examples=120, deadline=None)
@given(specs=event_specs(), data=st.data())
def test_taking_events_one_by_one_then_settling_is_applying_the_batch(
    specs: list[dict[str, Any]], data: Any
) -> None:
    """``desktrace-sessionize`` takes each event into its user's facts as it reads it and settles now and
    then; the stream applies whole batches. Both give the same updates (sessions, retractions, late events,
    duplicates) and the same state, batch after batch, on shuffled input with duplicates and a retention
    short enough that some events are late."""
    events = build(specs)
    n = len(events)
    stream = [events[i] for i in data.draw(st.permutations(range(n)))]
    stream += [events[i] for i in data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=6))] if n else []
    cuts = [*sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))), len(stream)]
    core = Sessionizer(SessionizerConfig(retention_s=1800.0))
    whole = parts = None
    start = 0
    for cut in cuts:
        batch, start = stream[start:cut], max(start, cut)
        whole, want = core.apply(USER, whole, batch)
        intake = core.intake(parts)
        late = [e for e in batch if not core.take_one(intake, epoch_ms(e.ts), e)]
        parts, got = core.settle(USER, intake)
        assert late == want.late
        assert got == msgspec.structs.replace(want, late=[])  # the late ones stay with the caller
        assert encode_state(parts) == encode_state(whole)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.one_of(event_specs(DESK_TYPES, (2, 5, 10)), event_specs(DESK_TYPES, (2, 5, 10), 600),
                    event_specs(DESK_TYPES), event_specs()),
    data=st.data(),
    gp=st.sampled_from([(300.0, 180.0), (120.0, 180.0), (60.0, 60.0), (60.0, 600.0)]),
    roundtrip=st.booleans(),
)
def test_settling_a_chain_extension_without_a_computation_changes_no_update(
    specs: list[dict[str, Any]], data: Any, gp: tuple[float, float], roundtrip: bool
) -> None:
    """A settle whose new facts only extend the open chain skips the computation (``Sessionizer._extend``):
    update after update, it publishes, retracts and counts exactly what the computation does (nothing
    closes early or late, nothing is corrected), and leaves the same state but for the checkpoints; so do
    the closes at the end. Mostly in order, as a live worker sees it, in small batches, sometimes shuffled."""
    events = build(specs)
    n = len(events)
    if data.draw(st.booleans()):
        jitter = [data.draw(st.sampled_from([0, 0, 0, 0, 30, -30, 200])) for _ in events]
        order = sorted(range(n), key=lambda i: events[i].ts.timestamp() + jitter[i])
    else:
        order = data.draw(st.permutations(range(n)))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, n), max_size=n))))
    config = SessionizerConfig(gap_s=gp[0], presence_timeout_s=gp[1])
    fast, full = Sessionizer(config), Sessionizer(config, extend_fast=False)
    stream = [events[i] for i in order]
    a = b = None
    start = 0
    for cut in [*cuts, n]:
        batch, start = stream[start:cut], max(start, cut)
        if not batch:
            continue
        a, got = fast.apply(USER, a, batch)
        b, want = full.apply(USER, b, batch)
        assert got == want
        assert_same_but_checkpoints(a, b)
        if roundtrip:
            a, b = decode_state(encode_state(a)), decode_state(encode_state(b))
    if a is not None and b is not None:
        a, got = fast.close(USER, a)
        b, want = full.close(USER, b)
        assert got == want
        assert_same_but_checkpoints(a, b)


def test_a_desk_in_use_is_mostly_settled_without_a_computation() -> None:
    """What the fast path is for: a desk in use sends input and heartbeats every few seconds to minutes, and
    most settles (one or a few events each, as a live worker settles once per commit) only extend the open
    chain. A working day, in order, two events per settle: most settles skip the computation, and the
    sessions are the reference's."""
    from proto.keys import event_user_key
    from tests.support.events import generate_events

    day = generate_events(seed=4, users=3, hours=8)
    events = sorted((e for e in day if event_user_key(e) == "corp\\user1"), key=lambda e: e.ts)
    assert events and not any(isinstance(e, StateChange) for e in events)  # a desktop agent's user
    computed = [0]
    real = core_module.compute

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed[0] += 1
        return real(*args, **kwargs)

    consumer = Consumer()
    core = Sessionizer()
    state = None
    with mock.patch.object(core_module, "compute", counting):
        for i in range(0, len(events), 2):
            state, update = core.apply(USER, state, events[i : i + 2])
            consumer.apply(update.upserts, update.retractions)
        assert state is not None
        state, update = core.close(USER, state)
        consumer.apply(update.upserts, update.retractions)
    settles = (len(events) + 1) // 2
    assert computed[0] < settles / 2, (computed[0], settles)
    assert consumer.final() == reference_sessions(USER, events)


@st.composite
def desk_streams(draw: Any) -> list[dict[str, Any]]:
    """One desk's events in time order, spaced around the gap and the presence timeout (both 60 s in the
    test below) so that each condition of the fast path is met, missed and met exactly: mostly input and
    heartbeats (their last input before, at or a little after them), some events that are not evidence, a
    rare break, in some streams a rare legacy report."""
    busy = ["HardwareMouseClick"] * 5 + ["Heartbeat"] * 4 + ["WindowUpdate", "InjectedMouseClick", "Lock"]
    idle = ["HardwareMouseClick"] + ["Heartbeat"] * 3 + ["WindowUpdate"] * 3 + ["InjectedMouseClick"]
    legacy = [*busy, "StateChange"]  # and a legacy client of the same user, now and then
    types = draw(st.sampled_from([busy, idle, legacy]))  # at the desk, or mostly away from it, screen on
    lits = draw(st.sampled_from([[None, 0, 5, 30, 59, 60, 61], [None, None, 0, 30], [-5, -30, -60, 0, 10]]))
    t = T0
    specs = []
    for _ in range(draw(st.integers(1, 60))):
        t += timedelta(seconds=draw(st.sampled_from([0, 1, 10, 30, 59, 60, 61, 90, 119, 120, 121, 200])))
        type_ = draw(st.sampled_from(types))
        spec: dict[str, Any] = {"type": type_, "ts": t, "host": "pc1", "agent": "agent-pc1"}
        spec["input_"] = {"H": "hardware", "I": "injected"}.get(type_[0], "none")
        if type_ == "StateChange":
            spec["agent"], spec["state"] = "gateway", draw(st.sampled_from(["working", "stopped"]))
        if type_ == "Heartbeat":
            lit = draw(st.sampled_from(lits))
            spec["last_input_ts"] = None if lit is None else t - timedelta(seconds=lit)
        specs.append(spec)
    return specs


@settings(max_examples=400, deadline=None)
@given(specs=desk_streams(), data=st.data())
def test_a_desk_settled_a_few_events_at_a_time_is_the_same_with_and_without_the_fast_path(
    specs: list[dict[str, Any]], data: Any
) -> None:
    """Where the fast path runs most: one desk, in order, one to three events per settle, times on the gap
    and the presence timeout and either side of them. Every update and every state (but the checkpoints)
    is the computation's."""
    events = build(specs)
    config = SessionizerConfig(gap_s=60.0, presence_timeout_s=60.0)
    fast, full = Sessionizer(config), Sessionizer(config, extend_fast=False)
    consumer = Consumer()
    a = b = None
    i = 0
    while i < len(events):
        k = data.draw(st.integers(1, 3))
        batch, i = events[i : i + k], i + k
        a, got = fast.apply(USER, a, batch)
        b, want = full.apply(USER, b, batch)
        assert got == want
        assert_same_but_checkpoints(a, b)
        consumer.apply(got.upserts, got.retractions)
    assert a is not None and b is not None
    a, got = fast.close(USER, a)
    b, want = full.close(USER, b)
    assert got == want
    consumer.apply(got.upserts, got.retractions)
    assert consumer.final() == reference_sessions(USER, events, 60.0, 60.0)
