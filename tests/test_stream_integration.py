"""The stream worker end to end through a real Kafka: a shuffled, duplicated multi-user stream comes out of
the sessions topic (upserts and retractions applied) exactly as the offline tool computes it; how it gathers
batches and when it commits. The worker runs as the real ``desktrace-stream`` process (killed and restarted:
``test_stream_crashes.py``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proto.keys import event_user_key
from proto.topics import Topics
from stream.app import TABLE_NAME
from tests.support.events import generate_events, shuffled_with_duplicates
from tests.support.kafka import consume_until, event_records, publish_events
from tests.support.stream import (
    OUTPUT_WAIT_S,
    SessionView,
    WorkerPool,
    app_id_for,
    describe_difference,
    offline_sessions,
    trickle,
    wait_metric,
)

pytestmark = pytest.mark.kafka


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
