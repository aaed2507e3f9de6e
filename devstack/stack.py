"""The local stack (Kafka + PostgreSQL + topics) behind ``desktrace-local`` and the test fixtures.

A service named by ``DESKTRACE_KAFKA_BOOTSTRAP`` / ``DESKTRACE_PG_DSN`` is *external*: used, never started
or stopped, unless it is this stack's own address (then the variable is what an earlier ``up`` exported, and
the local instance is managed as usual). Local instances keep their state in ``state_dir`` (default
``~/.local/state/desktrace/local``); ``up`` and ``down`` hold ``state_dir/.lock`` so concurrent callers
(two test sessions) do not race.
"""

from __future__ import annotations

import fcntl
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from devstack._proc import Progress, run_sync, stderr_progress
from devstack.kafka import KafkaInstance, port_open
from devstack.postgres import PostgresInstance
from devstack.secure import SecureKafka
from devstack.topics import ensure_topics
from proto.topics import Topics

DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_PG_PORT = 15432


def default_state_dir() -> Path:
    env = os.environ.get("DESKTRACE_LOCAL_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "desktrace" / "local"


@dataclass
class StackConfig:
    """What ``up`` should provide. ``secure``: run the TLS + SASL/SCRAM Kafka of ``devstack.secure``
    (its own data dir ``state_dir/kafka-secure``, on ``kafka_port``) with per-service users and ACLs."""

    state_dir: Path = field(default_factory=default_state_dir)
    kafka_port: int = DEFAULT_KAFKA_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    pg_port: int = DEFAULT_PG_PORT
    kafka_bootstrap: str = ""  # external Kafka when set (and not this stack's own address)
    pg_dsn: str = ""  # external PostgreSQL when set (and not this stack's own address)
    topic_prefix: str = ""
    partitions: int = 6
    create_topics: bool = True
    kafka_client_options: dict[str, Any] = field(default_factory=dict)
    secure: bool = False


@dataclass
class UpResult:
    """Where the services are and which ones this call started."""

    kafka_bootstrap: str
    pg_dsn: str
    started: list[str]
    topics_created: list[str]
    extra_exports: list[str] = field(default_factory=list)  # the secure stack's client settings

    def exports(self) -> list[str]:
        return [
            f"export DESKTRACE_KAFKA_BOOTSTRAP={shlex.quote(self.kafka_bootstrap)}",
            f"export DESKTRACE_PG_DSN={shlex.quote(self.pg_dsn)}",
            *self.extra_exports,
        ]


def _is_loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


class LocalStack:
    """Starts, finds and stops the local services of one state directory."""

    def __init__(self, config: StackConfig | None = None, progress: Progress = stderr_progress) -> None:
        self.config = config or StackConfig()
        self.progress = progress
        state = self.config.state_dir
        self.secure_kafka: SecureKafka | None = None
        self.kafka: KafkaInstance
        if self.config.secure:
            self.secure_kafka = SecureKafka(
                state / "kafka-secure",
                self.config.kafka_port,
                self.config.controller_port,
                partitions=self.config.partitions,
                progress=progress,
            )
            self.kafka = self.secure_kafka.instance
        else:
            self.kafka = KafkaInstance(
                state / "kafka",
                self.config.kafka_port,
                self.config.controller_port,
                partitions=self.config.partitions,
                progress=progress,
            )
        self.postgres = PostgresInstance(state / "postgres", self.config.pg_port, progress=progress)

    # ---- which services are ours ---------------------------------------------------------------------
    @property
    def kafka_external(self) -> bool:
        b = self.config.kafka_bootstrap.strip()
        if not b:
            return False
        if "," in b:
            return True
        host, _, port = b.rpartition(":")
        return not (_is_loopback(host) and port == str(self.config.kafka_port))

    @property
    def pg_external(self) -> bool:
        dsn = self.config.pg_dsn.strip()
        if not dsn:
            return False
        try:
            parts = urlsplit(dsn)
            port = parts.port
        except ValueError:
            return True
        if not (_is_loopback(parts.hostname) and port == self.config.pg_port):
            return True
        # Ours only when it is what an earlier `up` exported: this state dir's password (a stale password
        # file beside another server on our port must not make that server count as ours).
        try:
            ours = (self.postgres.data_dir / "password").read_text(encoding="utf-8").strip()
        except OSError:
            return True
        return unquote(parts.password or "") != ours

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.config.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ---- commands ------------------------------------------------------------------------------------
    def up(self, timeout: float = 90.0, only: set[str] | None = None) -> UpResult:
        """Start (or find) both services (or ``only`` those named: "kafka", "postgres") and create the
        topics; idempotent. An address is "" for a service not asked for."""
        started: list[str] = []
        bootstrap = dsn = ""
        with self._locked():
            if only is not None and "kafka" not in only:
                pass
            elif self.kafka_external:
                bootstrap = self.config.kafka_bootstrap
                self.progress(f"using Kafka at {bootstrap} (DESKTRACE_KAFKA_BOOTSTRAP): starting none")
            else:
                was = self.kafka.is_running()
                if self.secure_kafka is not None:
                    self.secure_kafka.prepare()
                self.kafka.start(timeout=timeout)
                if not was:
                    started.append("kafka")
                bootstrap = self.kafka.bootstrap
            if only is not None and "postgres" not in only:
                pass
            elif self.pg_external:
                dsn = self.config.pg_dsn
                self.progress("using PostgreSQL from DESKTRACE_PG_DSN: starting none")
            else:
                was = self.postgres.is_running()
                try:
                    self.postgres.start(timeout=timeout)
                except BaseException:
                    if "kafka" in started:  # leave nothing running that this failed call started
                        self.kafka.stop()
                    raise
                if not was:
                    started.append("postgres")
                dsn = self.postgres.dsn
        created: list[str] = []
        extra: list[str] = []
        kafka_opts = self.config.kafka_client_options
        if self.secure_kafka is not None and bootstrap and not self.kafka_external:
            kafka_opts = self.secure_kafka.client_options("admin")
            extra = self.secure_kafka.exports()
        if self.config.create_topics and bootstrap:
            topics = Topics(self.config.topic_prefix)
            created = run_sync(
                lambda: ensure_topics(bootstrap, topics, self.config.partitions, **kafka_opts)
            )
            if created:
                self.progress(f"created {len(created)} topics: {', '.join(created)}")
            else:
                self.progress(f"topics with prefix {self.config.topic_prefix!r} exist")
        if extra and self.secure_kafka is not None:
            n = self.secure_kafka.apply_acls(Topics(self.config.topic_prefix))
            self.progress(f"ACLs in place ({n} rules) for topic prefix {self.config.topic_prefix!r}")
        return UpResult(bootstrap, dsn, started, created, extra)

    def down(self, only: set[str] | None = None) -> list[str]:
        """Stop the local services of this state dir (never external ones); returns the ones stopped."""
        stopped: list[str] = []
        with self._locked():
            if (only is None or "postgres" in only) and self.postgres.stop():
                stopped.append("postgres")
            if (only is None or "kafka" in only) and self.kafka.stop():
                stopped.append("kafka")
        return stopped

    def status(self) -> list[dict[str, Any]]:
        """One entry per service: name, mode (local/external), running, pid, address, data dir."""
        out: list[dict[str, Any]] = []
        if self.kafka_external:
            host, _, port = self.config.kafka_bootstrap.split(",")[0].rpartition(":")
            out.append(
                {
                    "service": "kafka",
                    "mode": "external",
                    "address": self.config.kafka_bootstrap,
                    "running": port.isdigit() and port_open(host, int(port)),
                }
            )
        else:
            pid = self.kafka.pid
            out.append(
                {
                    "service": "kafka",
                    "mode": "local",
                    "address": self.kafka.bootstrap,
                    "pid": pid,
                    "running": pid is not None and port_open(self.kafka.host, self.kafka.port),
                    "controller_port": self.kafka.controller_port,
                    "data_dir": str(self.kafka.data_dir),
                    "log": str(self.kafka.log_file),
                }
            )
        if self.pg_external:
            parts = urlsplit(self.config.pg_dsn)
            running = bool(parts.hostname) and port_open(parts.hostname or "", parts.port or 5432)
            out.append(
                {
                    "service": "postgres",
                    "mode": "external",
                    "address": f"{parts.hostname}:{parts.port or 5432}",
                    "running": running,
                }
            )
        else:
            pid = self.postgres.pid
            out.append(
                {
                    "service": "postgres",
                    "mode": "local",
                    "address": f"{self.postgres.host}:{self.postgres.port}",
                    "pid": pid,
                    "running": pid is not None and port_open(self.postgres.host, self.postgres.port),
                    "data_dir": str(self.postgres.pgdata),
                    "log": str(self.postgres.log_file),
                }
            )
        return out
