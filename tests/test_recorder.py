"""The recorder: UI change detection, the window-switching click rule, heartbeats, privacy first, seq
continuity across a restart (with the real spool)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.identity import Identity
from agent.observations import InputObservation, PresenceObservation, WindowSnapshot
from agent.recorder import Recorder, SpoolState
from agent.spool import Spool, SpoolRecord
from proto.codec import decode_event, encode_event
from proto.events import Envelope, Heartbeat

IDENT = Identity(
    agent_id="a1", user="alice", domain="ACME", host="PC1", host_domain="acme.local", tz="Europe/Berlin"
)


def at(hms: str, day: int = 4) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return datetime(2024, 3, day, h, m, s, tzinfo=UTC)


def snap(ts: datetime, wid: str, **kw: object) -> WindowSnapshot:
    base: dict[str, object] = {"app": "firefox", "title": "Inbox"}
    base.update(kw)
    return WindowSnapshot(ts=ts, window_id=wid, **base)  # type: ignore[arg-type]


def click(ts: datetime, injected: bool = False) -> InputObservation:
    return InputObservation(ts=ts, kind="click", injected=injected)


def key(ts: datetime) -> InputObservation:
    return InputObservation(ts=ts, kind="key", injected=False)


def types(events: list[Envelope]) -> list[str]:
    return [e.type for e in events]


def test_ui_events_only_on_real_changes() -> None:
    r = Recorder(IDENT)
    assert types(r.start(at("09:00:00"))) == ["AgentStart"]
    assert types(r.observe(snap(at("09:00:01"), "w1", title="Inbox - Mail"))) == ["WindowOpen"]
    assert r.observe(snap(at("09:00:02"), "w1", title="Inbox - Mail")) == []  # nothing changed
    # a hierarchy change alone is not a change a person made
    assert r.observe(snap(at("09:00:03"), "w1", title="Inbox - Mail", hierarchy=[])) == []
    ev = r.observe(snap(at("09:00:04"), "w1", title="Report - Mail", url="https://mail/x"))
    assert types(ev) == ["WindowUpdate"] and ev[0].title == "Report - Mail"  # type: ignore[attr-defined]
    assert types(r.observe(snap(at("09:00:05"), "w2", app="excel", title="Budget.xlsx", sheet="Q1"))) == [
        "WindowOpen"
    ]
    assert types(r.observe(snap(at("09:00:06"), "w2", app="excel", title="Budget.xlsx", sheet="Q2"))) == [
        "SheetOpen"
    ]
    ev = r.observe(
        snap(at("09:00:07"), "w2", app="excel", title="Budget.xlsx", sheet="Q2", document_event="save")
    )
    assert types(ev) == ["DocumentSave"]
    # back to the mail window: a switch, carrying that window's current state
    ev = r.observe(snap(at("09:00:08"), "w1", title="Report - Mail", url="https://mail/x"))
    assert types(ev) == ["WindowSwitch"] and ev[0].url == "https://mail/x"  # type: ignore[attr-defined]
    ev = r.observe(snap(at("09:00:09"), "w3", app="word", title="a.docx", document_event="open"))
    assert types(ev) == ["WindowOpen", "DocumentOpen"]
    # a known window flagged new (same handle reused) is a WindowOpen again
    assert types(r.observe(snap(at("09:00:10"), "w3", app="word", title="b.docx", new_window=True))) == [
        "WindowOpen"
    ]


def test_click_that_changes_nothing_is_only_throttled_hid() -> None:
    r = Recorder(IDENT, heartbeat_interval=timedelta(hours=24))
    r.start(at("09:00:00"))
    r.observe(snap(at("09:00:01"), "w1"))
    out = r.observe(click(at("09:00:10")))
    out += r.tick(at("09:00:12"))  # the held click is released after the fold window
    assert types(out) == ["HardwareMouseClick"]
    assert out[0].title == "Inbox" and out[0].input == "hardware"  # type: ignore[attr-defined]
    assert r.observe(snap(at("09:00:20"), "w1")) == []
    assert r.observe(click(at("09:00:30"))) + r.tick(at("09:00:32")) == []


DAY = timedelta(hours=24)  # no heartbeats in the way


def test_seed_example_2_switching_click_is_written_as_the_window_switch() -> None:
    r = Recorder(IDENT, heartbeat_interval=DAY)
    r.start(at("15:00:00"))
    r.observe(snap(at("15:00:00"), "browser"))
    r.observe(snap(at("15:00:01"), "mail", app="outlook", title="Mail"))
    r.observe(snap(at("15:00:02"), "browser"))
    out = r.observe(click(at("15:00:30"))) + r.tick(at("15:00:32"))
    assert [(e.type, e.ts) for e in out] == [("HardwareMouseClick", at("15:00:30"))]
    assert r.observe(click(at("15:00:55"))) + r.tick(at("15:00:57")) == []
    # the click in another application: the source reports the click, then the foreground change
    out = r.observe(click(at("15:01:20")))
    out += r.observe(snap(at("15:01:20"), "mail", app="outlook", title="Mail"))
    out += r.tick(at("15:01:25"))
    assert [(e.type, e.ts, e.input) for e in out] == [("WindowSwitch", at("15:01:20"), "hardware")]


def typing_in_word_then_away() -> tuple[Recorder, list[Envelope]]:
    """A recorder that knows a browser window and has the Word window in front, after keys at 10:00:00,
    :10, :20 and :35; with the events those keys wrote."""
    r = Recorder(IDENT, heartbeat_interval=DAY)
    r.start(at("09:59:57"))
    r.observe(snap(at("09:59:57"), "doc", app="word", title="a.docx"))
    r.observe(snap(at("09:59:58"), "browser"))
    r.observe(snap(at("09:59:59"), "doc", app="word", title="a.docx"))
    out: list[Envelope] = []
    for s in (0, 10, 20, 35):
        out += r.observe(key(at(f"10:00:{s:02d}")))
    return r, out


def test_switching_click_after_a_pause_writes_the_gap_and_the_switch_not_a_duplicate() -> None:
    r, out = typing_in_word_then_away()
    # away; then a click in the browser that switches to it (source order: switch first, then the click)
    out += r.observe(snap(at("10:05:20"), "browser", input="hardware"))
    out += r.observe(click(at("10:05:20")))
    out += r.tick(at("10:05:30"))
    assert [(e.type, e.ts.strftime("%H:%M:%S")) for e in out] == [
        ("HardwareKeyboardEvent", "10:00:00"),
        ("HardwareKeyboardEvent", "10:00:35"),
        ("WindowSwitch", "10:05:20"),
    ]
    assert out[1].app == "word"  # type: ignore[attr-defined]  # HID carries the latest UI event's context
    assert out[2].input == "hardware"


def test_injected_rpa_click_switch_is_injected() -> None:
    r = Recorder(IDENT)
    r.start(at("10:00:00"))
    r.observe(snap(at("10:00:00"), "a"))
    r.observe(snap(at("10:00:01"), "b", app="sap", title="SAP"))
    out = r.observe(click(at("10:00:30"), injected=True))
    out += r.observe(snap(at("10:00:30"), "a"))
    assert [(e.type, e.input) for e in out] == [("WindowSwitch", "injected")]


def test_heartbeat_reports_latest_hardware_input_even_when_throttled() -> None:
    r = Recorder(IDENT, heartbeat_interval=timedelta(seconds=60))
    r.start(at("09:00:00"))
    assert r.tick(at("09:00:30")) == []
    hb = r.tick(at("09:01:00"), idle_ms=1234, spool=SpoolState(events=7, bytes=700, dropped=2))
    assert types(hb) == ["Heartbeat"]
    first = hb[0]
    assert isinstance(first, Heartbeat)
    assert first.last_input_ts is None and first.idle_ms == 1234
    assert (first.spool_events, first.spool_bytes, first.spool_dropped) == (7, 700, 2)
    r.observe(snap(at("09:01:01"), "w1"))
    r.observe(key(at("09:01:10")))  # written
    r.observe(key(at("09:01:40")))  # throttled away, but seen
    r.observe(InputObservation(ts=at("09:01:50"), kind="click", injected=True))  # injected: not a person
    out = r.tick(at("09:02:00"))
    hb2 = [e for e in out if isinstance(e, Heartbeat)]
    assert len(hb2) == 1 and hb2[0].last_input_ts == at("09:01:40")
    # after a long sleep only one heartbeat, then the interval restarts
    assert types(r.tick(at("09:30:00"))) == ["Heartbeat"]
    assert r.tick(at("09:30:30")) == []


def test_presence_and_envelope() -> None:
    r = Recorder(IDENT, next_seq=41)
    out = r.start(at("08:00:00", day=1))
    out += r.observe(PresenceObservation(ts=at("12:00:00", day=1), kind="Lock"))
    out += r.observe(PresenceObservation(ts=at("12:30:00", day=1), kind="Unlock", input="hardware"))
    out += r.stop(at("17:00:00", day=1))
    assert types(out) == ["AgentStart", "Lock", "Unlock", "AgentStop"]
    assert [e.seq for e in out] == [41, 42, 43, 44]
    e = out[0]
    assert (e.agent_id, e.user, e.domain, e.host, e.host_domain, e.tz) == (
        "a1",
        "alice",
        "ACME",
        "PC1",
        "acme.local",
        "Europe/Berlin",
    )
    assert e.utc_offset_min == 60  # 1 March: CET
    summer = Recorder(IDENT).start(at("08:00:00", day=31))[0]
    assert summer.utc_offset_min == 120  # 31 March 2024 08:00 UTC: CEST
    # naive times (Windows, pynput) are the machine's local time
    naive = datetime(2024, 3, 4, 9, 0, 0, 123456)
    ev = Recorder(IDENT).observe(snap(naive, "w"))
    assert ev[0].ts == naive.astimezone().astimezone(UTC).replace(microsecond=123000)


class ExcludeKeePass:
    def apply(self, s: WindowSnapshot) -> WindowSnapshot | None:
        return None if s.app == "keepass" else s


def test_privacy_filter_runs_first_and_excluded_windows_leave_no_trace() -> None:
    r = Recorder(IDENT, privacy=ExcludeKeePass())
    r.start(at("09:00:00"))
    r.observe(snap(at("09:00:01"), "w1", title="Secret plan"))
    assert r.observe(snap(at("09:00:02"), "kp", app="keepass", title="bank.kdbx")) == []
    out = r.observe(key(at("09:00:03")))
    assert types(out) == ["HardwareKeyboardEvent"]
    assert out[0].app == "" and out[0].title == ""  # type: ignore[attr-defined]
    # back to the allowed window: it is a switch again
    assert types(r.observe(snap(at("09:00:04"), "w1", title="Secret plan"))) == ["WindowSwitch"]


def test_extended_mode_fields_only_when_enabled() -> None:
    from proto.events import FieldValue

    fields = [FieldValue(name="Amount", control_type="Edit", value="12", edited=True)]
    basic = Recorder(IDENT).observe(snap(at("09:00:00"), "w", fields=fields))[0]
    ext = Recorder(IDENT, extended_mode=True).observe(snap(at("09:00:00"), "w", fields=fields))[0]
    assert basic.fields is None  # type: ignore[attr-defined]
    assert ext.fields == fields  # type: ignore[attr-defined]


def test_seq_continues_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    spool = Spool(db)
    r = Recorder(IDENT, next_seq=spool.next_seq)
    events = r.start(at("09:00:00")) + r.observe(snap(at("09:00:01"), "w1")) + r.observe(key(at("09:00:02")))
    spool.append([SpoolRecord("t", b"k", encode_event(e), e.seq) for e in events], next_seq=r.seq)
    spool.close()
    # restart (a new process would do exactly this)
    spool2 = Spool(db)
    r2 = Recorder(IDENT, next_seq=spool2.next_seq)
    more = r2.start(at("09:10:00"))
    seqs = [decode_event(s.value).seq for s in spool2.peek()] + [e.seq for e in more]
    assert seqs == [0, 1, 2, 3]
    spool2.close()


def test_switching_click_after_a_pause_click_reported_first() -> None:
    r, out = typing_in_word_then_away()
    out += r.observe(click(at("10:05:20")))
    out += r.observe(snap(at("10:05:20"), "browser"))  # the source did not say which input: inferred
    out += r.tick(at("10:05:30"))
    assert [(e.type, e.ts.strftime("%H:%M:%S"), e.input) for e in out] == [
        ("HardwareKeyboardEvent", "10:00:00", "hardware"),
        ("HardwareKeyboardEvent", "10:00:35", "hardware"),
        ("WindowSwitch", "10:05:20", "hardware"),
    ]
    # the switch counts as the hardware write: the next click 30 s later writes nothing
    assert r.observe(click(at("10:05:50"))) + r.tick(at("10:06:00")) == []


def test_backwards_clock_step_keeps_events_in_time_order_and_heartbeats_coming() -> None:
    r = Recorder(IDENT, heartbeat_interval=timedelta(seconds=60))
    out = r.start(at("10:00:00"))
    out += r.observe(snap(at("10:00:01"), "doc", app="word", title="a.docx"))
    out += r.observe(key(at("10:00:05")))
    out += r.observe(key(at("10:09:30")))
    # the clock steps back ten minutes: a switch, a click, presence, keys and ticks at the old times
    out += r.observe(snap(at("09:59:40"), "browser"))
    out += r.observe(click(at("09:59:41")))
    out += r.observe(PresenceObservation(ts=at("09:59:50"), kind="Lock"))
    out += r.observe(PresenceObservation(ts=at("10:00:10"), kind="Unlock"))
    for s in range(0, 200, 1):
        out += r.tick(at("10:00:10") + timedelta(seconds=s))
    out += r.observe(key(at("10:03:30")))
    out += r.observe(key(at("10:12:00")))  # past the latest time again
    out += r.stop(at("10:12:01"))
    assert [e.seq for e in out] == list(range(len(out)))
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(out)), [(e.type, e.ts) for e in out]
    # heartbeats kept coming while the clock was behind (about one a minute), stamped at the latest time
    beats = [e for e in out if e.type == "Heartbeat"]
    assert len(beats) >= 3
    assert out[-2].ts == at("10:12:00") and out[-1].type == "AgentStop"
