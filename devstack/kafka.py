"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) for development and tests.

``KafkaInstance(data_dir, port, controller_port)`` formats ``data_dir`` on first start and runs
``kafka.Kafka`` detached (its own session, a pid file, output to files in ``data_dir``), so it outlives the
process that started it; any later process can find it (``is_running``) or stop it (``stop``). With
``controller=False`` it is a broker only, of another instance's controller; with ``initial_controllers``
it is one controller of a quorum of several (``devstack.cluster``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devstack._proc import (
    DevstackError,
    Progress,
    Ticker,
    live_pid,
    run_sync,
    stderr_progress,
    tail,
    terminate,
)
from devstack.jars import KAFKA_VERSION, find_java, kafka_lib_dir

JVM_HEAP = ("-Xms256m", "-Xmx512m")
JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)

LOG4J2 = """\
# Written by devstack/kafka.py: warnings and errors only, to a size-capped file.
status = warn
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
"""


def dev_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    host: str = "127.0.0.1",
    partitions: int = 6,
    node_id: int = 1,
    controller: bool = True,
) -> dict[str, str]:
    """server.properties of a development cluster's node: loopback only, replication factor 1 (a
    multi-node cluster overrides the replication settings, ``devstack.cluster``). ``controller`` false: a
    broker only, whose controller listens on ``controller_port``."""
    listeners = f"PLAINTEXT://{host}:{port}"
    if controller:
        listeners += f",CONTROLLER://{host}:{controller_port}"
    return {
        "process.roles": "broker,controller" if controller else "broker",
        "node.id": str(node_id),
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
        "log.retention.bytes": str(1 << 30),
        "log.segment.bytes": str(64 << 20),
        "log.retention.check.interval.ms": "300000",
        # Kafka's default, stated: a record batch up to 1 MiB + 12 bytes, so every producer's
        # max_request_size of 1,048,576 (common.kafka.MAX_REQUEST_SIZE) is accepted.
        "message.max.bytes": "1048588",
    }


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what ``random-uuid`` prints).
    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-`` (1 in 64 would): the storage
    tool's argument parser takes such a value for an option and refuses to format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def broker_answers(bootstrap: str, wait_s: float = 5.0, **client_options: object) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request and lists at least one broker
    (in KRaft a broker is listed only once it is registered and unfenced, i.e. can host partitions)."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(wait_s * 1000), **client_options
    )
    try:
        await asyncio.wait_for(client.bootstrap(), wait_s)
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


