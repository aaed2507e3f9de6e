"""The stream worker's and the offline tool's settings: flag ``--close-timeout`` = ``DESKTRACE_CLOSE_TIMEOUT``
= TOML key ``close_timeout`` (top level or in a ``[stream]`` table), through :mod:`common.settings`.

Durations are seconds (floats allowed). Their names carry no ``_s``: ``gap``, ``presence_timeout``,
``close_timeout``, ``legacy_max_span`` are fixed interfaces, and ``retention``, ``batch_within``,
``scan_interval``, ``session_timeout``, ``commit_interval`` are documented operator settings
(docs/ARCHITECTURE.md, "Settings").
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Annotated, Protocol

import msgspec
from msgspec import Meta

from common.health import parse_addr
from common.horizon import DEFAULT_RETENTION_S
from common.kafka import MAX_REQUEST_SIZE, prefixed_port
from common.settings import (
    HELP,
    KafkaSettings,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    add_arguments,
    load,
)
from stream.core import SessionizerConfig

SECTION = "stream"
#: The application id and metrics port without a topic prefix.
BASE_APP_ID = "desktrace-stream"
#: The largest ``state_max_bytes``: a value this large with the longest user key (two 1,024-character
#: identity fields in UTF-8) still fits one producer request (``common.kafka.MAX_REQUEST_SIZE``).
STATE_MAX_BYTES_LIMIT = MAX_REQUEST_SIZE - 9 * 1024
BASE_METRICS_PORT = 6066


def default_app_id(topic_prefix: str) -> str:
    """``desktrace-stream`` without a prefix, else ``desktrace-stream-<prefix>``: still under the
    ``desktrace-stream`` ACL prefix (docs/security.md), and distinct for every topic prefix."""
    return f"{BASE_APP_ID}-{topic_prefix}" if topic_prefix else BASE_APP_ID


class _SessionizerFields(Protocol):
    gap: float
    presence_timeout: float
    retention: float
    legacy_max_span: float


def sessionizer_config(settings: _SessionizerFields) -> SessionizerConfig:
    """The one mapping from settings (seconds, as given) to the core's :class:`SessionizerConfig`: the
    stream and the offline tool both use it, so they round ``retention`` (and G, P, L) the same way (the
    core rounds each to milliseconds once)."""
    return SessionizerConfig(
        gap_s=settings.gap,
        presence_timeout_s=settings.presence_timeout,
        retention_s=settings.retention,
        legacy_max_span_s=settings.legacy_max_span,
    )


class SessionizerSettings(msgspec.Struct, kw_only=True):
    """The sessionizer's settings (G, P, L, retention; seconds), as ``desktrace-sessionize`` reads them.

    :class:`StreamSettings` has the same four fields with the same types and defaults (a test keeps them
    equal: msgspec Structs cannot inherit from two field-holding bases)."""

    gap: PositiveFloat = 300.0
    presence_timeout: PositiveFloat = 180.0
    retention: PositiveFloat = DEFAULT_RETENTION_S
    legacy_max_span: PositiveFloat = 14400.0

    def to_config(self) -> SessionizerConfig:
        return sessionizer_config(self)


class OfflineSettings(SessionizerSettings, kw_only=True):
    """What ``desktrace-sessionize`` reads: the sessionizer block, and how many processes share the work
    (``jobs``; 0: the CPUs this process may run on, at most 8)."""

    jobs: Annotated[int, Meta(ge=0, le=64)] = 0


class StreamSettings(KafkaSettings, kw_only=True):
    """Everything ``desktrace-stream`` reads (Kafka, no PostgreSQL); validated when built by msgspec
    constraints (a bad value is a clear error naming the setting)."""

    gap: PositiveFloat = 300.0
    presence_timeout: PositiveFloat = 180.0
    retention: PositiveFloat = DEFAULT_RETENTION_S
    legacy_max_span: PositiveFloat = 14400.0
    close_timeout: PositiveFloat = 600.0
    stream_app_id: str = ""
    stream_data_dir: str = ""
    metrics_addr: str = ""
    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 50000
    batch_within: PositiveFloat = 0.5
    scan_interval: NonNegativeFloat = 0.0
    session_timeout: PositiveFloat = 10.0
    replication_factor: NonNegativeInt = 0
    agent_versions_max: Annotated[int, Meta(ge=1)] = 20
    state_cache_users: Annotated[int, Meta(ge=1)] = 5000
    commit_interval: Annotated[float, Meta(ge=0.05, le=60)] = 1.0
    fetch_max_wait_s: Annotated[float, Meta(ge=0.01, le=30)] = 0.1
    align_wait_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    catchup_commit_interval_s: Annotated[float, Meta(ge=0, le=300)] = 5.0
    state_format: Annotated[int, Meta(ge=2, le=4)] = 2
    state_max_bytes: Annotated[int, Meta(ge=16_384, le=STATE_MAX_BYTES_LIMIT)] = 1_000_000
    recovery_stall_s: Annotated[float, Meta(ge=0, le=3600)] = 120.0
    taken_records_max: Annotated[int, Meta(ge=1, le=10_000_000)] = 200_000

    def __post_init__(self) -> None:
        metrics_host_port(self.metrics_address)  # not expressible as a constraint

    def to_config(self) -> SessionizerConfig:
        return sessionizer_config(self)

    @property
    def app_id(self) -> str:
        """The Faust application id (consumer group, changelog topic prefix): ``stream_app_id``, or one
        derived from ``topic_prefix`` (:func:`default_app_id`): pipelines on one cluster never share state."""
        return self.stream_app_id or default_app_id(self.topic_prefix)

    @property
    def data_dir(self) -> str:
        """``stream_data_dir``, or ``./<app id>-data`` (``./desktrace-stream-data`` without a prefix)."""
        return self.stream_data_dir or f"./{self.app_id}-data"

    @property
    def metrics_address(self) -> str:
        """``metrics_addr``, or ``0.0.0.0:6066`` without a topic prefix, a port derived from it with one."""
        return self.metrics_addr or f"0.0.0.0:{prefixed_port(BASE_METRICS_PORT, self.topic_prefix)}"

    @property
    def effective_scan_interval(self) -> float:
        """How often silent users are looked for: ``scan_interval``, or a third of the close timeout
        (between 0.5 and 30 s) when it is 0."""
        if self.scan_interval > 0:
            return self.scan_interval
        return min(30.0, max(0.5, self.close_timeout / 3))


SESSIONIZER_HELP: dict[str, str] = {
    **HELP,
    "gap": "G, the idle gap in seconds that splits active sessions",
    "presence_timeout": "P, seconds without any event after which a presence period ends",
    "retention": "seconds of event time kept in a user's state, back from their latest event; older events "
    "are late (dead-lettered by the stream, rejected by the offline tool)",
    "legacy_max_span": "L, seconds a legacy POST /api/report state holds at most when no next report "
    "ends it sooner (G when the next report repeats the state)",
}

OFFLINE_HELP: dict[str, str] = {
    **SESSIONIZER_HELP,
    "jobs": "processes that share the users (each reads every file and processes its own users; 0: the "
    "CPUs available, at most 8; 1: this process only; stdin is always read by one)",
}

STREAM_HELP: dict[str, str] = {
    **SESSIONIZER_HELP,
    "close_timeout": "seconds of wall-clock silence of a user after which their open sessions are published",
    "stream_app_id": "Faust app id: the consumer group and the prefix of the internal changelog topics "
    "('' = desktrace-stream, or desktrace-stream-<topic prefix> with a prefix)",
    "stream_data_dir": "directory for Faust's local files ('' = ./<app id>-data)",
    "metrics_addr": "host:port of the /metrics, /healthz and /readyz HTTP endpoint (port 0: any free port; "
    "'' = 0.0.0.0:6066, or a port derived from the topic prefix with one)",
    "batch_size": "maximum events handled as one batch (the events gathered until the next commit; each "
    "user's events of every batch since the last commit are taken and settled together at the commit)",
    "batch_within": "seconds Faust's per-record path (not used for the raw topics, which are gathered until "
    "each commit) waits for a batch to fill",
    "scan_interval": "seconds between scans for silent users (0: a third of close_timeout, 0.5..30 s)",
    "session_timeout": "consumer group session timeout in seconds (how soon a dead worker's partitions move)",
    "replication_factor": "replication factor of the internal changelog topics (0: min(3, brokers))",
    "agent_versions_max": "distinct agent_version label values on the fleet gauge before 'other'",
    "commit_interval": "seconds between commits; the events gathered meanwhile are handled as one batch "
    "right before each, then the sessions they produced and the changed users' state are written (longer: "
    "fewer, larger batches and less state encoding per event; later sessions)",
    "fetch_max_wait_s": "seconds the broker may hold a fetch that finds no new records (Kafka's "
    "fetch.max.wait.ms). One fetch per broker is in flight, for every partition with nothing buffered: while "
    "it waits on caught-up partitions, the others wait too (longer: fewer idle fetches, slower catch-up and "
    "later sessions)",
    "align_wait_s": "a worker catching up handles its backlog in time order across the raw topics: records "
    "of a raw topic that are ahead in record time of the same partition of another raw topic still behind "
    "(1000 or more records to fetch) wait for it, so that each user's events come after the ones it has "
    "settled (docs/stream-performance.md). A partition that delivers nothing for this many seconds stops "
    "holding the others back; a worker that keeps up never holds a record (0: records in fetch order)",
    "catchup_commit_interval_s": "seconds between the commits of a worker working through a backlog (its "
    "batches full, another full batch waiting): each commit writes every changed user's state, which with "
    "thousands of users costs more than the batch. A crash re-reads up to this much of the backlog, and its "
    "sessions are published at these commits; the end of a backlog is committed at once. Below "
    "commit_interval: commit_interval",
    "recovery_stall_s": "seconds a state recovery may go without reading a changelog record while it still "
    "has some to read; then the worker exits (status 70) so that its supervisor restarts it and the group "
    "recovers those partitions afresh (0: wait for ever)",
    "taken_records_max": "raw records a worker holds between its settles: waiting to be taken, then for the "
    "dead-letter topic (a user the sessionizer fails on has its events since its stored state "
    "dead-lettered); past it, a batch takes and settles every user so far and stores their states. About "
    "555 bytes each (more: less memory bounded, fewer settles of each user while catching up)",
    "state_cache_users": "users whose state stays decoded in memory between batches (least recently "
    "active beyond it are dropped after each commit and decoded again on their next event)",
    "state_max_bytes": "largest state table value this worker writes: a user whose state would be larger "
    "has its oldest facts dropped first (counted in desktrace_stream_state_shed_total). Keep it below the "
    "changelog topic's max.message.bytes (the broker's default is 1048588)",
    "state_format": "version of the state table values this worker writes (it reads 2, 3 and 4). 2 keeps "
    "their recent part in stored (uncompressed) zlib blocks; 3 drops that framing too, up to a fifth "
    "less CPU per write; 4 also writes that part's numbers as raw 64-bit columns (less CPU again, larger "
    "values). Releases before 3 (or 4) was added cannot read it: set it only once every worker reads it, "
    "and back to 2 (and wait until every user has been written again) before going back to an older "
    "release (docs/operations.md)",
}


def metrics_host_port(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` allowed; ``:port`` = all interfaces) as a tuple; raises ``ValueError``."""
    try:
        return parse_addr(addr, default_host="0.0.0.0")
    except ValueError:
        raise ValueError(f"metrics_addr must be host:port, not {addr!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktrace-stream",
        description=(
            "Sessions stream worker: consumes the raw event topics, keeps each user's sessionizer state "
            "in a changelog-backed Faust table and publishes activity/inactivity sessions (and "
            "retractions) to the sessions topic. Every flag is also a DESKTRACE_* variable and a TOML "
            "key (see --config)."
        ),
    )
    add_arguments(parser, StreamSettings, STREAM_HELP)
    return parser


def load_settings(
    argv: list[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[StreamSettings, argparse.Namespace]:
    """Parse ``argv`` and build the settings (defaults < TOML < env < flags); raises ``SettingsError``."""
    args = build_parser().parse_args(argv)
    return load(StreamSettings, args, section=SECTION, env=env), args
