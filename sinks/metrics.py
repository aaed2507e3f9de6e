"""Prometheus metrics of the sinks (``desktrace_sink_*``), one registry per sink instance so two sinks
(or tests) in one process never collide. Labels are bounded: table, reason (an error class), topic and
partition; never a user, host, title or URL."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SinkMetrics:
    """The metric families of one sink, registered in :attr:`registry`."""

    def __init__(self, table: str, registry: CollectorRegistry | None = None) -> None:
        self.table = table
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "desktrace_sink_records_total", "Kafka records consumed", ["table"], registry=r
        )
        self.rows_written = Counter(
            "desktrace_sink_rows_written_total",
            "rows inserted, updated or deleted (raw: new rows only, duplicates excluded)",
            ["table"],
            registry=r,
        )
        self.rows_duplicate = Counter(
            "desktrace_sink_rows_duplicate_total",
            "raw rows skipped because the same (agent_id, seq, ts) was already stored",
            ["table"],
            registry=r,
        )
        self.rows_rejected = Counter(
            "desktrace_sink_rows_rejected_total",
            "records that can never be written, by error class (each one is dead-lettered)",
            ["table", "reason"],
            registry=r,
        )
        self.dead_letters = Counter(
            "desktrace_sink_dead_letters_total",
            "records published to the dead-letter topic",
            ["table"],
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "desktrace_sink_dead_letters_truncated_total",
            "Dead letters holding only a bounded head of a record too large to copy whole (size and SHA-256 "
            "in headers)",
            ["table"],
            registry=r,
        )
        self.dead_letters_refused = Counter(
            "desktrace_sink_dead_letters_refused_total",
            "Dead letters Kafka refused for good, by error and what was done instead (head: re-sent as a "
            "bounded head; skipped: not dead-lettered at all)",
            ["table", "reason", "action"],
            registry=r,
        )
        self.retries = Counter(
            "desktrace_sink_retries_total",
            "retries after a connection or timeout error, by what failed (postgres, kafka)",
            ["table", "target"],
            registry=r,
        )
        self.batch_size = Histogram(
            "desktrace_sink_batch_size",
            "records per written batch",
            ["table"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.write_seconds = Histogram(
            "desktrace_sink_write_seconds",
            "time to write one batch to PostgreSQL (successful attempts)",
            ["table"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "desktrace_sink_consumer_lag",
            "records not yet consumed: highwater minus position",
            ["topic", "partition"],
            registry=r,
        )
        self.last_write = Gauge(
            "desktrace_sink_last_successful_write_timestamp_seconds",
            "unix time of the last committed database write",
            ["table"],
            registry=r,
        )
        self.db_up = Gauge(
            "desktrace_sink_postgres_up",
            "1 while the last database operation succeeded",
            ["table"],
            registry=r,
        )
        # Pre-create the unlabelled-by-reason series so dashboards see zeros, not gaps.
        for m in (self.records, self.rows_written, self.rows_duplicate, self.dead_letters):
            m.labels(table)
        for target in ("postgres", "kafka"):
            self.retries.labels(table, target)
        self.db_up.labels(table).set(0)
