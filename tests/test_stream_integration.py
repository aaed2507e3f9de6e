"""The stream worker end to end through a real Kafka: a shuffled, duplicated multi-user stream comes out of
the sessions topic (upserts and retractions applied) exactly as the offline tool computes it, also when
the worker is SIGKILLed halfway and restarted. The worker runs as the real ``desktrace-stream`` process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proto.keys import event_user_key
from proto.topics import Topics
from stream.app import TABLE_NAME
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import Record, consume_until, event_records, publish_events, wait_committed
from tests.support.process import ServiceHandle
from tests.support.stream import (
    SessionView,
    WorkerPool,
    app_id_for,
    describe_difference,
    offline_sessions,
)

pytestmark = pytest.mark.kafka

OUTPUT_WAIT_S = 45.0


async def test_shuffled_duplicated_stream_equals_offline_result(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    events = generate_events(seed=3, users=4, hours=3)
    expected = offline_sessions(events, tmp_path)
    assert len(expected) > 20 and {s.kind for s in expected.values()} == {"active", "inactive"}
    assert {s.reason for s in expected.values()} >= {"idle", "locked"}

    worker = stream_workers.start()
    sent = shuffled_with_duplicates(events, seed=5)
    await publish_events(kafka_bootstrap, topics, sent)
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + worker.tail()
    # the worker saw every copy, folded the duplicates, and dead-lettered nothing
    assert worker.metric("desktrace_stream_events_total") == len(sent)
    assert worker.metric("desktrace_stream_duplicate_events_total") == len(sent) - len(events)
    assert worker.metric("desktrace_stream_deadlettered_total") == 0
    assert worker.metric("desktrace_stream_open_sessions") == 0  # everything closed after the silence
    assert worker.metric("desktrace_stream_sessions_published_total") >= len(expected)


@pytest.mark.parametrize(
    ("killed_format", "restarted_format"),
    [(None, None), ("3", None), (None, "3")],
    ids=["default", "format-3-then-2", "format-2-then-3"],
)
async def test_sigkill_halfway_and_restart_gives_the_same_result(
    kafka_bootstrap: str,
    topics: Topics,
    tmp_path: Path,
    stream_workers: WorkerPool,
    killed_format: str | None,
    restarted_format: str | None,
) -> None:
    """Also across state formats (``state_format``): the restarted worker recovers the state the killed
    one wrote in the other format, as during a rolling change of the setting."""
    events = generate_events(seed=8, users=4, hours=12)
    expected = offline_sessions(events, tmp_path)
    sent = shuffled_with_duplicates(events, seed=9)
    first, second = sent[: len(sent) // 2], sent[len(sent) // 2 :]
    small_batches = {"DESKTRACE_BATCH_SIZE": "20", "DESKTRACE_BATCH_WITHIN": "0.05"}

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


async def trickle(bootstrap: str, records: list[Record], every_s: float) -> None:
    """Send ``records`` (topic, key, value) one at a time, each acknowledged, ``every_s`` apart."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
            await asyncio.sleep(every_s)
    finally:
        await producer.stop()


