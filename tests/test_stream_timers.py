"""The worker's timers that only observe (the consumer lag gauge, the group watch) never stop it.

Faust crashes the whole worker when an ``app.timer`` raises. In a three-broker cluster that lost its
active controller, aiokafka's ``highwater`` of a raw partition whose leader moved was None for a moment, the
lag timer subtracted from it, and the worker stopped publishing sessions
(``tests/test_stream_brokers.py`` found it). No Kafka here: the worker is built, not started, with a
consumer and an assignor that answer as aiokafka's and Faust's do in that moment.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from stream.app import ClusterInfo, StreamApp, consumer_lags
from stream.periodic import guarded
from tests.support.metrics import metric_sum, samples


class _Assignor:
    def __init__(self, partitions: list[TP]) -> None:
        self.partitions = partitions

    def assigned_actives(self) -> set[TP]:
        return set(self.partitions)


class _Consumer:
    """What the lag report reads of Faust's consumer: ``highwater`` (None: aiokafka knows none), and the
    offsets of the last record read and the committed ones."""

    def __init__(
        self, highwaters: dict[TP, int | None], read: dict[TP, int], committed: dict[TP, int]
    ) -> None:
        self.highwaters = highwaters
        self._read_offset = read
        self._committed_offset = committed

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]


def _worker(tmp_path: Any, registry: CollectorRegistry) -> StreamApp:
    from stream.settings import load_settings

    settings, _ = load_settings([], env={
        "DESKTRACE_KAFKA_BOOTSTRAP": "127.0.0.1:9", "DESKTRACE_STREAM_DATA_DIR": str(tmp_path)})
    return StreamApp(settings, ClusterInfo(partitions=2, replication=1), registry)


async def test_the_lag_report_leaves_out_a_partition_whose_highwater_is_not_known(tmp_path: Any) -> None:
    registry = CollectorRegistry()
    worker = _worker(tmp_path, registry)
    ui, hid = worker.topics.raw[0], worker.topics.raw[1]
    moving, read, committed_only = TP(ui, 0), TP(ui, 1), TP(hid, 0)
    worker.app.assignor = _Assignor([moving, read, committed_only])  # type: ignore[assignment]
    worker.app.consumer = _Consumer(  # type: ignore[assignment]
        {moving: None, read: 15, committed_only: 10}, read={read: 9}, committed={committed_only: 3})
    worker.ready = lambda: True  # type: ignore[method-assign]

    await worker._report_lag()  # raised TypeError (None - int) before

    text = _exposition(registry)
    lag = "desktrace_stream_consumer_lag"
    assert metric_sum(text, lag, topic=ui, partition="1") == 15 - (9 + 1)
    assert metric_sum(text, lag, topic=hid, partition="0") == 10 - 3
    assert samples(text, lag, topic=ui, partition="0") == []  # not known: no sample rather than a guess


def test_consumer_lags_never_below_zero_and_without_unknown_highwaters() -> None:
    a, b, c, d = (TP("raw", p) for p in range(4))

    def highwater(tp: TP) -> int | None:
        if tp == d:
            raise KeyError(tp)  # Faust's consumer before the first fetch
        return {a: None, b: 4, c: 7}[tp]

    assert consumer_lags([a, b, c, d], highwater, read={b: 9}, committed={}) == {b: 0, c: 7}


async def test_a_guarded_tick_that_fails_is_logged_by_its_type_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def tick() -> None:
        nonlocal calls
        calls += 1
        raise TypeError("unsupported operand: secret-window-title")

    failures = 0

    def failed() -> None:
        nonlocal failures
        failures += 1

    run = guarded(tick, "consumer-lag", failed)
    # Faust's app.task passes the app to a function that takes parameters: this one takes none.
    assert not inspect.signature(run).parameters
    with caplog.at_level(logging.WARNING, logger="stream.periodic"):
        await run()
        await run()
    assert calls == 2
    assert failures == 2
    records = [r for r in caplog.records if r.name == "stream.periodic"]
    assert len(records) == 2
    assert all(r.kv == {"task": "consumer-lag", "exception": "TypeError"} for r in records)  # type: ignore[attr-defined]
    assert "secret-window-title" not in caplog.text


class _BrokenAssignor:
    def assigned_actives(self) -> set[TP]:
        raise RuntimeError("the assignor is gone")


async def test_the_worker_counts_a_failing_timer_and_goes_on(tmp_path: Any) -> None:
    """The lag timer as Faust runs it (its task, unwrapped to the guarded tick) and the silence scan: a
    failure is counted by task (``desktrace_stream_task_failures_total``, which an alert watches), and
    nothing is raised into Faust."""
    registry = CollectorRegistry()
    worker = _worker(tmp_path, registry)
    worker.app.assignor = _BrokenAssignor()  # type: ignore[assignment]
    worker.ready = lambda: True  # type: ignore[method-assign]
    failures = "desktrace_stream_task_failures_total"
    before = _exposition(registry)
    for task in ("consumer-lag", "silence-scan", "group-watch", "recovery-watch"):
        assert samples(before, failures, task=task) == [0.0], task  # there from the start, at 0
    (lag_timer,) = [f for f in map(inspect.unwrap, worker.app._app_tasks) if f.__qualname__ == "consumer-lag"]

    await lag_timer()
    await lag_timer()
    await worker._scan()

    text = _exposition(registry)
    assert metric_sum(text, failures, task="consumer-lag") == 2
    assert metric_sum(text, failures, task="silence-scan") == 1
    assert metric_sum(text, failures, task="group-watch") == 0


def _exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
