"""The worker's fetches against a real broker: the consumer Faust builds for it holds a fetch at most
``fetch_max_wait_s`` (Faust fixes 1.5 s; see ``stream.batching._FetchWaitConsumerThread`` for why that stalls
a worker whose other topics are caught up)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from stream.app import ClusterInfo, StreamApp
from stream.settings import load_settings

pytestmark = pytest.mark.kafka


async def _started_fetch_wait_ms(kafka_bootstrap: str, data: Path, env: dict[str, str]) -> tuple[int, int]:
    base = {"DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DESKTRACE_STREAM_DATA_DIR": str(data)}
    settings, _ = load_settings([], env={**base, **env})
    worker = StreamApp(settings, ClusterInfo(partitions=6, replication=1), CollectorRegistry())
    faust_consumer = worker.app.consumer
    consumer = faust_consumer._thread._create_worker_consumer(worker.app.transport)
    await consumer.start()  # the fetcher is built here, from the consumer's settings
    try:
        return consumer._fetch_max_wait_ms, consumer._fetcher._fetch_max_wait_ms
    finally:
        await consumer.stop()


async def test_the_worker_fetches_with_the_configured_wait_not_fausts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    assert await _started_fetch_wait_ms(kafka_bootstrap, tmp_path, {}) == (100, 100)
    env = {"DESKTRACE_FETCH_MAX_WAIT_S": "0.25"}
    assert await _started_fetch_wait_ms(kafka_bootstrap, tmp_path, env) == (250, 250)
