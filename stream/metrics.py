"""The stream worker's Prometheus metrics (``desktrace_stream_*``). Labels are bounded: topic names, event
type names, error classes, session kinds and (capped) agent versions; never a user, host, title or URL."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0)
_CLOSE_LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
_BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StreamMetrics:
    """Every metric of one worker, registered in ``registry`` (a private registry in tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "desktrace_stream"
        self.events = Counter(
            f"{p}_events_total",
            "Raw events consumed and decoded, by topic and event type (counted when taken into their users' "
            "states: at the settle after their batch, once per commit)",
            ["topic", "type"], registry=registry,
        )
        self.deadlettered = Counter(
            f"{p}_deadlettered_total", "Records sent to the dead-letter topic, by error class",
            ["error_class"], registry=registry,
        )
        self.duplicates = Counter(
            f"{p}_duplicate_events_total", "Events dropped as duplicates of an (agent_id, seq) already seen",
            registry=registry,
        )
        self.late = Counter(
            f"{p}_late_events_total", "Events older than the retention horizon (dead-lettered as late)",
            registry=registry,
        )
        self.miskeyed = Counter(
            f"{p}_records_miskeyed_total",
            "Raw records whose Kafka key is not their event's user key (a producer keying by something else, "
            "or not at all): taken into their own user all the same, at more cost, and with several workers "
            "such a user's events can reach another worker's partitions (events.md keys every raw record by "
            "its user)", registry=registry,
        )
        self.resent = Counter(
            f"{p}_resent_total", "Session messages sent again by a new owner of their user (after a crash or "
            "a rebalance) because the stored state did not know they were delivered",
            registry=registry,
        )
        self.sessions_published = Counter(
            f"{p}_sessions_published_total", "Session records published (first publications and corrections)",
            ["kind"], registry=registry,
        )
        self.corrections = Counter(
            f"{p}_corrections_total", "Session records re-published under an id published before",
            ["kind"], registry=registry,
        )
        self.retractions = Counter(
            f"{p}_retractions_total", "Retractions published (sessions that no longer exist)",
            registry=registry,
        )
        self.silence_closes = Counter(
            f"{p}_silence_closes_total",
            "Users whose open sessions were published after close_timeout of silence",
            registry=registry,
        )
        self.open_sessions = Gauge(
            f"{p}_open_sessions", "Sessions not yet closed, over the users of this worker's partitions",
            registry=registry,
        )
        self.users = Gauge(
            f"{p}_users", "Users with state on this worker's partitions", registry=registry,
        )
        self.task_failures = Counter(
            f"{p}_task_failures_total",
            "Failed runs of the worker's periodic tasks (silence-scan, consumer-lag, group-watch, "
            "recovery-watch); each runs again at its next interval",
            ["task"], registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag", "Records on the raw topics not yet read by this worker, by partition",
            ["topic", "partition"], registry=registry,
        )
        self.close_lag = Histogram(
            f"{p}_close_lag_seconds", "Wall clock of publication minus the session's end",
            buckets=_CLOSE_LAG_BUCKETS, registry=registry,
        )
        self.publish_latency = Histogram(
            f"{p}_publish_latency_seconds",
            "Wall clock when a session record was acknowledged minus the Kafka timestamp of the earliest "
            "record of its user among those settled together (event to session published)",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            f"{p}_batch_size", "Records per handled batch", buckets=_BATCH_SIZE_BUCKETS, registry=registry,
        )
        self.batch_seconds = Histogram(
            f"{p}_batch_processing_seconds",
            "Time to handle one batch (its records wait for the next settle, which takes them; a settle "
            "forced within the batch is part of it)",
            buckets=_SECONDS_BUCKETS, registry=registry,
        )
        self.commit_seconds = Histogram(
            f"{p}_commit_seconds",
            "Time of one commit: changed users settled, changed users' state written, the output "
            "acknowledged, offsets committed",
            buckets=_SECONDS_BUCKETS, registry=registry,
        )
        self.settle_seconds = Histogram(
            f"{p}_settle_seconds",
            "Time to take the records handed over since the last commit into their users' states and "
            "recompute the sessions they change (once per commit, part of the commit's time; a settle "
            "forced by too many records waiting for one is part of the batch's, in forced_settle_seconds)",
            buckets=_SECONDS_BUCKETS, registry=registry,
        )
        self.forced_settle_seconds = Histogram(
            f"{p}_forced_settle_seconds",
            "Time of a settle forced within a batch because too many records waited for one (part of that "
            "batch's time): commits further apart than the waiting records allow",
            buckets=_SECONDS_BUCKETS, registry=registry,
        )
        self.scan_seconds = Histogram(
            f"{p}_scan_seconds", "Time of one scan for silent users", buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.state_writes = Counter(
            f"{p}_state_writes_total",
            "User states written to the changelog (once per changed user per commit)", registry=registry,
        )
        self.state_shed = Counter(
            f"{p}_state_shed_total",
            "User states cut to fit state_max_bytes before a write: the user's oldest facts were dropped "
            "(a flood of events within the retention horizon; docs/sessions.md, 'Bounds against floods')",
            registry=registry,
        )
        self.records_aligned = Counter(
            f"{p}_records_aligned_total",
            "Raw records that waited for the same partition of another raw topic, behind in record time, "
            "before being handled (a worker catching up handles its backlog in time order: align_wait_s)",
            registry=registry,
        )
        self.state_cached_users = Gauge(
            f"{p}_state_cached_users", "Users whose state is kept decoded in memory", registry=registry,
        )
        self.user_errors = Counter(
            f"{p}_sessionizer_errors_total",
            "Users whose batch the sessionizer failed on (their events were dead-lettered as 'other')",
            registry=registry,
        )
        self.output_refused = Counter(
            f"{p}_output_refused_total",
            "Records Kafka refused for good (too large, invalid, unauthorized topic), by error and what was "
            "done instead: deadletter_head (a bounded head sent), deadletter (a refused session record sent "
            "to the dead-letter topic) or skipped",
            ["reason", "action"], registry=registry,
        )
        self.deadletters_truncated = Counter(
            f"{p}_deadletters_truncated_total",
            "Dead letters holding only a bounded head of a record too large to copy whole (size and SHA-256 "
            "in headers)", registry=registry,
        )
        # fleet health, derived from events (stream/fleet.py)
        self.agents_recent = Gauge(
            f"{p}_fleet_agents_heard_5m", "Agents with an event in the last 5 minutes (event time)",
            registry=registry,
        )
        self.agents_silent = Gauge(
            f"{p}_fleet_agents_silent_1h",
            "Agents heard from in the last 24 hours but silent for more than 1 hour", registry=registry,
        )
        self.spool_dropped = Counter(
            f"{p}_fleet_spool_dropped_total",
            "Events agents dropped from their full spools (heartbeat deltas)",
            registry=registry,
        )
        self.agent_versions = Gauge(
            f"{p}_fleet_agent_versions", "Agents heard from in the last 24 hours, by agent_version (capped)",
            ["agent_version"], registry=registry,
        )
