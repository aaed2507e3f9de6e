"""The synthetic fleet: deterministic, realistic days, the real recorder's rules visible in its output."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from agent.simulator import Fleet, make_users, parse_duration, parse_start, write_jsonl
from proto.codec import read_jsonl
from proto.events import HID_INPUT_CLASS, Envelope, Heartbeat

MONDAY = datetime(2024, 3, 4, tzinfo=UTC)


def run(users: int, seed: int, days: float = 1.0) -> bytes:
    buf = io.BytesIO()
    write_jsonl(Fleet(make_users(users, seed), MONDAY, timedelta(days=days)), buf)
    return buf.getvalue()


def events_of(data: bytes) -> list[Envelope]:
    out = []
    for _, e in read_jsonl(data.splitlines()):
        assert isinstance(e, Envelope), e
        out.append(e)
    return out


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = run(3, 7, 0.5), run(3, 7, 0.5), run(3, 8, 0.5)
    assert a == b
    assert a != c


def test_realistic_days_for_a_fleet() -> None:
    evs = events_of(run(16, 42, days=2))
    per_agent: dict[str, list[Envelope]] = defaultdict(list)
    for e in evs:
        per_agent[e.agent_id].append(e)
    assert len(per_agent) >= 14  # users far east or west may be outside the two UTC days at the edges
    assert len({e.tz for e in evs}) >= 5
    assert len({(e.domain, e.user) for e in evs}) == len(per_agent)
    types = {e.type for e in evs}
    assert {
        "WindowOpen",
        "WindowSwitch",
        "WindowUpdate",
        "SheetOpen",
        "DocumentOpen",
        "DocumentSave",
    } <= types
    assert {"Lock", "Unlock", "Logon", "Logoff", "AgentStart", "AgentStop", "Heartbeat"} <= types
    assert {"HardwareKeyboardEvent", "HardwareMouseClick", "HardwareMouseScroll"} <= types
    assert any(e.input == "injected" for e in evs), "some users run RPA robots"
    assert any(e.url.startswith("https://") for e in evs if hasattr(e, "url"))
    for agent_id, mine in per_agent.items():
        seqs = [e.seq for e in mine]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), agent_id  # +1 per event, in write order
        running = False
        asleep = False
        for e in mine:
            if e.type == "AgentStart":
                running = True
            elif e.type == "AgentStop":
                running = False
            elif e.type == "Suspend":
                asleep = True
            elif e.type == "Resume":
                asleep = False
            elif isinstance(e, Heartbeat):
                assert running and not asleep, "no heartbeat from a stopped agent or a sleeping machine"
                assert e.last_input_ts is None or e.last_input_ts <= e.ts
        # a working day is 7-10 hours long, local time
        starts = [e.ts for e in mine if e.type == "Logon"]
        ends = [e.ts for e in mine if e.type == "Logoff"]
        for s in starts:
            after = [t for t in ends if t > s]
            if not after:
                continue  # the window ends during that day
            t = after[0]
            assert timedelta(hours=6) < t - s < timedelta(hours=11)
            local = s.astimezone(__import__("zoneinfo").ZoneInfo(mine[0].tz))
            assert 6 <= local.hour <= 11


def test_hid_events_follow_the_throttle() -> None:
    """In the written log, per input class: an HID event less than M after the previous write of its class
    (HID, or UI with that input) is only ever the last input before a pause of at least M (rule 1 writes
    it late): the next HID write of the class comes M or more after it."""
    evs = events_of(run(6, 3))
    m = timedelta(seconds=60)
    by_agent: dict[str, list[Envelope]] = defaultdict(list)
    for e in evs:
        by_agent[e.agent_id].append(e)
    close_ones = 0
    hid_total = 0
    for mine in by_agent.values():
        for cls in ("hardware", "injected"):
            writes = sorted(
                (e.ts, e.type in HID_INPUT_CLASS)
                for e in mine
                if (HID_INPUT_CLASS.get(e.type) == cls) or (e.type not in HID_INPUT_CLASS and e.input == cls)
            )
            for i, (ts, is_hid) in enumerate(writes):
                if not is_hid:
                    continue
                hid_total += 1
                if i and ts - writes[i - 1][0] < m:
                    close_ones += 1
                    later = [w for w, h in writes[i + 1 :] if h]
                    if later:
                        assert later[0] - ts >= m, (cls, ts)
    assert hid_total > 50
    assert 0 < close_ones < hid_total  # both kinds occur in a realistic day


def test_duration_and_start_parsing() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("8h") == timedelta(hours=8)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_start("2024-03-04") == MONDAY
    assert parse_start("2024-03-04T06:00+01:00") == MONDAY + timedelta(hours=5)
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="bad start"):
        parse_start("yesterday")
