"""A local Prometheus server for the demo: scrapes every demo service, evaluates the project's alert rules.

The same jobs (``desktrace-stream``, ``desktrace-sink-raw``, ``desktrace-sink-sessions``,
``desktrace-gateway``) and the same rule files (``deploy/prometheus/rules/*.yml``) as the Docker path's
``deploy/prometheus/prometheus.yml``, so what an operator sees here (targets, alerts, metrics) is what they
would watch in production. It runs Debian's ``prometheus`` binary (``scripts/setup.sh`` installs it) on a
free loopback port with its data under the demo's log directory, scraping every 5 s. Grafana stays on the
Docker path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from devstack._proc import DevstackError
from devstack.pipeline import ServiceProcess, free_port

#: The project's alert rules: the repository's ``deploy/prometheus/rules`` (present in a checkout).
RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules"
SCRAPE_INTERVAL_S = 5


def find_prometheus() -> str:
    """The ``prometheus`` binary on PATH (or Debian's /usr/bin/prometheus); else a DevstackError saying
    how to install it."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if not found:
        raise DevstackError(
            "no `prometheus` binary: install Debian's package (sudo apt-get install prometheus, "
            "or run scripts/setup.sh)"
        )
    return found


def rule_files(rules_dir: Path = RULES_DIR) -> list[Path]:
    """The alert rule files to load (none when the repository's deploy/ is not there)."""
    return sorted(rules_dir.glob("*.yml")) if rules_dir.is_dir() else []


def prometheus_config(
    targets: Mapping[str, str], rules: list[Path], interval_s: int = SCRAPE_INTERVAL_S
) -> str:
    """Prometheus configuration text: one job ``desktrace-<name>`` per ``name -> host:port`` target.

    Written as JSON, which is YAML too, so no YAML library is needed."""
    config = {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s"},
        "rule_files": [str(p) for p in rules],
        "scrape_configs": [
            {"job_name": f"desktrace-{name}", "static_configs": [{"targets": [address]}]}
            for name, address in targets.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


class LocalPrometheus:
    """A Prometheus process scraping ``targets`` (service name -> ``host:port`` serving ``/metrics``).

    ``start`` writes the configuration under ``state_dir``, starts the server and waits until it is ready;
    ``stop`` terminates it. ``url`` is its web address (targets, alerts, graphs)."""

    def __init__(self, targets: Mapping[str, str], state_dir: Path, port: int = 0) -> None:
        self.targets = dict(targets)
        self.state_dir = state_dir
        self.port = port or free_port()
        self.rules = rule_files()
        self.process: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60.0) -> None:
        binary = find_prometheus()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "prometheus.yml"
        config.write_text(prometheus_config(self.targets, self.rules), encoding="utf-8")
        self.process = ServiceProcess(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.state_dir / 'data'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            {},
            self.state_dir / "prometheus.log",
            health_url=f"http://127.0.0.1:{self.port}/-/ready",
        )
        self.process.start()
        try:
            self.process.wait_healthy(timeout)
        except BaseException:
            self.process.stop()
            raise

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
