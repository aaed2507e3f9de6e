"""A legacy client's day, posted over HTTP to a real running ``desktrace-gateway``, becomes the right
StateChange events on the presence topic of a real Kafka: no duplicates, nothing invalid."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.legacy import legacy_agent_id
from proto.codec import decode_event
from proto.events import StateChange
from proto.topics import Topics
from tests.support.gateway import running_gateway
from tests.support.kafka import at_least, consume_until

pytestmark = [pytest.mark.kafka]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BERLIN = ZoneInfo("Europe/Berlin")
#: Yesterday (UTC): reports must be recent, the gateway refuses what the pipeline would no longer count.
DAY = datetime.now(UTC).date() - timedelta(days=1)
D = DAY.isoformat()


def utc(h: int, m: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, h, m, s, us, tzinfo=UTC)


def berlin(h: int, m: int = 0, s: int = 0, us: int = 0) -> datetime:
    """A Berlin wall-clock time of DAY, in UTC."""
    return datetime(DAY.year, DAY.month, DAY.day, h, m, s, us, tzinfo=BERLIN).astimezone(UTC)


@pytest.fixture
def gateway_url(kafka_bootstrap: str, topics: Topics) -> Iterator[str]:
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        "DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DESKTRACE_TOPIC_PREFIX": topics.prefix,
        "DESKTRACE_LEGACY_DOMAIN": "CORP",
        "DESKTRACE_LEGACY_TZ": "Europe/Berlin",
        "DESKTRACE_PG_DSN": "",
    }
    with running_gateway(env, log_path=ARTIFACTS / "gateway-legacy.log") as url:
        yield url


async def read_topic(bootstrap: str, topic: str, expect: int, quiet_s: float = 1.5) -> list[StateChange]:
    """Every record of ``topic``: read until ``expect`` arrived and then ``quiet_s`` passed without more."""
    out: list[StateChange] = []
    for r in await consume_until(bootstrap, topic, at_least(expect), 30, settle_s=quiet_s):
        ev = decode_event(r.value)
        assert isinstance(ev, StateChange)
        assert r.key == f"{ev.domain}\\{ev.user}".lower().encode()
        out.append(ev)
    return out


async def test_legacy_day_becomes_state_changes(
    gateway_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    day = [
        # (body, times it is sent: a client retrying after a lost answer)
        ({"user": "jdoe", "state": "working", "ts": f"{D}T07:58:12Z"}, 3),
        ({"user": "jdoe", "state": "stopped", "ts": f"{D}T12:01:00"}, 2),  # no offset: Europe/Berlin
        ({"user": "jdoe", "state": "working", "ts": f"{D}T12:47:30.250+01:00"}, 1),
        ({"user": "OTHER\\Bob", "state": "working", "ts": f"{D}T09:00:00Z"}, 2),
        ({"user": "jdoe", "state": "stopped", "ts": f"{D} 17:30:00+01:00"}, 1),
        ({"user": "OTHER\\Bob", "state": "stopped", "ts": f"{D}T16:00:00Z"}, 1),
    ]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as c:
        for body, times in day:
            for _ in range(times):
                r = await c.post("/api/report", json=body)
                assert r.status_code == 200, r.text
                assert r.json() == {"success": True}
        # a report without ts gets the server time; its retry within the window is the same report
        before = datetime.now(UTC)
        for _ in range(2):
            r = await c.post("/api/report", json={"user": "carol", "state": "working"})
            assert r.status_code == 200 and r.json() == {"success": True}
        after = datetime.now(UTC)
        # invalid reports are refused with a reason and never reach Kafka
        bad = [
            (b'{"user": "jdoe", "state": "sleeping"}', 422),
            (b'{"state": "working"}', 422),
            (b'{"user": "jdoe", "state": "working", "ts": "yesterday"}', 422),
            (b'{"user": "jdoe", "state": "working", "ts": "2999-01-01T00:00:00Z"}', 422),
            (b'{"user": "a\\\\b\\\\c", "state": "working"}', 422),
            (b'{"user": "jdoe", "state": "work', 400),
            (b"[]", 422),
        ]
        for raw, status in bad:
            r = await c.post("/api/report", content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (raw, r.text)
            assert r.json()["success"] is False and r.json()["error"]
        metrics = (await c.get("/metrics")).text

    events = await read_topic(kafka_bootstrap, topics.presence, expect=7)
    ids = [(e.agent_id, e.seq) for e in events]
    assert len(ids) == len(set(ids)) == 7, ids

    got = sorted(((e.domain, e.user, e.state, e.ts) for e in events if e.user != "carol"), key=str)
    want = sorted(
        [
            ("CORP", "jdoe", "working", utc(7, 58, 12)),
            ("CORP", "jdoe", "stopped", berlin(12, 1)),
            ("CORP", "jdoe", "working", utc(11, 47, 30, 250000)),
            ("CORP", "jdoe", "stopped", utc(16, 30)),
            ("OTHER", "Bob", "working", utc(9)),
            ("OTHER", "Bob", "stopped", utc(16)),
        ],
        key=str,
    )
    assert got == want
    for e in events:
        key = f"{e.domain}\\{e.user}".lower()
        assert e.agent_id == legacy_agent_id(key) == str(uuid.UUID(e.agent_id))
        assert e.seq == int(e.ts.timestamp() * 1000)
        assert e.input == "none" and e.tz == "Europe/Berlin" and e.host == "127.0.0.1"
        offset = e.ts.astimezone(BERLIN).utcoffset()
        assert offset is not None and e.utc_offset_min == offset.total_seconds() // 60
    (carol,) = [e for e in events if e.user == "carol"]
    assert carol.domain == "CORP" and before - timedelta(seconds=1) <= carol.ts <= after

    assert 'desktrace_gateway_rejected_total{reason="invalid_body"} 3.0' in metrics
    assert 'desktrace_gateway_rejected_total{reason="malformed_json"} 1.0' in metrics
    assert 'desktrace_gateway_rejected_total{reason="invalid_ts"} 1.0' in metrics
    assert 'desktrace_gateway_rejected_total{reason="ts_out_of_range"} 1.0' in metrics
    assert 'desktrace_gateway_rejected_total{reason="invalid_user"} 1.0' in metrics
    assert "desktrace_gateway_legacy_accepted_total 7.0" in metrics
    assert "desktrace_gateway_legacy_retries_total 5.0" in metrics
    assert "desktrace_gateway_kafka_send_seconds_count 7.0" in metrics


async def test_kafka_down_answers_503(tmp_path: Path) -> None:
    """With no broker, a report is answered 503 with a clear message (never a crash or a false success)."""
    from tests.support.process import free_port

    env = {
        "DESKTRACE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "DESKTRACE_LEGACY_SEND_TIMEOUT_S": "2",
        "DESKTRACE_PG_DSN": "",
    }
    with running_gateway(env, log_path=tmp_path / "gw.log") as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as c:
            r = await c.post("/api/report", json={"user": "jdoe", "state": "working"})
            assert r.status_code == 503, r.text
            assert r.json()["success"] is False and "Kafka" in r.json()["error"]
            assert (await c.get("/healthz")).status_code == 200
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["kafka"] is False
