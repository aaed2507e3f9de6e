"""Every metric a Grafana panel or an alert rule queries is exported by a running service.

Runs the real services (stream, both sinks, gateway) against the real local Kafka and PostgreSQL, pushes a
little traffic through them (raw events of every type, a legacy report, a poison record), then scrapes each
service's /metrics and checks every ``desktrace_*`` name the dashboards and rules use.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from devstack.pipeline import LocalPipeline
from proto import Topics, encode_event, event_user_key
from tests.support.events import every_event_type

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
import generate

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

NAME = re.compile(r"\bdesktrace_[a-z0-9_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def referenced_names() -> set[str]:
    return {m for e in generate.expressions() for m in NAME.findall(e)}


def exported_names(text: str) -> set[str]:
    """Sample names and declared families (a labelled metric with no child yet only has HELP/TYPE lines)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            family = line.split()[2]
            names.add(family)
            names.update(family + s for s in SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def _traffic(bootstrap: str, topics: Topics) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for e in every_event_type(user="metrics", domain="ops"):
            await producer.send(topics.for_event(e), encode_event(e), key=event_user_key(e).encode())
        await producer.send(topics.hid, b"\xc1 not msgpack", key=b"ops\\metrics")
        await producer.flush()
    finally:
        await producer.stop()


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def test_every_dashboard_and_alert_metric_is_exported(
    kafka_bootstrap: str, fresh_pg_dsn: str, topics: Topics, tmp_path: Path
) -> None:
    wanted = referenced_names()
    assert len(wanted) > 20
    with LocalPipeline(
        kafka_bootstrap, fresh_pg_dsn, tmp_path, topic_prefix=topics.prefix, close_timeout_s=2
    ) as pipeline:
        asyncio.run(_traffic(kafka_bootstrap, topics))
        body = json.dumps({"user": "legacy.metrics", "state": "working"}).encode()
        req = urllib.request.Request(
            pipeline.web_url + "api/report", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=15) as r:
            assert json.loads(r.read()) == {"success": True}
        missing: set[str] = set(wanted)
        deadline = time.monotonic() + 60
        while missing and time.monotonic() < deadline:
            exported: set[str] = set()
            for url in pipeline.metrics_urls.values():
                exported |= exported_names(_scrape(url))
            missing = wanted - exported
            if missing:
                time.sleep(1)
        assert not missing, f"queried by dashboards/rules but exported by no service: {sorted(missing)}"
