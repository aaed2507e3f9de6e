"""The one handle on a service process in tests and benchmarks: the stream worker, a sink, the gateway.

It is devstack's :class:`~devstack.pipeline.ServiceProcess` (what the demo runs) plus what a test needs: wait
for a readiness path, find the port a service picked (``127.0.0.1:0``) in its JSON log, GET a probe, read a
metric, SIGKILL, and the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.pipeline import ServiceProcess
from devstack.pipeline import free_port as free_port  # re-exported: the kit's one free-port helper
from tests.support.metrics import http_get, metric_sum

#: The directory of this interpreter's console scripts (the venv's ``bin``).
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    """The console script ``name`` beside this interpreter, else ``name`` (found on PATH)."""
    here = BIN / name
    return str(here) if here.exists() else name


@dataclass
class ServiceHandle(ServiceProcess):
    """A real service process in its own session, stdout and stderr appended to ``log_path``.

    ``start()`` returns once ``ready_path`` answers 200 (or at once when it is empty) and raises with the
    log's tail when the process exits first. ``port`` is given, or read from the service's
    ``http endpoints listening`` log line. With ``inherit_env`` false the process sees ``env`` only. A service
    left to its defaults writes relative paths (the stream's ``./<app id>-data``) under ``cwd``."""

    port: int | None = None
    ready_path: str = ""
    inherit_env: bool = True
    cwd: Path | None = None  #: the working directory (None: this process's)

    def __post_init__(self) -> None:
        self._port_given = self.port is not None

    def start(self, ready_timeout: float = 60.0) -> ServiceHandle:  # type: ignore[override]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env={**os.environ, **self.env} if self.inherit_env else dict(self.env),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=self.cwd,
            )
        if not self.ready_path:
            return self
        if not self._port_given:  # a restarted service picks a new port
            self.port = None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.port is None:
                self.port = self._port_from_log(offset)
            if self.port is not None and self.get(self.ready_path)[0] == 200:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready within {ready_timeout}s:\n{self.tail()}")

    def _port_from_log(self, offset: int) -> int | None:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            for line in f:
                if b"http endpoints listening" in line:
                    try:
                        return int(json.loads(line)["port"])
                    except (ValueError, KeyError):
                        return None
        return None

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """``(status, body)`` of a GET on the service's HTTP port (0 when it does not answer)."""
        return http_get(f"http://127.0.0.1:{self.port}{path}", timeout)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` matching ``labels`` (0 when absent or unreachable)."""
        status, text = self.get("/metrics")
        return metric_sum(text, name, **labels) if status == 200 else 0.0

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:  # type: ignore[override]
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        super().stop(timeout)
        return None if self.proc is None else self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        return self.log_tail(lines)


def worker_process(env: dict[str, str], log_path: Path) -> ServiceHandle:
    """``desktrace-stream`` with ``env`` added to this environment, ready when ``/readyz`` answers 200."""
    return ServiceHandle("desktrace-stream", [script("desktrace-stream")], dict(env), log_path,
                         ready_path="/readyz")


def sink_process(kind: str, env: dict[str, str], log_path: Path) -> ServiceHandle:
    """``desktrace-sink <kind>`` with exactly ``env`` (see ``sinks.sink_env``), started (not awaited)."""
    return ServiceHandle(f"desktrace-sink {kind}", [sys.executable, "-m", "sinks.cli", kind], env, log_path,
                         inherit_env=False).start()
