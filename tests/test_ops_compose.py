"""docker-compose.yml: valid for Docker Compose v2, every service it names exists, and the Grafana and
Prometheus files it mounts are the ones in the repo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops_helpers import DEPLOY, ROOT, tool

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _console_scripts() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def test_services_exist(compose: dict) -> None:
    services = compose["services"]
    assert {
        "kafka",
        "postgres",
        "prometheus",
        "grafana",
        "stream",
        "sink-raw",
        "sink-sessions",
        "gateway",
    } <= set(services)
    scripts = _console_scripts()
    for name, svc in services.items():
        assert svc.get("image"), name
        if ":" in svc["image"] and not svc["image"].startswith("desktrace:"):
            assert not svc["image"].endswith(":latest"), f"{name}: pin the image tag"
        cmd = svc.get("command")
        if svc["image"].startswith("desktrace:"):
            assert cmd and cmd[0] in scripts, f"{name}: {cmd} is not a desktrace console script"
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft"


def test_monitoring_files_are_the_repos(compose: dict) -> None:
    mounts = [v for s in ("prometheus", "grafana") for v in compose["services"][s]["volumes"]]
    sources = {m.split(":")[0] for m in mounts}
    assert sources == {
        "./deploy/prometheus/prometheus.yml",
        "./deploy/prometheus/rules",
        "./deploy/grafana/provisioning",
        "./deploy/grafana/dashboards",
    }
    for s in sources:
        assert (ROOT / s).exists(), s
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        t.split(":")[0] for j in scrape["scrape_configs"] for c in j["static_configs"] for t in c["targets"]
    }
    assert targets <= set(compose["services"]), "Prometheus scrapes services compose defines"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/desktrace.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_docker_compose_config() -> None:
    """`docker compose config` validates the file against the Compose specification (no engine needed)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        argv = [docker, "compose"]
    else:
        argv = [tool("docker-compose", str(Path.home() / "go" / "bin"))]
    out = subprocess.run(
        [*argv, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
