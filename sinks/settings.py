"""Settings of ``desktrace-sink`` (flag ``--batch-size`` = ``DESKTRACE_BATCH_SIZE`` = TOML ``batch_size``,
also inside a ``[sink]`` table)."""

from __future__ import annotations

from common.horizon import DEFAULT_RAW_RETENTION_DAYS
from common.kafka import prefixed_port
from common.settings import HELP, CommonSettings, PositiveFloat
from common.settings import NonNegativeInt as NonNegative
from common.settings import PositiveInt as Positive

SECTION = "sink"

#: Default metrics/health port of each sink without a topic prefix, so both can run on one host.
DEFAULT_METRICS_PORT = {"raw": 9464, "sessions": 9465}


def default_metrics_addr(sink: str, topic_prefix: str) -> str:
    """``127.0.0.1:9464`` (raw) / ``:9465`` (sessions) without a topic prefix; with one, ports derived from
    it (:func:`common.kafka.prefixed_port`), so two pipelines on one host differing only by prefix coexist."""
    return f"127.0.0.1:{prefixed_port(DEFAULT_METRICS_PORT[sink], topic_prefix)}"


class SinkSettings(CommonSettings, kw_only=True):
    """Settings of both sinks and of the maintenance commands."""

    metrics_addr: str = ""
    group_id: str = ""
    batch_size: Positive = 10000
    batch_wait_ms: NonNegative = 500
    raw_retention_days: NonNegative = DEFAULT_RAW_RETENTION_DAYS
    partitions_behind_days: NonNegative = 7
    partitions_ahead_days: NonNegative = 7
    maintenance_interval_s: PositiveFloat = 3600.0
    retry_initial_s: PositiveFloat = 0.5
    retry_max_s: PositiveFloat = 30.0
    pg_command_timeout_s: PositiveFloat = 60.0
    kafka_session_timeout_ms: Positive = 10000
    kafka_fetch_partition_bytes: Positive = 4 * 1024 * 1024
    raw_concurrent_writes: Positive = 2


SINK_HELP: dict[str, str] = {
    **HELP,
    "metrics_addr": "host:port of /metrics, /healthz, /readyz ('' = 127.0.0.1:9464 for raw, :9465 for "
    "sessions, or ports derived from the topic prefix with one; 'off' disables)",
    "group_id": "Kafka consumer group ('' = <topic prefix>desktrace-sink-raw / -sessions)",
    "batch_size": "most records written in one database transaction",
    "batch_wait_ms": "longest wait to fill a batch once its first record arrived",
    "raw_retention_days": "raw_events partitions older than this many days are dropped, and older events "
    "are dead-lettered as late (0 = keep forever)",
    "partitions_behind_days": "raw_events partitions kept created for the past days",
    "partitions_ahead_days": "raw_events partitions created ahead for the coming days",
    "maintenance_interval_s": "how often the raw sink creates partitions ahead and drops old ones",
    "retry_initial_s": "first retry delay after a database or Kafka connection error (doubles each time)",
    "retry_max_s": "longest retry delay",
    "pg_command_timeout_s": "timeout of one database statement (a timeout is retried)",
    "kafka_session_timeout_ms": "Kafka consumer group session timeout",
    "kafka_fetch_partition_bytes": "most bytes fetched from one partition in one request (the records "
    "waiting in memory are about this times the partitions assigned); smaller ones leave the sink "
    "waiting on Kafka between batches",
    "raw_concurrent_writes": "batches the raw sink writes at once, each in its own transaction on its own "
    "database connection (offsets are still committed in batch order); the sessions sink writes one at "
    "a time, in order",
}
