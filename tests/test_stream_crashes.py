"""The stream worker killed and restarted through a real Kafka: whenever a ``desktrace-stream`` process dies
(SIGKILL halfway, while a batch is gathering, between its state write and its output) or its table recovery
reads nothing, the restarted worker's sessions equal the offline tool's, with nothing lost or left over."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proto.topics import Topics
from stream.app import TABLE_NAME
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import consume_until, event_records, publish_events, wait_committed
from tests.support.stream import (
    OUTPUT_WAIT_S,
    SessionView,
    WorkerPool,
    app_id_for,
    describe_difference,
    offline_sessions,
    wait_metric,
)

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(
    ("killed_format", "restarted_format", "taken_max"),
    [(None, None, None), (None, "4", None), ("4", None, None), ("3", "4", None), (None, None, "30")],
    ids=["default", "format-2-then-4", "format-4-then-2", "format-3-then-4", "settles-within-batches"],
)
async def test_sigkill_halfway_and_restart_gives_the_same_result(
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    stream_workers: WorkerPool,
    killed_format: str | None,
    restarted_format: str | None,
    taken_max: str | None,
) -> None:
    """Also across state formats (``state_format``): the restarted worker recovers the state the killed
    one wrote in the other format, as during a rolling change of the setting. And with settles forced
    within batches (``taken_records_max`` below a batch): the states those settles store reach the
    changelog at the next commit, even for a user with no event after them."""
    events = generate_events(seed=8, users=4, hours=12)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=9)
    first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    small_batches = {"DESKTRACE_BATCH_SIZE": "20", "DESKTRACE_BATCH_WITHIN": "0.05"}
    if taken_max is not None:
        small_batches = {"DESKTRACE_BATCH_SIZE": "50", "DESKTRACE_BATCH_WITHIN": "0.05",
                         "DESKTRACE_TAKEN_RECORDS_MAX": taken_max}

    def settings(state_format: str | None) -> dict[str, str]:
        if state_format is None:
            return small_batches
        return {**small_batches, "DESKTRACE_STATE_FORMAT": state_format}

    worker = stream_workers.start("worker", 60.0, **settings(killed_format))
    await publish_events(kafka_bootstrap, topics, first)
    assert await wait_metric(worker, "desktrace_stream_events_total", len(first), 30)
    # the first half's offsets and state are committed (at the end of the backlog, or at the catch-up
    # interval when the worker did not see that end)
    assert await wait_committed(kafka_bootstrap, app_id_for(topics), topics.raw, 30), worker.tail()
    # Kill it in the second half. Only part of that half is published before the kill: a worker that
    # handled and committed all it had before the kill landed (the end of a backlog is committed at once)
    # would leave the restarted one nothing to read, and the test would depend on the machine's speed.
    before_kill, after_kill = second[: len(second) // 2], second[len(second) // 2 :]
    await publish_events(kafka_bootstrap, topics, before_kill)
    assert await wait_metric(worker, "desktrace_stream_events_total", len(first) + 60, 30)
    if taken_max is not None:
        assert worker.metric("desktrace_stream_forced_settle_seconds_count") > 0
    worker.kill()
    await publish_events(kafka_bootstrap, topics, after_kill)

    restarted = stream_workers.start("worker", 60.0, **settings(restarted_format))
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + restarted.tail()
    # The restarted worker did not re-read the committed first half, so the first half's part of the
    # result came from the state it recovered from the changelog. It read at least what was published
    # after the kill (and what the killed worker had not committed, some of it twice when the group
    # rebalances again as the killed member's session expires).
    assert len(after_kill) <= restarted.metric("desktrace_stream_events_total") < len(sent)
    assert restarted.metric("desktrace_stream_users") == len({s.user_key for s in expected.values()})
    # The table values in the changelog are in the formats the two workers were set to write.
    changelog = f"{app_id_for(topics)}-{TABLE_NAME}-changelog"
    values = await consume_until(kafka_bootstrap, changelog, lambda _: False, within=3.0)
    written = {r.value[:2] for r in values if r.value}
    assert written == {bytes([0x93, int(f or "2")]) for f in (killed_format, restarted_format)}, written


async def test_a_worker_dying_between_its_state_write_and_its_output_loses_and_leaves_nothing(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    """The failpoint ``DESKTRACE_TEST_EXIT_AFTER_STATE_WRITE`` makes the worker exit (as a kill would) at its
    second commit with session output, after the state write and before the output. The restarted worker
    recovers a state that has the events and the output that was never sent (``UserRecord.unsent``): it
    sends that output again, then the rest, and the topic ends as the offline result. Without the re-send,
    the sessions of that commit would be missing for good (the re-read events are duplicates of the
    state's), and with the output written before the state, sessions a later event changes would stay
    published beside their corrections (``tests/test_stream_unsent.py``)."""
    events = generate_events(seed=21, users=4, hours=8)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=22)
    first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    worker = stream_workers.start("worker", 60.0, DESKTRACE_TEST_EXIT_AFTER_STATE_WRITE="2",
                                  DESKTRACE_BATCH_SIZE="200", DESKTRACE_CATCHUP_COMMIT_INTERVAL_S="1")
    await publish_events(kafka_bootstrap, topics, first)
    assert worker.proc is not None
    exit_code = await asyncio.to_thread(worker.proc.wait, 60)  # raises if it did not exit
    assert exit_code == 137, worker.tail()
    await publish_events(kafka_bootstrap, topics, second)
    restarted = stream_workers.start("restarted", 60.0)
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + restarted.tail()
    assert restarted.metric("desktrace_stream_resent_total") > 0, restarted.tail()


async def test_a_recovery_that_reads_nothing_ends_the_worker_for_a_restart(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    """A worker whose table recovery gets none of its changelog records (the failpoint
    ``DESKTRACE_TEST_DROP_CHANGELOG_RECORDS`` drops them as they are fetched, as the fetch loop once did
    across rebalances) would wait for ever, assigned and never ready. The recovery watch makes it exit with
    status 70 after ``recovery_stall_s`` without progress, saying why, and the worker restarted without the
    fault recovers the same state and ends with the offline result."""
    events = generate_events(seed=23, users=3, hours=3)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=24)
    first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    worker = stream_workers.start("worker", 60.0)
    await publish_events(kafka_bootstrap, topics, first)
    assert await wait_committed(kafka_bootstrap, app_id_for(topics), topics.raw, 45), worker.tail()
    worker.stop()  # its state is in the changelog (written before the offsets are committed)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with 70") as exited:
        stream_workers.start("stalled", 60.0, DESKTRACE_TEST_DROP_CHANGELOG_RECORDS="1",
                             DESKTRACE_RECOVERY_STALL_S="3")
    assert time.monotonic() - started < 45.0
    assert "the state recovery read no changelog record" in str(exited.value), str(exited.value)
    await publish_events(kafka_bootstrap, topics, second)
    restarted = stream_workers.start("stalled", 60.0)
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + restarted.tail()


async def test_sigkill_while_a_batch_is_gathering_and_restart_gives_the_same_result(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    """With the default batch size the worker gathers what it fetches until the next commit is due. Killed
    during a steady trickle, it has records gathered but not handled, records handled but not committed,
    and records committed; the restarted worker, fed the rest of the trickle, gives the offline result."""
    from aiokafka import AIOKafkaProducer

    events = generate_events(seed=13, users=4, hours=3)
    expected = offline_sessions(events, tmp_path)
    sent = event_records(topics, shuffled_with_duplicates(events, seed=14))
    first, second = sent[: len(sent) // 3], sent[len(sent) // 3 :]
    worker = stream_workers.start("worker", ready_timeout=60)
    await publish_events(kafka_bootstrap, topics, first)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        chunks = [second[i : i + 10] for i in range(0, len(second), 10)]
        for n, chunk in enumerate(chunks):
            for topic, key, value in chunk:
                await producer.send(topic, value, key=key)
            await producer.flush()
            await asyncio.sleep(0.05)  # about 200 events/s: most batches are gathered until the commit
            if n == len(chunks) // 3:
                assert worker.metric("desktrace_stream_batch_size_count") > 0
                worker.kill()
            if n == 2 * len(chunks) // 3:
                restarted = stream_workers.start("restarted", ready_timeout=60)
    finally:
        await producer.stop()
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + restarted.tail()