async def wait_metric(worker: ServiceHandle, name: str, at_least: float, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if worker.metric(name) >= at_least:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_trickle_is_gathered_into_one_batch_per_commit(
    kafka_bootstrap: str, topics: Topics, stream_workers: WorkerPool
) -> None:
    """Events that trickle in are gathered until the next commit is due and handled as one batch right
    before that commit, which publishes their sessions: one state update per user per commit interval,
    and no batch waits a whole interval for the commit after it. Before, every fetch was a batch (a record
    every 100 ms made about ten batches a second, each user's state recomputed for each)."""
    worker = stream_workers.start("worker", ready_timeout=60, DESKTRACE_COMMIT_INTERVAL="1")
    records = event_records(topics, generate_events(seed=8, users=2, hours=1)[:40])
    await trickle(kafka_bootstrap, records, 0.1)
    deadline = time.monotonic() + 20
    while worker.metric("desktrace_stream_events_total") < len(records) and time.monotonic() < deadline:  # noqa: ASYNC110 - another process
        await asyncio.sleep(0.2)
    assert worker.metric("desktrace_stream_events_total") == len(records), worker.tail()
    batches = worker.metric("desktrace_stream_batch_size_count")
    commits = worker.metric("desktrace_stream_commit_seconds_count")
    assert 2 <= batches <= 8, (batches, worker.tail())  # about 4 s of events: 4 or 5 batches
    assert commits >= batches  # each batch is followed by its commit


async def test_the_end_of_a_backlog_is_handled_and_committed_without_waiting_for_the_commit_interval(
    kafka_bootstrap: str, topics: Topics, stream_workers: WorkerPool
) -> None:
    """A worker catching up handles full batches back to back; the backlog's last records (a batch that is
    not full) used to wait for the next commit, up to a whole commit interval, before they were handled
    and their sessions published. Now, once every raw partition is fetched to its end after a full batch,
    they are handled and committed at once: with a 30 s commit interval, the backlog's sessions are out
    within seconds (and the commits keep their interval afterwards)."""
    events = generate_events(seed=9, users=3, hours=5)
    await publish_events(kafka_bootstrap, topics, events)
    worker = stream_workers.start("worker", ready_timeout=60, DESKTRACE_COMMIT_INTERVAL="30",
                                  DESKTRACE_BATCH_SIZE="400")
    assert len(events) > 3 * 400  # full batches, then a last one that is not
    handled = await wait_metric(worker, "desktrace_stream_events_total", len(events), 20)
    assert handled, (worker.metric("desktrace_stream_events_total"), len(events), worker.tail())
    assert await wait_metric(worker, "desktrace_stream_commit_seconds_count", 1, 10), worker.tail()
    assert worker.metric("desktrace_stream_sessions_published_total") > 0, worker.tail()
    assert worker.metric("desktrace_stream_events_total") == len(events)
    await asyncio.sleep(2)
    assert worker.metric("desktrace_stream_commit_seconds_count") == 1  # live again: the interval holds


async def test_a_worker_working_through_a_backlog_commits_at_the_catch_up_interval_not_every_second(
    kafka_bootstrap: str, topics: Topics, stream_workers: WorkerPool
) -> None:
    """Each commit writes every user changed since the one before to the changelog: with thousands of users,
    committing every second while catching up cost a sixth of the backlog's time. A worker working through
    a backlog (its batches full) now commits at most every ``catchup_commit_interval_s``: this backlog of
    three desks and a legacy client, handled in about 900 batches over more than one commit interval, writes
    each user's state once at the end of the backlog, and once more at the next commit, when the
    acknowledgement of its output emptied what the state held of it (``UserRecord.unsent``). With commits
    every second, each user was written at every commit."""
    events = generate_events(seed=10, users=3, hours=40)
    await publish_events(kafka_bootstrap, topics, events)
    worker = stream_workers.start("worker", ready_timeout=60, DESKTRACE_COMMIT_INTERVAL="1",
                                  DESKTRACE_BATCH_SIZE="20", DESKTRACE_CATCHUP_COMMIT_INTERVAL_S="30",
                                  DESKTRACE_CLOSE_TIMEOUT="600")  # no silence closes meanwhile
    handled = await wait_metric(worker, "desktrace_stream_events_total", len(events), 60)
    assert handled, (worker.metric("desktrace_stream_events_total"), len(events), worker.tail())
    users = len({event_user_key(e) for e in events})
    assert await wait_metric(worker, "desktrace_stream_state_writes_total", 2 * users, 10), worker.tail()
    assert worker.metric("desktrace_stream_batch_size_count") >= len(events) // 20, worker.tail()
    await asyncio.sleep(1.5)  # live again: commits at the commit interval, nothing changed
    assert worker.metric("desktrace_stream_state_writes_total") == 2 * users, worker.tail()
    assert worker.metric("desktrace_stream_sessions_published_total") > 0, worker.tail()


async def test_a_worker_that_keeps_up_commits_every_commit_interval_even_when_its_batches_are_full(
    kafka_bootstrap: str, topics: Topics, stream_workers: WorkerPool
) -> None:
    """Full batches alone do not mean a backlog: with a ``batch_size`` below what arrives at once, a worker
    that keeps up fills its batches, yet has nothing more waiting. It must still commit (and so publish
    its sessions) every commit interval, not at the catch-up interval: a record every 40-50 ms, batches of 5,
    a 1 s commit interval and a 30 s catch-up interval give a commit about every second (deferred as while
    catching up, there would be one or none within the 30 s)."""
    worker = stream_workers.start("worker", ready_timeout=60, DESKTRACE_COMMIT_INTERVAL="1",
                                  DESKTRACE_BATCH_SIZE="5", DESKTRACE_CATCHUP_COMMIT_INTERVAL_S="30")
    records = event_records(topics, generate_events(seed=8, users=2, hours=1)[:80])
    before = worker.metric("desktrace_stream_commit_seconds_count")
    started = time.monotonic()
    await trickle(kafka_bootstrap, records, 0.04)
    assert await wait_metric(worker, "desktrace_stream_events_total", len(records), 20), worker.tail()
    elapsed = time.monotonic() - started
    batches = worker.metric("desktrace_stream_batch_size_count")
    assert len(records) / batches >= 2, (batches, worker.tail())  # several records a batch, some full
    assert worker.metric("desktrace_stream_commit_seconds_count") - before >= elapsed - 2, worker.tail()


async def test_a_backlog_is_caught_up_in_time_order_across_the_raw_topics(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    """Two and a half days of four desks wait in the raw topics when the worker starts: per partition about
    2.6 MB of presence, 1.4 MB of input and 0.3 MB of window events, more than one fetch (1 MB per
    partition) of the larger topics. The worker holds the window events that are ahead of the presence and
    input records it has fetched (``desktrace_stream_records_aligned_total``), fetches the topics behind
    meanwhile, and the sessions are exactly the offline tool's: nothing lost or handled twice."""
    events = generate_events(seed=7, users=4, hours=60)
    expected = offline_sessions(events, tmp_path)
    await publish_events(kafka_bootstrap, topics, events)
    worker = stream_workers.start("worker", 60.0)
    async with SessionView(kafka_bootstrap, topics) as view:
        ok = await view.wait_equal(expected, OUTPUT_WAIT_S)
        assert ok, describe_difference(view.sessions, expected) + "\n" + worker.tail()
    assert worker.metric("desktrace_stream_events_total") == len(events)
    assert worker.metric("desktrace_stream_records_aligned_total") > 0, worker.tail()
    assert worker.metric("desktrace_stream_deadlettered_total") == 0


async def test_a_user_whose_state_outgrows_the_changelog_is_shed_and_the_worker_goes_on(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, stream_workers: WorkerPool
) -> None:
    """One desk floods window events under 2,500 different 1,000-character host names (a broken image, or a
    hostile sender) in between three ordinary users. Its state would be larger than the broker accepts in
    one changelog record (1 MB by default): before, the refused state write stopped the worker, and the
    restarted worker stopped again on the same events. Now the user's oldest facts are shed to fit
    ``state_max_bytes`` (default), every changelog record is within it, the worker keeps running, and the
    ordinary users' sessions are exactly the offline tool's."""
    import random
    from datetime import timedelta

    from proto import events as E

    events = generate_events(seed=21, users=3, hours=2)
    expected = offline_sessions(events, tmp_path)
    rng = random.Random(4)
    t0 = min(e.ts for e in events)
    flood = [
        E.WindowSwitch(agent_id="flood-1", seq=i + 1, ts=t0 + timedelta(milliseconds=500 * i), input="none",
                       user="flood", domain="corp", host=rng.randbytes(500).hex())
        for i in range(2_500)
    ]
    worker = stream_workers.start("worker", 60.0)
    await publish_events(kafka_bootstrap, topics, flood + events)
    async with SessionView(kafka_bootstrap, topics) as view:
        deadline = time.monotonic() + OUTPUT_WAIT_S
        ordinary: dict[str, object] = {}
        while time.monotonic() < deadline:
            await view.poll(0.5)
            ordinary = {k: s for k, s in view.sessions.items() if s.user_key != "corp\\flood"}
            if ordinary == expected:
                break
        assert ordinary == expected, describe_difference(ordinary, expected) + "\n" + worker.tail()  # type: ignore[arg-type]
    assert await wait_metric(worker, "desktrace_stream_state_shed_total", 1, 10), worker.tail()
    assert worker.proc is not None and worker.proc.poll() is None, worker.tail()  # still running
    changelog = f"{app_id_for(topics)}-{TABLE_NAME}-changelog"
    values = await consume_until(kafka_bootstrap, changelog, lambda _: False, within=3.0)
    assert values and max(len(r.value or b"") for r in values) <= 1_000_000
