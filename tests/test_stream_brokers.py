"""The pipeline on a cluster of three nodes (``devstack.cluster``), each a broker and a controller (the
metadata quorum of a production cluster), one of them lost halfway: raw topics and the worker's changelog
replicated three times, ``min.insync.replicas`` 2. The node killed (SIGKILL, as a lost machine) is the
active controller, and may lead partitions of any topic and be the group's coordinator; the quorum elects
another controller, the producers and the worker move to the other brokers, and the sessions topic still
ends up exactly as the offline tool computes it. Real brokers, a real ``desktrace-stream`` process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devstack.cluster import KafkaCluster
from devstack.pipeline import free_port
from devstack.topics import ensure_topics
from proto.topics import Topics
from stream.app import TABLE_NAME
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import publish_events
from tests.support.process import ServiceHandle
from tests.support.stream import SessionView, WorkerPool, app_id_for, describe_difference, offline_sessions

pytestmark = pytest.mark.kafka

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


async def _replicas(bootstrap: str, topic: str) -> set[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {len(p["replicas"]) for p in described["partitions"]}


async def test_the_active_controller_lost_halfway_loses_no_session(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    topics = Topics(prefix="brokers.")
    await ensure_topics(cluster.bootstrap, topics, partitions=3, replication_factor=BROKERS)
    events = generate_events(seed=31, users=6, hours=3)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=32)
    half = len(sent) // 2
    pool = WorkerPool(cluster.bootstrap, topics, tmp_path)
    try:
        worker = pool.start("worker", ready_timeout=90)
        await publish_events(cluster.bootstrap, topics, sent[:half])
        changelog = f"{app_id_for(topics)}-{TABLE_NAME}-changelog"
        assert await _replicas(cluster.bootstrap, changelog) == {BROKERS}  # the default: min(3, brokers)
        leader = cluster.quorum_leader()
        assert leader is not None
        cluster.kill(leader)
        await publish_events(cluster.bootstrap, topics, sent[half:])
        async with SessionView(cluster.bootstrap, topics) as view:
            ok = await view.wait_equal(expected, 90.0)
            assert ok, describe_difference(view.sessions, expected) + "\n" + worker.tail()
        assert worker.proc.poll() is None, worker.tail()  # the worker kept running
        assert await _ready_within(worker, 60.0), worker.tail()  # and says so again
        assert cluster.quorum_leader() not in (None, leader)  # the quorum has another controller
    finally:
        for started in pool.started:
            started.stop()


async def _ready_within(worker: ServiceHandle, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, _ = await asyncio.to_thread(worker.get, "/readyz")
        if status == 200:
            return True
        await asyncio.sleep(0.5)
    return False
