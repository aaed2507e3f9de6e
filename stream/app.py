"""The Faust wiring of the sessions worker: raw topics in, state table, sessions and dead letters out.

- The three raw topics (same key, same partition count, so they are co-partitioned with the state table)
  are subscribed through a Faust agent, but their records reach :meth:`StreamApp.handle_records` a whole
  fetch at a time (:class:`stream.batching.BatchConsumer`, Faust's consumer with a batch fetch loop), not
  through Faust's per-event stream; :class:`stream.processor.Processor` does the rest. A batch's events
  are taken into their users' states as it comes; each changed user's sessions are recomputed once per
  commit, just before the output is sent (see ``docs/stream-performance.md``).
- State: a Faust ``Table`` on the in-memory store (RocksDB is not installed) backed by its compacted
  changelog topic ``<app id>-user-state-changelog``; a restarted or rebalanced worker rebuilds the table
  from the changelog before it processes events. Values are :class:`stream.state.UserRecord` bytes
  (compressed). Between commits, the users of the owned partitions are kept decoded
  (:class:`stream.live.LiveStates`, bounded by ``state_cache_users``); each changed user is written to the
  changelog and the table once per commit, just before Faust takes the offsets to commit.
- Offsets and output: a batch's changes stay in memory (decoded states, and its session records and dead
  letters in an outbox) until the next commit; under the processing lock, right before Faust takes the
  offsets to commit, the changed users are settled (their sessions recomputed into the outbox), the outbox
  is sent and its acknowledgements awaited, then the changed users' changelog records are sent, and Faust
  flushes the producer before it commits. So a commit never gets ahead of the state and the output, and
  the state never gets ahead of the output (a crash in between leaves the older state, which re-derives
  the same output): at-least-once, and a re-processed batch is harmless (the core deduplicates events,
  session ids are deterministic). If output cannot be produced the process exits without committing.
- A timer scans the locally owned users for ``close_timeout`` of wall-clock silence and publishes their
  open sessions (the silence close).
- Faust's own web server (and its ``/table`` views, which would expose user data) is disabled;
  :class:`stream.web.HttpEndpoints` serves ``/metrics``, ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.types import EventT, StreamT
from mode import Service
from prometheus_client import CollectorRegistry

from common.kafka import (
    MAX_REQUEST_SIZE,
    ProduceErrorKind,
    client_options,
    partition_counts,
    produce_error_kind,
    produce_error_name,
)
from proto.topics import Topics
from stream.batching import BatchConsumer
from stream.changelog import ChangelogWriter
from stream.failpoints import FAIL_SETTLE_ENV, FailingSettle, sessionizer_from_env
from stream.group import GroupWatch
from stream.live import Flushed, LiveStates
from stream.metrics import StreamMetrics
from stream.output import OutputFailed, OutputWriter, Pending
from stream.periodic import Periodic, guarded
from stream.processor import Incoming, Outgoing, Processor, Result
from stream.record_batches import BATCH_BYTES
from stream.recovery import RecoveryWatch
from stream.settings import StreamSettings

#: The environment variable of the tests' failpoint (:meth:`StreamApp._before_commit`).
EXIT_AFTER_STATE_WRITE_ENV = "DESKTRACE_TEST_EXIT_AFTER_STATE_WRITE"

log = logging.getLogger(__name__)

TABLE_NAME = "user-state"
#: Exit status when output cannot be produced: the batch is not committed and will be re-processed.
EX_OUTPUT_FAILED = 75
#: Exit status when the table recovery read nothing for ``recovery_stall_s``: a restart recovers afresh.
EX_RECOVERY_STALLED = 70


LAG_INTERVAL_S = 10.0
#: How often the consumer group's ownership of the raw partitions is checked for /readyz.
GROUP_INTERVAL_S = 2.0
#: How often a table recovery's progress is looked at (at most; a quarter of ``recovery_stall_s`` if less).
RECOVERY_INTERVAL_S = 5.0


def consumer_lags(
    partitions: Iterable[Any],
    highwater: Callable[[Any], int | None],
    read: Mapping[Any, int],
    committed: Mapping[Any, int | None],
) -> dict[Any, int]:
    """Per partition, its highwater minus the next offset the worker reads (after the last record read,
    else the committed offset, else 0), never below 0. A partition whose highwater is not known is left
    out (not fetched yet, or its fetch state reset: aiokafka's ``highwater`` then gives None, as it does
    while a partition's leader moves to another broker)."""
    out: dict[Any, int] = {}
    for tp in partitions:
        try:
            high = highwater(tp)
        except Exception:  # noqa: S112 - no fetch for this partition yet: no lag to report
            continue
        if high is None:
            continue
        last = read.get(tp)
        position = last + 1 if last is not None else (committed.get(tp) or 0)
        out[tp] = max(0, high - position)
    return out


class ClusterInfo:
    """What the worker must know about the cluster before Faust starts: the raw topics' common partition
    count (the state table must match it) and the changelog replication factor to use."""

    def __init__(self, partitions: int, replication: int) -> None:
        self.partitions = partitions
        self.replication = replication


class ClusterError(RuntimeError):
    """The raw topics are missing or not co-partitioned."""


async def inspect_cluster(settings: StreamSettings, topics: Topics) -> ClusterInfo:
    """Read the raw topics' partition counts and the broker count; raises :class:`ClusterError`."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        counts = await partition_counts(admin, list(topics.raw))
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    missing = [name for name in topics.raw if name not in counts]
    if missing:
        raise ClusterError(f"raw topic(s) {', '.join(missing)} do not exist; create the topics first")
    if len(set(counts.values())) != 1:
        raise ClusterError(f"raw topics must have the same partition count (co-partitioned), got {counts}")
    brokers = len(cluster.get("brokers", ())) or 1
    replication = settings.replication_factor or min(3, brokers)
    return ClusterInfo(next(iter(counts.values())), replication)


def broker_credentials(settings: StreamSettings) -> faust.types.auth.CredentialsT | None:
    """Faust credentials for the TLS/SASL settings of :class:`common.settings.KafkaSettings`."""
    opts = client_options(settings)
    protocol = opts.get("security_protocol", "PLAINTEXT")
    if protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=opts["sasl_plain_username"],
            password=opts["sasl_plain_password"],
            mechanism=opts["sasl_mechanism"],
            ssl_context=opts.get("ssl_context"),
        )
    return None


class StreamApp:
    """The Faust app of one worker and its processing logic.

    Guarantees: per commit, every changed user's state is written once, then what the change published
    (the state holding that output until it is acknowledged); offsets are committed only after both are
    durable (at-least-once); a worker that takes over partitions continues from the changelog exactly
    where the previous owner's last committed batch left off, and first re-sends what the previous owner
    may not have delivered.
    """

    def __init__(
        self,
        settings: StreamSettings,
        cluster: ClusterInfo,
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metrics = StreamMetrics(registry)
        config = settings.to_config()
        sessionizer = sessionizer_from_env(config)  # the plain one unless a test sets its failpoint
        if isinstance(sessionizer, FailingSettle):
            log.warning("test failpoint set: the sessionizer will fail on one user", extra={"kv": {
                "variable": FAIL_SETTLE_ENV}})
        self.processor = Processor(
            self.topics,
            sessionizer,
            self.metrics,
            close_timeout_s=settings.close_timeout,
            versions_max=settings.agent_versions_max,
            keep_unsent=True,
            max_taken_records=settings.taken_records_max,
        )
        heartbeat = max(0.5, min(3.0, settings.session_timeout / 3))
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",") if h.strip()],
            broker_credentials=broker_credentials(settings),
            store="memory://",
            datadir=settings.data_dir,
            autodiscover=False,
            web_enabled=False,
            topic_partitions=cluster.partitions,
            topic_replication_factor=cluster.replication,
            topic_disable_leader=True,
            table_standby_replicas=0,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.session_timeout,
            broker_heartbeat_interval=heartbeat,
            broker_commit_interval=settings.commit_interval,
            stream_wait_empty=False,
            stream_buffer_maxsize=max(16384, 4 * settings.batch_size),
            broker_max_poll_records=settings.batch_size,
            producer_acks=-1,
            # Faust's default (1,000,000) is below the broker's limit: a dead letter of a record the
            # broker accepted would be refused.
            producer_max_request_size=MAX_REQUEST_SIZE,
            # Record batches of the changelog and the output (stream.record_batches).
            producer_max_batch_size=BATCH_BYTES,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(registry, "desktrace_stream_faust"))
        self.raw_topic = self.app.topic(
            *self.topics.raw, key_serializer="raw", value_serializer="raw", partitions=cluster.partitions
        )
        self.table = self.app.Table(
            TABLE_NAME,
            key_type=bytes,
            value_type=bytes,
            partitions=cluster.partitions,
            help="desktrace per-user sessionizer state (stream.state.UserRecord)",
        )
        self._lock: asyncio.Lock | None = None
        self._outbox: list[Outgoing] = []  #: output of the changes since the last commit
        #: A failpoint for the tests against the real broker (not a setting): exit as a kill would, right
        #: after the state write of the Nth commit that has session output to send, before that output.
        self._exit_after_state_write = int(os.environ.get(EXIT_AFTER_STATE_WRITE_ENV, "0") or 0)
        if self._exit_after_state_write:
            log.warning("test failpoint set: the worker will exit in the middle of a commit", extra={"kv": {
                "variable": EXIT_AFTER_STATE_WRITE_ENV, "commit": self._exit_after_state_write}})
        self.output = OutputWriter(
            self._send, self.topics, self.metrics,
            batch_producer=lambda: self.app.producer._ensure_producer(),  # type: ignore[attr-defined]
        )
        self.states = LiveStates(
            _TableStore(self.table), max_users=settings.state_cache_users, state_format=settings.state_format,
            max_value_bytes=settings.state_max_bytes, shed=self.processor.sessionizer.shed,
        )
        self.changelog = ChangelogWriter(
            lambda: self.app.producer._ensure_producer(),  # type: ignore[attr-defined]
            lambda: self.table.changelog_topic.get_topic_name(),
        )
        # The raw topics' records come to handle_records a fetch at a time; the agent below keeps them
        # subscribed (and co-partitioned with the table) in Faust's eyes.
        self.app.transport.Consumer = BatchConsumer.bound(  # type: ignore[misc]
            self.topics.raw, self.handle_records, self._before_commit, lambda: self.lock,
            self.metrics.commit_seconds.observe, settings.fetch_max_wait_s, settings.align_wait_s,
            self.metrics.records_aligned.inc, settings.catchup_commit_interval_s,
        )
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.agent(self.raw_topic, name="sessionize", concurrency=1)(self._agent)
        self.app.timer(settings.effective_scan_interval, name="silence-scan")(self._scan)
        self._scan_failed = self._task_failed("silence-scan")  # (the scan catches its own failures)
        self.app.timer(LAG_INTERVAL_S, name="consumer-lag")(
            guarded(self._report_lag, "consumer-lag", self._task_failed("consumer-lag")))
        self.group = GroupWatch(settings, settings.app_id, self.topics.raw, cluster.partitions)
        self.app.timer(GROUP_INTERVAL_S, name="group-watch")(
            guarded(self._watch_group, "group-watch", self._task_failed("group-watch")))
        self.recovery_watch = RecoveryWatch(settings.recovery_stall_s)
        #: Services the Faust worker runs beside the app (:meth:`services`).
        self._services: list[Service] = []
        if settings.recovery_stall_s > 0:
            # Not an app timer: Faust starts those only after the first recovery, the one most worth watching.
            interval = min(RECOVERY_INTERVAL_S, max(0.1, settings.recovery_stall_s / 4))
            self._services.append(Periodic(interval, self._watch_recovery, name="recovery-watch",
                                          failed=self._task_failed("recovery-watch")))

    def _task_failed(self, task: str) -> Callable[[], None]:
        """What counts one failed run of the periodic task ``task`` (``..._task_failures_total{task}``). The
        task's series exists from here on, at 0, so that ``increase()`` sees its first failure."""
        return self.metrics.task_failures.labels(task).inc

    def services(self) -> list[Service]:
        """The services to run beside the app in the Faust worker (from its start, not after recovery)."""
        return list(self._services)

    # ---- readiness -------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Partitions assigned and their state recovered (the worker processes events), and the group
        stable with every raw partition owned by a member (:class:`stream.group.GroupWatch`)."""
        app = self.app
        try:
            recovery = app.tables.recovery  # type: ignore[attr-defined]
            recovered = recovery.completed.is_set() and not recovery.in_recovery
            return bool(app.started and not app.rebalancing and recovered and not self.group.reason)
        except Exception:
            return False

    async def _watch_group(self) -> None:
        before = self.group.reason
        reason = await self.group.check()
        if reason and reason != before:
            log.warning("not ready: the group does not process every partition", extra={"kv": {
                "reason": reason}})
        elif not reason and before and before != "not checked yet":
            log.info("ready again: the group processes every partition")

    async def _watch_recovery(self) -> None:
        """Exit (status 70) when the table recovery has read nothing for ``recovery_stall_s`` while it still
        has changelog records to read (:class:`stream.recovery.RecoveryWatch`)."""
        try:
            recovery = self.app.tables.recovery  # type: ignore[attr-defined]
            recovering = bool(recovery.in_recovery and recovery.need_recovery())
            progress = sum(v for v in recovery.active_offsets.values() if v is not None)
            remaining = sum(1 for v in recovery.active_remaining().values() if v > 0) if recovering else 0
            generation = int(self.app.consumer_generation_id)
        except Exception as exc:  # Faust's recovery not set up yet
            log.debug("no recovery to watch", extra={"kv": {"exception": type(exc).__name__}})
            return
        now = time.monotonic()
        if not self.recovery_watch.stalled(now, recovering, progress, generation):
            return
        log.critical(
            "the state recovery read no changelog record for recovery_stall_s seconds while some remain; "
            "exiting so that the worker is restarted and the group recovers these partitions afresh",
            extra={"kv": {"stalled_s": round(self.recovery_watch.stalled_for(now), 1),
                          "partitions_waiting": remaining}},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EX_RECOVERY_STALLED)

    def alive(self) -> bool:
        """The app has not crashed."""
        return not self.app.crashed

    # ---- processing ------------------------------------------------------------------------------------

    @property
    def lock(self) -> asyncio.Lock:
        # Created lazily, inside the running loop: orders state read-modify-write and output enqueueing
        # between the agent and the silence scan.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _agent(self, stream: StreamT) -> None:
        # Not on the hot path: BatchConsumer delivers the raw topics to handle_records. Should a record
        # ever come through Faust's stream, it is processed the same way.
        s = self.settings
        async for events in stream.take_events(  # type: ignore[attr-defined]
            s.batch_size, within=s.batch_within
        ):
            await self.handle_events(events)

    async def handle_events(self, events: Sequence[EventT]) -> None:
        await self.handle_records([
            Incoming(
                e.message.topic, e.message.partition, e.message.offset,
                _as_bytes(e.message.key), _as_bytes(e.message.value) or b"",
            )
            for e in events
        ])

    async def handle_records(self, records: Sequence[Any]) -> None:
        """One fetch of raw records (anything with ``topic``, ``partition``, ``offset``, ``key``,
        ``value``): handed to the processor, where they wait for the next commit's settle (or one forced by
        too many records waiting), which takes them into the decoded states; the output waits in the
        outbox for the commit."""
        started = time.perf_counter()
        async with self.lock:
            result = self.processor.handle_batch(records, self.states, time.time(), settle=False)
            self._stage(result)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _stage(self, result: Result) -> None:
        table = self.table
        for w in result.writes:  # not used by the processor with LiveStates; kept for completeness
            table.send_changelog(w.partition, w.key, w.value)
            table.data[w.key] = w.value
        self._outbox.extend(result.messages)

    async def _before_commit(self) -> None:
        """Under the processing lock, before Faust takes the offsets to commit (and flushes its producer):
        settle (take the records handed over since the last commit into their users' states and recompute
        the sessions they change, once per commit, not once per batch), send every user changed since then
        to the changelog and wait for it, then send the output produced since the last commit and wait for
        its acknowledgements (Faust commits the offsets after this).

        State first, holding the output it may not have delivered: the two topics are not written
        atomically. Written the other way round, a crash between them left the older state, which did not
        know the sessions just published: re-reading the events in other batches, the next owner could not
        retract the ones the new events no longer gave. Now a crash between them leaves a state that has the
        events (their re-reading finds duplicates) and the values of the messages not known to be delivered
        (``UserRecord.unsent``), which the next owner sends again before any newer output of the user. Once
        the output is acknowledged those values are dropped, and the users written again at the next
        commit."""
        self._settle()
        await self._write_states()
        outbox, self._outbox = self._outbox, []
        if self._exit_after_state_write and any(m.topic == self.topics.sessions for m in outbox):
            self._exit_after_state_write -= 1
            if not self._exit_after_state_write:
                os._exit(137)  # the failpoint: no cleanup, no flush, as after SIGKILL
        if outbox:
            await self._await_output(await self._write(Result(messages=outbox)))
            acked_ms = time.time() * 1000
            observe = self.metrics.publish_latency.observe
            for msg in outbox:
                if msg.source_ms is not None:
                    observe(max(0.0, acked_ms - msg.source_ms) / 1000)
        self.processor.confirm(self.states)

    async def _write_states(self) -> None:
        """Send every user changed since the last write to the changelog and wait for the acknowledgements."""
        flushed: list[Flushed] = []
        n = self.states.flush(flushed.append)
        if flushed:
            try:
                for fut in await self.changelog.write(flushed):
                    await fut
            except Exception as exc:
                self._die(exc, "cannot write state to the changelog")
        if n:
            self.metrics.state_writes.inc(n)
        shed, self.states.shed_users = self.states.shed_users, 0
        if shed:
            self.metrics.state_shed.inc(shed)
        self.metrics.state_cached_users.set(len(self.states))

    def _settle(self) -> None:
        """Under the processing lock: take the records handed over since the last settle and recompute the
        sessions of the users changed since then; their output joins the outbox."""
        if self.processor.unsettled:
            started = time.perf_counter()
            self._stage(self.processor.settle(self.states, time.time()))
            self.metrics.settle_seconds.observe(time.perf_counter() - started)

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Make everything processed so far durable (state and output, as a commit does; Faust will not
        commit the revoked partitions' offsets, so their next owner re-processes those events harmlessly),
        then forget the decoded users of the revoked partitions."""
        # Not under the processing lock: a commit holding it may wait for the consumer thread, which waits
        # for this callback. Faust has stopped the flow, and handling a batch has no await, so nothing is
        # processed meanwhile.
        raw = self.topics.raw
        partitions = {tp.partition for tp in revoked if tp.topic in raw}
        self.group.moved()
        await self._before_commit()
        await self._write_states()  # users whose output was just confirmed: the next owner need not resend
        await self.app.producer.flush()
        if partitions:
            self.states.drop_partitions(partitions)

    async def _scan(self) -> None:
        if not self.ready():
            return
        started = time.perf_counter()
        try:
            raw = self.topics.raw
            partitions = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in raw}
            async with self.lock:
                result = self.processor.scan(self.states, partitions, time.time())
                self._stage(result)
        except Exception:
            log.exception("silence scan failed")
            self._scan_failed()
            return
        self.metrics.scan_seconds.observe(time.perf_counter() - started)

    async def _report_lag(self) -> None:
        """Highwater minus the next offset to read, per assigned raw partition (a gauge per partition)."""
        if not self.ready():
            return
        consumer = self.app.consumer
        raw = [tp for tp in self.app.assignor.assigned_actives() if tp.topic in self.topics.raw]
        lags = consumer_lags(raw, consumer.highwater, getattr(consumer, "_read_offset", {}),
                             getattr(consumer, "_committed_offset", {}))
        for tp, lag in lags.items():
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    async def _write(self, result: Result) -> Pending:
        """Write the state changes (changelog first, then the local store) and enqueue the output."""
        table = self.table
        for w in result.writes:
            table.send_changelog(w.partition, w.key, w.value)
            table.data[w.key] = w.value
        try:
            return await self.output.enqueue(result.messages)
        except OutputFailed as exc:
            self._die(exc)
            raise  # not reached

    async def _send(self, msg: Outgoing) -> Any:
        return await self.app.producer.send(msg.topic, msg.key, msg.value, None, None, msg.headers)

    async def _await_output(self, pending: Pending) -> None:
        """Wait for the output's acknowledgements; records Kafka refuses for good are replaced (dead
        letter or its head) or skipped by :class:`stream.output.OutputWriter`, never a reason to exit."""
        if not pending:
            return
        try:
            await self.output.settle(pending)
        except OutputFailed as exc:
            self._die(exc)

    def _die(self, exc: BaseException, what: str = "cannot produce output") -> None:
        # Returning would let take_events ack the batch; exiting leaves its offsets uncommitted, so the
        # next owner re-processes it (at-least-once; duplicates are harmless).
        if produce_error_kind(exc) is ProduceErrorKind.PERMANENT:
            # Only the state write can get here with a permanent error (output records are replaced):
            # restarting cannot help, the same value would be refused again.
            log.critical(
                f"{what}: Kafka refused it for good; exiting without committing the batch. If the error "
                "is a size error, set state_max_bytes (DESKTRACE_STATE_MAX_BYTES) below the changelog "
                "topic's max.message.bytes",
                extra={"kv": {"exception": produce_error_name(exc)}},
            )
        else:
            log.critical(
                f"{what} (transient Kafka error); exiting without committing the batch",
                extra={"kv": {"exception": str(exc) or type(exc).__name__}},
            )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EX_OUTPUT_FAILED)


class _TableStore:
    """The table's local store as :class:`LiveStates` uses it (looked up at each use: Faust creates and
    replaces the store itself)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return default if value is None else value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.table.data[key] = value

    def items(self) -> Any:
        return self.table.data.items()


def _as_bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode()