class KafkaInstance:
    """One single-node KRaft Kafka whose state lives in ``data_dir``.

    Guarantees: listens on ``host`` only (loopback by default); ``start()`` returns only once the broker
    answers metadata requests (or raises :class:`DevstackError` with the log's tail); ``start()`` on a
    running instance is a no-op; ``stop()`` leaves no process behind (SIGTERM, then SIGKILL after
    ``stop_timeout``). The instance is detached from the starting process and found again through
    ``data_dir/kafka.pid``.

    ``extra_properties`` override server.properties, ``format_args`` are passed to ``StorageTool format``
    and ``probe_options`` are the aiokafka options of the readiness probe: the hooks for TLS listeners,
    SASL/SCRAM users (``--add-scram``) and an authenticated probe of a secure instance.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = 19092,
        controller_port: int = 19093,
        *,
        host: str = "127.0.0.1",
        version: str = KAFKA_VERSION,
        partitions: int = 6,
        heap: tuple[str, ...] = JVM_HEAP,
        extra_properties: Mapping[str, str] | None = None,
        format_args: Sequence[str] = (),
        probe_options: Mapping[str, Any] | None = None,
        cache_dir: Path | None = None,
        progress: Progress = stderr_progress,
        node_id: int = 1,
        controller: bool = True,
        cluster_id: str | None = None,
        initial_controllers: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.controller_port = controller_port
        self.host = host
        self.version = version
        self.partitions = partitions
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.format_args = tuple(format_args)
        self.probe_options = dict(probe_options or {})
        self.cache_dir = cache_dir
        self.progress = progress
        self.node_id = node_id
        self.controller = controller  #: false: a broker only, of the controller on ``controller_port``
        self.cluster_id = cluster_id  #: None: a new one when first formatted
        #: A controller of a quorum of several: the quorum's voters, ``id@host:port:directory-id``
        #: comma-separated (``StorageTool format --initial-controllers``); None: this controller alone.
        self.initial_controllers = initial_controllers

    # ---- paths ---------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "config" / "server.properties"

    @property
    def log_file(self) -> Path:
        """Warnings and errors of the broker (log4j2)."""
        return self.data_dir / "logs" / "server.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.data_dir / "logs" / "kafka.out"

    @property
    def pid(self) -> int | None:
        """The broker's pid when it is running, else None."""
        return live_pid(self.pid_file, "kafka.Kafka", str(self.properties_file))

    def is_running(self) -> bool:
        return self.pid is not None

    def answers(self, timeout: float = 5.0) -> bool:
        """True when the broker answers metadata requests now."""
        if not port_open(self.host, self.port):
            return False
        return run_sync(lambda: broker_answers(self.bootstrap, timeout, **self.probe_options))

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        """Start the broker (formatting ``data_dir`` the first time) and wait until it answers."""
        if self.is_running():
            self._wait_ready(timeout, None)
            return
        own_ports = (self.port, self.controller_port) if self.controller else (self.port,)
        busy = [p for p in own_ports if port_open(self.host, p)]
        if busy:
            raise DevstackError(
                f"cannot start Kafka in {self.data_dir}: {self.host}:{busy[0]} is already in use by another "
                "process; choose other ports (DESKTRACE_LOCAL_KAFKA_PORT, ..._CONTROLLER_PORT)"
            )
        java = find_java()
        lib = kafka_lib_dir(self.version, self.cache_dir, self.progress)
        self._write_config()
        self._format(java, lib)
        self.console_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            *self.heap,
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.data_dir / 'config' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(self.properties_file),
        ]
        self.progress(f"starting Kafka {self.version} on {self.bootstrap} (data {self.data_dir})")
        with open(self.console_file, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n", encoding="ascii")
        try:
            self._wait_ready(timeout, proc)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
        ticker = Ticker(self.progress, f"Kafka at {self.bootstrap}")
        delay = 0.2
        while True:
            if proc is not None and proc.poll() is not None:
                raise DevstackError(
                    f"Kafka exited with code {proc.returncode} while starting; {self.console_file}:\n"
                    f"{tail(self.console_file)}\n{self.log_file}:\n{tail(self.log_file)}"
                )
            if proc is None and not self.is_running():
                raise DevstackError(f"Kafka in {self.data_dir} stopped while waiting for it")
            if self.answers(timeout=3.0):
                self.progress(f"Kafka answers on {self.bootstrap} after {ticker.elapsed():.1f}s")
                return
            if ticker.elapsed() > timeout:
                raise DevstackError(
                    f"Kafka did not answer on {self.bootstrap} within {timeout:.0f}s; {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            ticker.tick()
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker; returns False when it was not running."""
        pid = self.pid
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self.progress(f"stopping Kafka (pid {pid})")
        if not terminate(pid, timeout):
            self.progress(f"Kafka (pid {pid}) did not stop within {timeout:.0f}s: killed")
        self.pid_file.unlink(missing_ok=True)
        return True

    # ---- files ---------------------------------------------------------------------------------------
    def _quorum_args(self) -> list[str]:
        """How ``StorageTool format`` sets up the metadata quorum for this node."""
        if not self.controller:
            return ["--no-initial-controllers"]
        if self.initial_controllers:
            return ["--initial-controllers", self.initial_controllers]
        return ["--standalone"]

    def _write_config(self) -> None:
        config = self.data_dir / "config"
        config.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        props = dev_properties(
            self.port, self.controller_port, self.data_dir / "kraft", self.host, self.partitions,
            node_id=self.node_id, controller=self.controller,
        )
        props.update(self.extra_properties)
        text = "# Written by devstack/kafka.py on every start; edit extra_properties instead.\n"
        text += "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_file.write_text(text, encoding="utf-8")
        (config / "log4j2.properties").write_text(
            LOG4J2.format(logs=self.data_dir / "logs"), encoding="utf-8"
        )

    def _format(self, java: str, lib: Path) -> None:
        meta_file = self.data_dir / "instance.json"
        if (self.data_dir / "kraft" / "meta.properties").exists():
            try:
                meta = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            formatted_port = meta.get("controller_port", self.controller_port)
            if formatted_port != self.controller_port:
                raise DevstackError(
                    f"Kafka in {self.data_dir} was formatted with controller port {formatted_port}, not "
                    f"{self.controller_port}: use that port or remove {self.data_dir} to start afresh"
                )
            return
        cluster_id = self.cluster_id or new_cluster_id()
        self.progress(f"formatting Kafka storage in {self.data_dir / 'kraft'} (cluster {cluster_id})")
        proc = subprocess.run(
            [
                java,
                "-Xmx256m",
                "-cp",
                f"{lib}/*",
                f"-Dlog4j2.configurationFile={self.data_dir / 'config' / 'log4j2.properties'}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.properties_file),
                *self._quorum_args(),
                *self.format_args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise DevstackError(
                f"formatting Kafka storage failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        meta_file.write_text(
            json.dumps(
                {"cluster_id": cluster_id, "controller_port": self.controller_port, "version": self.version}
            )
            + "\n",
            encoding="utf-8",
        )
