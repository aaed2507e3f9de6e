"""Unit tests of the stream worker's edges: settings, fleet bookkeeping, the state record, the batch
processor (with the real pure sessionizer, no broker) and the credentials mapping."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from common.settings import SettingsError
from proto import events as E
from proto.codec import decode_session_message, encode_event
from proto.deadletter import header_map
from proto.keys import event_user_key
from proto.sessions import Session, SessionRetraction
from proto.topics import Topics
from stream import fleet
from stream.metrics import StreamMetrics
from stream.settings import load_settings, metrics_host_port
from stream.state import UserRecord, decode_record, encode_record

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def ev(
    cls: type[E.Envelope], seq: int, at: timedelta, user: str = "ann", agent: str = "a1", **kw: object
) -> E.Envelope:
    input_ = kw.pop("input", "hardware" if cls.__name__.startswith("Hardware") else "none")
    return cls(
        agent_id=agent, seq=seq, ts=T0 + at, input=input_, user=user, domain="corp", host="pc1", **kw,
    )


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# ---- settings ------------------------------------------------------------------------------------------


def test_settings_precedence_and_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('gap = 100\n[stream]\nclose_timeout = 42\nstream_app_id = "from-toml"\n')
    settings, _ = load_settings(
        ["--config", str(cfg), "--stream-app-id", "from-flag"],
        env={"DESKTRACE_CLOSE_TIMEOUT": "7", "DESKTRACE_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"},
    )
    assert settings.gap == 100  # TOML top level
    assert settings.close_timeout == 7  # env beats TOML
    assert settings.stream_app_id == "from-flag"  # flag beats everything
    assert settings.kafka_bootstrap == "k1:9092,k2:9092"
    assert settings.presence_timeout == 180 and settings.retention == 3 * 86400
    assert settings.effective_scan_interval == pytest.approx(7 / 3)


def test_settings_reject_bad_values() -> None:
    with pytest.raises(SettingsError, match="close_timeout"):
        load_settings([], env={"DESKTRACE_CLOSE_TIMEOUT": "-1"})
    with pytest.raises(SettingsError, match="metrics_addr"):
        load_settings(["--metrics-addr", "nonsense"], env={})
    assert metrics_host_port("[::1]:0") == ("::1", 0)
    assert metrics_host_port(":6066") == ("0.0.0.0", 6066)


def test_help_works_without_a_broker() -> None:
    exe = Path(sys.executable).with_name("desktrace-stream")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "--close-timeout" in out.stdout and "DESKTRACE_CLOSE_TIMEOUT" in out.stdout


def test_bad_setting_is_a_clear_error_exit_2() -> None:
    import os

    from stream.cli import main

    old = os.environ.get("DESKTRACE_GAP")
    os.environ["DESKTRACE_GAP"] = "soon"
    try:
        assert main([]) == 2
    finally:
        if old is None:
            os.environ.pop("DESKTRACE_GAP", None)
        else:
            os.environ["DESKTRACE_GAP"] = old


# ---- fleet ---------------------------------------------------------------------------------------------


def hb(seq: int, minutes: float, dropped: int, agent: str = "a1", version: str = "1.0") -> E.Envelope:
    return ev(E.Heartbeat, seq, timedelta(minutes=minutes), agent=agent, last_input_ts=None,
              spool_dropped=dropped, agent_version=version)


def test_spool_drop_deltas_count_once_and_survive_agent_restarts() -> None:
    agents: dict[str, fleet.AgentSeen] = {}
    now = fleet.epoch_ms(T0 + timedelta(hours=1))
    assert fleet.observe(agents, [hb(1, 0, 3)], now) == 3  # first heartbeat: its whole count
    assert fleet.observe(agents, [hb(2, 1, 5), hb(2, 1, 5)], now) == 2  # duplicate counted once
    assert fleet.observe(agents, [hb(1, 0, 3)], now) == 0  # an old heartbeat again: nothing
    assert fleet.observe(agents, [hb(3, 2, 1)], now) == 1  # counter went down: agent restarted
    assert fleet.observe(agents, [hb(4, 3, 1)], now) == 0


def test_fleet_summary_counts_recent_silent_and_caps_versions() -> None:
    now_dt = T0 + timedelta(days=1)
    now = fleet.epoch_ms(now_dt)
    agents: dict[str, fleet.AgentSeen] = {}
    fleet.observe(agents, [hb(1, 24 * 60 - 1, 0, agent="recent", version="2.0")], now)
    fleet.observe(agents, [hb(1, 24 * 60 - 30, 0, agent="quiet30m", version="2.0")], now)
    fleet.observe(agents, [hb(1, 24 * 60 - 120, 0, agent="silent2h", version="1.9")], now)
    fleet.observe(agents, [hb(1, -1, 0, agent="gone", version="0.1")], now)  # 24 h + 1 min ago
    fleet.observe(agents, [hb(1, 24 * 60 + 60, 0, agent="skewed", version="x" * 100)], now)  # future clock
    summary = fleet.FleetSummary(now)
    summary.add(agents)
    assert summary.recent == 2  # recent + skewed (capped at now)
    assert summary.silent == 1  # silent2h; gone is older than 24 h and counts nowhere
    assert summary.capped_versions(1) == {"2.0": 2, "other": 2}
    assert all(len(v) <= fleet.VERSION_MAX_LEN for v in summary.versions)
    fleet.prune(agents, now)
    assert "gone" not in agents and "recent" in agents


def test_a_user_remembers_at_most_max_agents_the_most_recently_heard() -> None:
    """Events under ever new agent ids (a cloned image, a hostile sender) must not grow the user's record
    without end: past ``MAX_AGENTS`` the agents heard from longest ago are forgotten."""
    now = fleet.epoch_ms(T0 + timedelta(hours=2))
    agents: dict[str, fleet.AgentSeen] = {}
    for i in range(fleet.MAX_AGENTS + 40):
        fleet.observe(agents, [hb(1, i * 0.1, 0, agent=f"a{i}")], now)
    fleet.prune(agents, now)
    assert len(agents) == fleet.MAX_AGENTS
    assert "a0" not in agents and f"a{fleet.MAX_AGENTS + 39}" in agents
    assert min(int(a[1:]) for a in agents) == 40


def test_user_record_round_trip() -> None:
    rec = UserRecord(core=b"\x01\x02", partition=2, last_seen=12.5,
                     agents={"a": fleet.AgentSeen(last_ms=1, version="v", hb_ms=1, spool_dropped=0)})
    assert decode_record(encode_record(rec)) == rec


def test_broker_credentials_mapping(tmp_path: Path) -> None:
    import faust

    from stream.app import broker_credentials

    plain, _ = load_settings([], env={})
    assert broker_credentials(plain) is None
    sasl, _ = load_settings([], env={
        "DESKTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DESKTRACE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "DESKTRACE_KAFKA_USERNAME": "u", "DESKTRACE_KAFKA_PASSWORD": "p"})
    creds = broker_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("u", "p", "SCRAM-SHA-512")
    assert creds.ssl_context is None
    ssl_, _ = load_settings([], env={"DESKTRACE_KAFKA_SECURITY_PROTOCOL": "SSL"})
    assert isinstance(broker_credentials(ssl_), faust.SSLCredentials)


# ---- processor (real pure core, no broker) -------------------------------------------------------------


@pytest.fixture
def proc_env() -> tuple[object, CollectorRegistry, Topics]:
    from stream.core import Sessionizer, SessionizerConfig
    from stream.processor import Processor

    registry = CollectorRegistry()
    topics = Topics("u.")
    processor = Processor(
        topics, Sessionizer(SessionizerConfig(gap_s=300, presence_timeout_s=180, retention_s=86400)),
        StreamMetrics(registry), close_timeout_s=60,
    )
    return processor, registry, topics


def incoming(topics: Topics, events: list[E.Envelope], partition: int = 0) -> list[object]:
    from stream.processor import Incoming

    return [
        Incoming(topics.for_event(e), partition, i, event_user_key(e).encode(), encode_event(e))
        for i, e in enumerate(events)
    ]


def test_batch_dead_letters_bad_records_and_keeps_the_good_ones(proc_env: tuple) -> None:
    from stream.processor import Incoming

    processor, registry, topics = proc_env
    good = [ev(E.HardwareKeyboardEvent, i, timedelta(minutes=i)) for i in range(3)]
    batch = incoming(topics, good)
    batch.insert(1, Incoming(topics.ui, 0, 99, b"corp\\ann", b"\xc1 not msgpack"))
    store: dict[bytes, bytes] = {}
    result = processor.handle_batch(batch, store.get, now=1000.0)
    dead = [m for m in result.messages if m.topic == topics.deadletter]
    assert len(dead) == 1 and dead[0].value == b"\xc1 not msgpack" and dead[0].key == b"corp\\ann"
    headers = header_map(dead[0].headers)
    assert headers["desktrace-error-class"] == "undecodable"
    assert headers["desktrace-source-topic"] == topics.ui and headers["desktrace-source-offset"] == "99"
    assert headers["desktrace-service"] == "stream"
    assert [w.key for w in result.writes] == [b"corp\\ann"]  # one state write for the user
    assert metric(registry, "desktrace_stream_deadlettered_total", error_class="undecodable") == 1
    hid = metric(registry, "desktrace_stream_events_total", topic=topics.hid, type="HardwareKeyboardEvent")
    assert hid == 3


def test_silence_close_publishes_once_and_only_for_owned_partitions(proc_env: tuple) -> None:
    processor, registry, topics = proc_env
    store: dict[bytes, bytes] = {}
    events = [ev(E.HardwareKeyboardEvent, i, timedelta(minutes=i)) for i in range(3)]
    events += [ev(E.HardwareKeyboardEvent, i, timedelta(minutes=i), user="bob") for i in range(3)]
    batch = incoming(topics, events[:3], partition=0) + incoming(topics, events[3:], partition=1)
    for w in processor.handle_batch(batch, store.get, now=1000.0).writes:
        store[w.key] = w.value
    assert processor.scan(list(store.items()), {0, 1}, now=1059.0).messages == []  # not silent long enough
    assert metric(registry, "desktrace_stream_open_sessions") >= 2
    result = processor.scan(list(store.items()), {0}, now=1060.0)  # bob's partition is not ours
    sessions = [decode_session_message(m.value) for m in result.messages]
    assert sessions and all(isinstance(s, Session) and s.user_key == "corp\\ann" for s in sessions)
    active = [s for s in sessions if isinstance(s, Session) and s.kind == "active"]
    assert [(s.start, s.end) for s in active] == [(T0, T0 + timedelta(minutes=2))]
    for w in result.writes:
        store[w.key] = w.value
    assert processor.scan(list(store.items()), {0}, now=2000.0).messages == []  # closed once
    assert metric(registry, "desktrace_stream_silence_closes_total") == 1
    assert metric(registry, "desktrace_stream_users") == 1


def test_late_correction_counts_retractions_and_corrections(proc_env: tuple) -> None:
    processor, registry, topics = proc_env
    store: dict[bytes, bytes] = {}

    def feed(events: list[E.Envelope], now: float) -> list[object]:
        result = processor.handle_batch(incoming(topics, events), store.get, now=now)
        for w in result.writes:
            store[w.key] = w.value
        closed = processor.scan(list(store.items()), {0}, now=now + 61)
        for w in closed.writes:
            store[w.key] = w.value
        return [decode_session_message(m.value) for m in result.messages + closed.messages]

    # sessions.md example 3: inputs at 0, 6 min (two sessions), then the 2 min input arrives late
    key = E.HardwareKeyboardEvent
    first = feed([ev(key, 0, timedelta(0)), ev(key, 2, timedelta(minutes=6))], now=1000.0)
    actives = {s.session_id for s in first if isinstance(s, Session) and s.kind == "active"}
    assert len(actives) == 2
    second = feed([ev(E.HardwareKeyboardEvent, 1, timedelta(minutes=2))], now=5000.0)
    retracted = {s.session_id for s in second if isinstance(s, SessionRetraction)}
    final_active = [s for s in second if isinstance(s, Session) and s.kind == "active"]
    assert [(s.start, s.end) for s in final_active] == [(T0, T0 + timedelta(minutes=6))]
    assert retracted and retracted < actives  # the 6-min session's id is gone; the 0-min id is re-published
    assert metric(registry, "desktrace_stream_corrections_total", kind="active") == 1
    assert metric(registry, "desktrace_stream_retractions_total") == len(retracted)
