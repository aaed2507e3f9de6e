"""The server-side pipeline (stream, both sinks, gateway) on a cluster of three nodes (``devstack.cluster``),
each a broker and a controller (the dual-role node pool of ``deploy/k8s/base/kafka.yaml``), one lost
halfway: raw topics, the sessions topic and the worker's changelog replicated three times,
``min.insync.replicas`` 2. The node killed (SIGKILL, as a lost machine) is the active controller, and may
lead partitions of any topic and be a group's coordinator; the quorum elects another controller, the
producers and consumers move to the other brokers, and the sessions topic and PostgreSQL still end up
exactly as the offline tool computes; a legacy client's report sent while the node is gone is stored too.
Real brokers, real processes, a real database."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devstack.cluster import KafkaCluster
from devstack.pipeline import free_port
from devstack.topics import ensure_topics
from proto.topics import Topics
from stream.app import TABLE_NAME
from stream.settings import default_app_id
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import publish_events
from tests.support.pipeline import Pipeline, stored
from tests.support.stream import SessionView, describe_difference, offline_sessions

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

BROKERS = 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    ports = [free_port() for _ in range(BROKERS)]
    controller_ports = [free_port() for _ in range(BROKERS)]
    kafka = KafkaCluster(tmp_path / "kafka", ports, controller_ports, progress=lambda _: None)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop(timeout=10.0)


@pytest.fixture
def pipeline(cluster: KafkaCluster, fresh_pg_dsn: str, tmp_path: Path) -> Iterator[Pipeline]:
    prefix = f"b{uuid.uuid4().hex[:10]}."
    asyncio.run(ensure_topics(cluster.bootstrap, Topics(prefix), partitions=3, replication_factor=BROKERS))
    started = Pipeline(cluster.bootstrap, fresh_pg_dsn, prefix, tmp_path / "pipeline")
    try:
        started.start()
        started.wait_ready(120)
        yield started
    finally:
        started.stop()


async def _replicas(bootstrap: str, topic: str, within: float = 15.0) -> set[int]:
    """The replica counts of ``topic``'s partitions. A broker answers from its own metadata cache, which
    can lag a topic just created on another one (no partitions yet): asked again until some are known."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = asyncio.get_running_loop().time() + within
    try:
        while True:
            (described,) = await admin.describe_topics([topic])
            if described["partitions"] or asyncio.get_running_loop().time() >= deadline:
                return {len(p["replicas"]) for p in described["partitions"]}
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def test_the_active_controller_lost_halfway_loses_no_session_and_no_row(
    cluster: KafkaCluster, pipeline: Pipeline, tmp_path: Path
) -> None:
    topics = pipeline.topics
    events = generate_events(seed=31, users=6, hours=3)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=32)
    half = len(sent) // 2
    await publish_events(cluster.bootstrap, topics, sent[:half])
    changelog = f"{default_app_id(topics.prefix)}-{TABLE_NAME}-changelog"
    assert await _replicas(cluster.bootstrap, changelog) == {BROKERS}  # the default: min(3, brokers)
    leader = cluster.quorum_leader()
    assert leader is not None
    cluster.kill(leader)
    await publish_events(cluster.bootstrap, topics, sent[half:])
    async with SessionView(cluster.bootstrap, topics) as view:
        ok = await view.wait_equal(expected, 90.0)
        assert ok, describe_difference(view.sessions, expected) + "\n" + pipeline.logs()
    # PostgreSQL: every event stored once (the duplicates sent were not stored again), the sessions as
    # computed offline.
    rows = {sid: (s.kind, s.start, s.end, s.user_key) for sid, s in expected.items()}
    deadline = time.monotonic() + 60
    got = await stored(pipeline.dsn)
    while (got[1] != len(events) or got[2] != rows) and time.monotonic() < deadline:
        await asyncio.sleep(1)
        got = await stored(pipeline.dsn)
    raw, distinct, sessions = got
    assert raw == distinct == len(events), pipeline.logs()
    assert sessions == rows, pipeline.logs()
    assert not pipeline.dead(), pipeline.logs()  # every service kept running
    for name in ("stream", "sink-raw", "sink-sessions"):  # and says it is ready again
        assert await _ready_within(pipeline.urls[name] + "/readyz", 60.0), name + "\n" + pipeline.logs()
    assert cluster.quorum_leader() not in (None, leader)  # the quorum has another controller
    # A legacy client's report, through the gateway, while the node is still gone: stored like any event.
    answer = await asyncio.to_thread(_post_report, pipeline.urls["gateway"], "legacy.ctl")
    assert answer == {"success": True}, answer
    for _ in range(60):
        if await _legacy_rows(pipeline.dsn, "legacy.ctl"):
            break
        await asyncio.sleep(1)
    assert await _legacy_rows(pipeline.dsn, "legacy.ctl") == 1, pipeline.logs()


def _post_report(gateway: str, user: str) -> object:
    body = json.dumps({"user": user, "state": "working"}).encode()
    request = urllib.request.Request(gateway + "/api/report", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


async def _legacy_rows(dsn: str, user: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM raw_events WHERE type = 'StateChange' AND position($1 in user_key) > 0",
            user))
    finally:
        await conn.close()


async def _ready_within(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_status, url) == 200:
            return True
        await asyncio.sleep(0.5)
    return False


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
