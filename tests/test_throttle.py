"""The HID throttling rule (shared/spec/hid-throttle.md): the seed's examples and a property test against a
separately written reference implementation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.throttle import HidThrottle
from proto.events import HID_INPUT_CLASS, HID_TYPES

HID_NAMES = [c.__name__ for c in HID_TYPES]


def at(hms: str) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return datetime(2024, 3, 4, h, m, s, tzinfo=UTC)


def test_seed_example_1_gap_brackets_are_written() -> None:
    th = HidThrottle(timedelta(seconds=60))
    written = [w.ts for w in th.on_input(at("10:00:00"), "HardwareKeyboardEvent")]
    for s in (5, 9, 14, 20, 27, 31, 35):
        written += [w.ts for w in th.on_input(at(f"10:00:{s:02d}"), "HardwareKeyboardEvent")]
    out = th.on_input(at("10:05:20"), "HardwareMouseClick")
    written += [w.ts for w in out]
    assert written == [at("10:00:00"), at("10:00:35"), at("10:05:20")]
    # the earlier input keeps its own type and time; the new one has its own type
    assert [(w.ts, w.type) for w in out] == [
        (at("10:00:35"), "HardwareKeyboardEvent"),
        (at("10:05:20"), "HardwareMouseClick"),
    ]


def test_seed_example_2_window_switching_click_is_the_only_record() -> None:
    th = HidThrottle()
    assert [w.ts for w in th.on_input(at("15:00:30"), "HardwareMouseClick")] == [at("15:00:30")]
    assert th.on_input(at("15:00:55"), "HardwareMouseClick") == []
    # the click at 15:01:20 switches windows: the recorder writes that WindowSwitch with input=hardware
    assert th.on_input(at("15:01:20"), "HardwareMouseClick") == []
    th.on_written(at("15:01:20"), "hardware")
    # the UI write counts as the last write of the hardware class ...
    assert th.on_input(at("15:02:00"), "HardwareMouseClick") == []
    assert [w.ts for w in th.on_input(at("15:02:20"), "HardwareMouseClick")] == [at("15:02:20")]


def test_seed_example_2_other_order_ui_written_first() -> None:
    th = HidThrottle()
    th.on_input(at("15:00:30"), "HardwareMouseClick")
    th.on_input(at("15:00:55"), "HardwareMouseClick")
    th.on_written(at("15:01:20"), "hardware")
    assert th.on_input(at("15:01:20"), "HardwareMouseClick") == []


def test_hardware_and_injected_are_independent() -> None:
    th = HidThrottle()
    assert len(th.on_input(at("09:00:00"), "HardwareMouseClick")) == 1
    assert [w.type for w in th.on_input(at("09:00:01"), "InjectedKeyboardEvent")] == ["InjectedKeyboardEvent"]
    assert th.on_input(at("09:00:02"), "HardwareMouseScroll") == []
    assert th.on_input(at("09:00:03"), "InjectedMouseClick") == []
    th.on_written(at("09:00:10"), "injected")
    assert th.on_input(at("09:01:01"), "InjectedMouseClick") == []  # 51 s after the injected UI write
    # 59 s after the last hardware input, 61 s after the last hardware write
    assert [w.ts for w in th.on_input(at("09:01:01"), "HardwareMouseClick")] == [at("09:01:01")]


def test_ui_write_for_the_last_input_counts_as_writing_it() -> None:
    th = HidThrottle()
    th.on_input(at("10:00:00"), "HardwareMouseClick")
    th.on_input(at("10:00:30"), "HardwareMouseClick")  # not written
    th.on_written(at("10:00:30"), "hardware")  # ... but that click switched windows
    out = th.on_input(at("10:05:00"), "HardwareKeyboardEvent")
    assert [w.ts for w in out] == [at("10:05:00")]


def test_bad_type_and_interval_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown HID type"):
        HidThrottle().on_input(at("10:00:00"), "MouseClick")
    with pytest.raises(ValueError):
        HidThrottle(timedelta(0))
    HidThrottle().on_written(at("10:00:00"), "none")  # ignored


# ---- property test against a reference written from the spec's words ---------------------------------


class Reference:
    """The spec read literally, with an explicit log of every input (and whether it was written) and of
    every write per class."""

    def __init__(self, m: timedelta) -> None:
        self.m = m
        # per class: [time, type, written?] for every input seen, in order
        self.inputs: dict[str, list[list]] = {"hardware": [], "injected": []}
        self.written_times: dict[str, list[datetime]] = {"hardware": [], "injected": []}

    def on_input(self, ts: datetime, typ: str) -> list[tuple[datetime, str]]:
        c = HID_INPUT_CLASS[typ]
        seen = self.inputs[c]
        entry = [ts, typ, False]
        out: list[list] = []
        if seen and ts - seen[-1][0] >= self.m:
            if not seen[-1][2]:
                out.append(seen[-1])
            out.append(entry)
        elif not self.written_times[c] or ts - max(self.written_times[c]) >= self.m:
            out.append(entry)
        for w in out:
            w[2] = True
            self.written_times[c].append(w[0])
        seen.append(entry)
        return [(w[0], w[1]) for w in out]

    def on_written(self, ts: datetime, c: str) -> None:
        self.written_times[c].append(ts)
        if self.inputs[c] and self.inputs[c][-1][0] == ts:
            self.inputs[c][-1][2] = True


steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=150_000),  # ms since the previous step
        st.one_of(st.sampled_from(HID_NAMES), st.sampled_from(["ui:hardware", "ui:injected"])),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, interval_s=st.sampled_from([1, 30, 60]))
def test_matches_reference_and_keeps_gaps_visible(steps: list[tuple[int, str]], interval_s: int) -> None:
    m = timedelta(seconds=interval_s)
    th, ref = HidThrottle(m), Reference(m)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    written: dict[str, set[datetime]] = {"hardware": set(), "injected": set()}
    inputs: dict[str, list[datetime]] = {"hardware": [], "injected": []}
    for dt_ms, what in steps:
        t += timedelta(milliseconds=dt_ms)
        if what.startswith("ui:"):
            c = what[3:]
            th.on_written(t, c)
            ref.on_written(t, c)
            written[c].add(t)
            continue
        got = [(w.ts, w.type) for w in th.on_input(t, what)]
        assert got == ref.on_input(t, what)
        assert got == sorted(got, key=lambda w: w[0])
        c = HID_INPUT_CLASS[what]
        assert all(HID_INPUT_CLASS[typ] == c for _, typ in got)
        written[c].update(ts for ts, _ in got)
        inputs[c].append(t)
    # what users rely on: both ends of every pause >= M in one class's input are in the log
    for c, times in inputs.items():
        for a, b in itertools.pairwise(times):
            if b - a >= m:
                assert a in written[c] and b in written[c]
        if times:
            assert times[0] in written[c] or any(w <= times[0] for w in written[c])


# ---- a wall clock that steps backwards ----------------------------------------------------------------


def test_backwards_clock_step_never_writes_an_earlier_event() -> None:
    t = HidThrottle(timedelta(seconds=60))
    written = []
    written += t.on_input(at("10:00:00"), "HardwareKeyboardEvent")  # written
    written += t.on_input(at("10:00:30"), "HardwareKeyboardEvent")  # throttled
    # NTP steps the clock back ten minutes; without care the pause after 09:50:00 would write the
    # 09:50 input after the 10:00 one
    written += t.on_input(at("09:50:00"), "HardwareKeyboardEvent")
    written += t.on_input(at("09:52:00"), "HardwareKeyboardEvent")
    written += t.on_input(at("09:52:00"), "InjectedMouseClick")
    # the stepped-back inputs count as happening at the latest time seen (10:00:30)
    assert [(w.ts, w.type) for w in written] == [
        (at("10:00:00"), "HardwareKeyboardEvent"), (at("10:00:30"), "InjectedMouseClick"),
    ]
    # once the clock is past the latest time again, gaps are visible as before, in time order
    written += t.on_input(at("10:02:00"), "HardwareKeyboardEvent")
    assert [w.ts for w in written[2:]] == [at("10:00:30"), at("10:02:00")]
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(written)), written


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-3600, 400), st.sampled_from(HID_NAMES)), min_size=1, max_size=60))
def test_written_events_are_in_time_order_whatever_the_clock_does(
    steps: list[tuple[int, str]],
) -> None:
    # per input class, across calls (the classes are independent: the late write of rule 1 may be earlier
    # than the other class's last write, as hid-throttle.md says)
    t = HidThrottle(timedelta(seconds=60))
    now = at("10:00:00")
    written = []
    for delta, name in steps:
        now += timedelta(seconds=delta)  # negative: the clock stepped back
        written += t.on_input(now, name)
    for cls in ("hardware", "injected"):
        mine = [w.ts for w in written if w.input == cls]
        assert all(a <= b for a, b in itertools.pairwise(mine)), mine

