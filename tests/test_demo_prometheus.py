"""The demo's local Prometheus (Debian's binary, which scripts/setup.sh installs): it scrapes the services
it is given under the Docker path's job names and evaluates the project's alert rules."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, start_http_server

from devstack._proc import DevstackError
from devstack.pipeline import free_port
from devstack.prometheus import RULES_DIR, LocalPrometheus, find_prometheus


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_scrapes_the_services_and_loads_the_alert_rules(tmp_path: Path) -> None:
    try:
        find_prometheus()
    except DevstackError as exc:
        pytest.fail(f"{exc} (scripts/setup.sh installs it)")
    registry = CollectorRegistry()
    Counter("desktrace_stream_events", "events", registry=registry).inc(3)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prom = LocalPrometheus({"stream": f"127.0.0.1:{port}"}, tmp_path / "prom")
    try:
        prom.start()
        deadline = time.monotonic() + 90
        health: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            targets = _get(prom.url + "api/v1/targets")["data"]["activeTargets"]
            health = [(t["labels"]["job"], t["health"]) for t in targets]
            if health == [("desktrace-stream", "up")]:
                break
            time.sleep(1)
        assert health == [("desktrace-stream", "up")]
        value = _get(prom.url + "api/v1/query?query=desktrace_stream_events_total")["data"]["result"]
        assert [float(r["value"][1]) for r in value] == [3.0]
        groups = _get(prom.url + "api/v1/rules")["data"]["groups"]
        loaded = {r["name"] for g in groups for r in g["rules"]}
        expected = {
            r["alert"]
            for f in RULES_DIR.glob("*.yml")
            for g in yaml.safe_load(f.read_text())["groups"]
            for r in g["rules"]
            if "alert" in r
        }
        assert expected and expected <= loaded
    finally:
        prom.stop()
        server.shutdown()
        thread.join(5)
    assert not prom.alive()
