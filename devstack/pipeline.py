"""Runs desktrace's server-side services as local processes: the stream worker, both sinks and the gateway.

Used by the demo (``desktrace-demo``) and by tests that need the whole pipeline. Each service is the real
console script with its settings in the environment, its JSON logs in a file, and its own metrics port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devstack._proc import Progress, stderr_progress


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(name: str) -> str:
    """The console script beside this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else name


@dataclass
class ServiceProcess:
    """One service process: started with its environment, logging to ``log_path``, stopped with SIGTERM."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float) -> None:
        """Wait until ``health_url`` answers 200; raise with the log's tail when the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited; last log lines:\n{self.log_tail()}")
            if not self.health_url:
                return
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as r:  # noqa: S310 - loopback URL
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(
            f"{self.name} did not answer {self.health_url} within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class LocalPipeline:
    """Stream worker, raw and session sinks, and gateway against one Kafka, PostgreSQL and topic prefix.

    Use as a context manager; every process is stopped on exit. ``metrics_urls`` lists each service's
    ``/metrics`` address."""

    kafka_bootstrap: str
    pg_dsn: str
    log_dir: Path
    topic_prefix: str = ""
    close_timeout_s: float = 10.0
    http_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http_port = self.http_port or free_port()
        common = {
            "DESKTRACE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "DESKTRACE_PG_DSN": self.pg_dsn,
            "DESKTRACE_TOPIC_PREFIX": self.topic_prefix,
            "DESKTRACE_LOG_FORMAT": "json",
            **self.extra_env,
        }
        stream_port, raw_port, sessions_port = free_port(), free_port(), free_port()
        app_id = f"desktrace-stream{('-' + self.topic_prefix.strip('.')) if self.topic_prefix else ''}"
        specs = {
            "stream": (
                [_script("desktrace-stream")],
                {
                    "DESKTRACE_METRICS_ADDR": f"127.0.0.1:{stream_port}",
                    "DESKTRACE_CLOSE_TIMEOUT": str(self.close_timeout_s),
                    "DESKTRACE_STREAM_APP_ID": app_id,
                    "DESKTRACE_STREAM_DATA_DIR": str(self.log_dir / "stream-data"),
                },
                f"http://127.0.0.1:{stream_port}",
            ),
            "sink-raw": (
                [_script("desktrace-sink"), "raw"],
                {
                    "DESKTRACE_METRICS_ADDR": f"127.0.0.1:{raw_port}",
                },
                f"http://127.0.0.1:{raw_port}",
            ),
            "sink-sessions": (
                [_script("desktrace-sink"), "sessions"],
                {
                    "DESKTRACE_METRICS_ADDR": f"127.0.0.1:{sessions_port}",
                },
                f"http://127.0.0.1:{sessions_port}",
            ),
            "gateway": (
                [_script("desktrace-gateway")],
                {
                    "DESKTRACE_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
                },
                f"http://127.0.0.1:{self.http_port}",
            ),
        }
        for name, (argv, env, base) in specs.items():
            self.services[name] = ServiceProcess(
                name,
                argv,
                {**common, **env},
                self.log_dir / f"{name}.log",
                health_url=f"{base}/healthz",
            )

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {n: s.health_url.rsplit("/", 1)[0] + "/metrics" for n, s in self.services.items()}

    @property
    def metrics_targets(self) -> dict[str, str]:
        """Each service's ``host:port`` serving ``/metrics`` (what a Prometheus scrapes)."""
        return {n: s.health_url.split("/")[2] for n, s in self.services.items()}

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    def start(self, timeout: float = 90.0, progress: Progress = stderr_progress) -> None:
        # The sinks apply the migrations; start them first so the gateway finds its tables.
        for name in ("sink-raw", "sink-sessions", "stream", "gateway"):
            self.services[name].start()
        for name in ("sink-raw", "sink-sessions", "stream", "gateway"):
            progress(f"waiting for {name}")
            self.services[name].wait_healthy(timeout)

    def stop(self) -> None:
        for s in reversed(list(self.services.values())):
            s.stop()

    def __enter__(self) -> LocalPipeline:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
