"""Rebalances with the batch path (``docs/stream-performance.md``): a second worker joins halfway, then the
first one leaves; the sessions topic still ends up exactly as the offline tool computes it. Real broker, real
``desktrace-stream`` processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proto.topics import Topics
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import publish_events
from tests.support.stream import (
    SessionView,
    WorkerPool,
    describe_difference,
    offline_sessions,
)

pytestmark = pytest.mark.kafka

OUTPUT_WAIT_S = 60.0


async def test_a_worker_joining_and_one_leaving_give_the_offline_result(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    events = generate_events(seed=21, users=6, hours=3)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=22)
    third = len(sent) // 3
    first = stream_workers.start("first", ready_timeout=90, DESKTRACE_BATCH_SIZE="50")
    await publish_events(kafka_bootstrap, topics, sent[:third])
    second = stream_workers.start("second", ready_timeout=90, DESKTRACE_BATCH_SIZE="50")  # rebalance: split
    await publish_events(kafka_bootstrap, topics, sent[third : 2 * third])
    await asyncio.sleep(2)
    assert first.stop() == 0  # graceful leave while work may be uncommitted: rebalance again
    await publish_events(kafka_bootstrap, topics, sent[2 * third :])
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + second.tail()
    assert second.metric("desktrace_stream_users") == len({s.user_key for s in expected.values()})
