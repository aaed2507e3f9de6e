"""The incremental core, fed in any order, batching and duplication and then closed, publishes exactly the
sessions of the straightforward reference implementation (tests/reference_sessions.py)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.clock import epoch_ms
from proto.events import Envelope, Heartbeat, StateChange
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


def settled_counting_computations(events: list[Envelope], per_settle: int = 1) -> tuple[Consumer, int]:
    """``events`` settled ``per_settle`` at a time (one: as a live worker at ordinary load settles them),
    then closed: what a consumer ends with, and how many settles ran the computation."""
    computed = [0]
    real = core_module.compute

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed[0] += 1
        return real(*args, **kwargs)

    consumer = Consumer()
    core = Sessionizer()
    state = None
    with mock.patch.object(core_module, "compute", counting):
        for i in range(0, len(events), per_settle):
            state, update = core.apply(USER, state, events[i : i + per_settle])
            consumer.apply(update.upserts, update.retractions)
        assert state is not None
        state, update = core.close(USER, state)
        consumer.apply(update.upserts, update.retractions)
    return consumer, computed[0]


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
    consumer, computed = settled_counting_computations(events, per_settle=2)
    settles = (len(events) + 1) // 2
    assert computed < settles / 2, (computed, settles)
    assert consumer.final() == reference_sessions(USER, events)


def test_a_late_event_at_the_open_parts_first_instant_corrects_the_session_published_before_it() -> None:
    """The fast paths take only facts after the start of what is open: a session published before it ends
    at that instant, so a fact there (from a second machine, late) changes that session's hosts, and only
    the computation publishes the correction. Both cases: the open part is a chain (the idle time before
    it was published) or the inactive rest after a published chain."""
    config = SessionizerConfig(gap_s=60.0, presence_timeout_s=60.0)
    for open_part in ("chain", "inactive rest"):
        b = Builder()
        b.add("HardwareMouseClick", at(9, 0), input_="hardware", agent="agent-pc1")
        for k in range(1, 7):  # the chain at 9:00 closes at 9:02 (G + P after it)
            b.add("Heartbeat", at(9, 0) + timedelta(seconds=30 * k), agent="agent-pc1")
        if open_part == "chain":
            b.add("HardwareMouseClick", at(9, 3), input_="hardware", agent="agent-pc1")
            b.add("HardwareMouseClick", at(9, 3, 30), input_="hardware", agent="agent-pc1")
        first_instant = at(9, 3) if open_part == "chain" else at(9, 0)
        late = b.add("WindowUpdate", first_instant, agent="agent-pc2", host="pc2")
        fast, full = Sessionizer(config), Sessionizer(config, extend_fast=False)
        a = c = None
        for e in b.events:
            a, got = fast.apply(USER, a, [e])
            c, want = full.apply(USER, c, [e])
            assert got == want
        corrected = got.upserts
        assert [(s.start, s.end, s.hosts) for s in corrected] == [
            (at(9, 0), first_instant, ["pc1", "pc2"])
        ], (open_part, late, corrected)


def test_a_desk_left_locked_overnight_is_mostly_settled_without_a_computation() -> None:
    """What the idle fast path is for: a desk left logged on sends a heartbeat a minute and nothing else,
    for hours (locked overnight, or idle with the screen on). Half an hour of work, a lock, ten hours of
    heartbeats, an unlock and another half hour; each event settled alone, the heartbeats arriving in time
    or up to 20 s after the input around them (raw topics read at slightly different paces): of the 842
    settles, a handful compute (every one without the fast paths), and the sessions are the reference's."""
    b = Builder()

    def work(start: datetime, minutes: int) -> None:  # input three times a minute, a heartbeat a minute
        for k in range(minutes):
            m = start + timedelta(minutes=k)
            for s in (5, 25, 45):
                b.add("HardwareKeyboardEvent", m + timedelta(seconds=s), input_="hardware")
            b.add("Heartbeat", m + timedelta(seconds=59), last_input_ts=m + timedelta(seconds=45))

    work(at(18, 0), 30)
    b.add("Lock", at(18, 30))
    for k in range(600):  # the agent's last input stays the one before the lock
        b.add("Heartbeat", at(18, 30) + timedelta(minutes=k, seconds=59), last_input_ts=at(18, 29, 45))
    morning = at(18, 30) + timedelta(hours=10)
    b.add("Unlock", morning, input_="hardware")
    work(morning, 30)
    for late_s in (0, 20):
        rng = random.Random(late_s)
        late = [rng.uniform(0, late_s) if isinstance(e, Heartbeat) else 0.0 for e in b.events]
        order = sorted(range(len(b.events)), key=lambda i: b.events[i].ts + timedelta(seconds=late[i]))
        events = [b.events[i] for i in order]
        consumer, computed = settled_counting_computations(events)
        assert computed < 20, (late_s, computed, len(events))
        assert consumer.final() == reference_sessions(USER, events)


