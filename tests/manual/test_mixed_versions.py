"""A rolling upgrade, and a rollback, between a worker of an older release and this one: both in one consumer
group, the older one first (upgrade) or second (rollback); the first leaves halfway. The sessions topic
must end up as the offline tool computes it. Real broker, real ``desktrace-stream`` processes.

Not part of the suite (``tests/manual`` is not collected): it needs the older release's source, checked out
by ``scripts/mixed_versions.sh OLD_COMMIT``, which runs this file with ``DESKTRACE_OLD_TREE`` set; without it
this test fails."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from proto.topics import Topics
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import publish_events
from tests.support.stream import SessionView, WorkerPool, describe_difference, offline_sessions

pytestmark = pytest.mark.kafka


def _an_other_checkout(tree: str) -> bool:
    """A source tree of the product other than the one running (an empty or relative value is neither)."""
    path = Path(tree)
    return bool(tree) and path.is_absolute() and path.resolve() != Path(__file__).resolve().parents[2] and (
        path / "stream" / "app.py"
    ).is_file()


@pytest.mark.parametrize("order", ["upgrade", "rollback"])
async def test_an_older_release_and_this_one_share_a_group(
    order: str, kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    old_tree = os.environ.get("DESKTRACE_OLD_TREE", "")
    assert _an_other_checkout(old_tree), "set DESKTRACE_OLD_TREE: run scripts/mixed_versions.sh OLD_COMMIT"
    old = {"PYTHONPATH": old_tree}  # the older release's packages first; the same installed dependencies
    events = generate_events(seed=21, users=6, hours=3)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=22)
    third = len(sent) // 3
    first_env, second_env = (old, {}) if order == "upgrade" else ({}, old)
    first = stream_workers.start("first", ready_timeout=90, DESKTRACE_BATCH_SIZE="50", **first_env)
    await publish_events(kafka_bootstrap, topics, sent[:third])
    second = stream_workers.start("second", ready_timeout=90, DESKTRACE_BATCH_SIZE="50", **second_env)
    await publish_events(kafka_bootstrap, topics, sent[third : 2 * third])
    await asyncio.sleep(2)
    assert first.stop() == 0  # the first leaves: its partitions, and their state, move to the second
    await publish_events(kafka_bootstrap, topics, sent[2 * third :])
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, 60.0)
        assert ok, describe_difference(view.sessions, expected) + "\n" + second.tail()