@st.composite
def desk_streams(draw: Any) -> list[dict[str, Any]]:
    """One desk's events in time order, spaced around the gap and the presence timeout (both 60 s in the
    test below) so that each condition of the fast paths is met, missed and met exactly: mostly input and
    heartbeats (their last input before, at or a little after them), some events that are not evidence, a
    rare break, in some streams a rare legacy report; or a desk left alone (heartbeats for long stretches,
    locked or not, now and then a break that ends presence); one machine or two."""
    busy = ["HardwareMouseClick"] * 5 + ["Heartbeat"] * 4 + ["WindowUpdate", "InjectedMouseClick", "Lock"]
    idle = ["HardwareMouseClick"] + ["Heartbeat"] * 3 + ["WindowUpdate"] * 3 + ["InjectedMouseClick"]
    away = ["Heartbeat"] * 12 + ["WindowUpdate", "HardwareMouseClick", "Lock", "Unlock", "Suspend", "Resume"]
    legacy = [*busy, "StateChange"]  # and a legacy client of the same user, now and then
    types = draw(st.sampled_from([busy, idle, away, legacy]))  # at the desk, mostly away, gone; legacy
    # A heartbeat's last input: some seconds before it (or after: an input clock ahead), or what a real
    # agent sends, the time of the desk's latest hardware input so far ("latest"; None before the first).
    lits = draw(st.sampled_from([
        [None, 0, 5, 30, 59, 60, 61], [None, None, 0, 30], [-5, -30, -60, 0, 10], ["latest"], ["latest", 0]
    ]))
    hosts = draw(st.sampled_from([["pc1"], ["pc1", "pc1", "pc2"]]))
    t = T0
    latest_input = None
    specs = []
    steps = [0, 1, 10, 30, 59, 60, 61, 90, 119, 120, 121, 200]
    if types is away:  # heartbeats a minute apart, now and then one missed or late
        steps = [0, 10, 30, 59, 60, 60, 60, 60, 61, 90, 121]
    for _ in range(draw(st.integers(1, 60))):
        t += timedelta(seconds=draw(st.sampled_from(steps)))
        type_ = draw(st.sampled_from(types))
        host = draw(st.sampled_from(hosts))
        spec: dict[str, Any] = {"type": type_, "ts": t, "host": host, "agent": f"agent-{host}"}
        spec["input_"] = next((c for c in ("hardware", "injected") if type_.lower().startswith(c)), "none")
        if type_ == "StateChange":
            spec["agent"], spec["state"] = "gateway", draw(st.sampled_from(["working", "stopped"]))
        if type_ == "Heartbeat":
            lit = draw(st.sampled_from(lits))
            spec["last_input_ts"] = (
                latest_input if lit == "latest" else None if lit is None else t - timedelta(seconds=lit)
            )
        if spec["input_"] == "hardware":
            latest_input = t
        specs.append(spec)
    return specs


def arrival(specs: list[dict[str, Any]], data: Any) -> list[int]:
    """The order a worker takes a desk's events in: in time order, or with the events that are not input
    (heartbeats, presence, window events) up to some seconds late, as when the raw topics are read at
    slightly different paces (then a settle brings facts before the latest one)."""
    late = data.draw(st.sampled_from([0, 0, 5, 30, 90]))
    delays = [0 if s["input_"] == "hardware" else data.draw(st.integers(0, late)) for s in specs]
    return sorted(range(len(specs)), key=lambda i: (specs[i]["ts"] + timedelta(seconds=delays[i]), i))


@settings(max_examples=400, deadline=None)
@given(specs=desk_streams(), data=st.data())
def test_a_desk_settled_a_few_events_at_a_time_is_the_same_with_and_without_the_fast_path(
    specs: list[dict[str, Any]], data: Any
) -> None:
    """Where the fast paths run most: one desk, one to three events per settle, in order or a little out
    of it, times on the gap and the presence timeout and either side of them. Every update and every
    state (but the checkpoints) is the computation's, and what is published is the reference's."""
    built = build(specs)
    events = [built[i] for i in arrival(specs, data)]
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
