"""A whole server-side pipeline (stream, both sinks, gateway) as processes, on a database of its own
(``tests.support.databases``): for tests that run it against a broker or cluster of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from proto.topics import Topics
from sinks.settings import default_metrics_addr
from stream.settings import load_settings
from tests.support.process import ServiceHandle, free_port, script
from tests.support.stream import SESSIONIZER_ENV


class Pipeline:
    """The four services of one pipeline with nothing but bootstrap, DSN and topic prefix set (plus the
    sessionizer settings the offline oracle uses, a short close timeout, and the gateway's HTTP port,
    which is an address people type, not derived)."""

    def __init__(self, bootstrap: str, dsn: str, prefix: str, log_dir: Path) -> None:
        self.topics = Topics(prefix)
        self.dsn = dsn
        common = {
            "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap,
            "DESKTRACE_PG_DSN": dsn,
            "DESKTRACE_TOPIC_PREFIX": prefix,
            "DESKTRACE_CLOSE_TIMEOUT": "3",
            **SESSIONIZER_ENV,
        }
        stream_port = load_settings([], env={"DESKTRACE_TOPIC_PREFIX": prefix})[0].metrics_address
        urls = {
            "stream": "http://127.0.0.1:" + stream_port.rsplit(":", 1)[1],
            "sink-raw": "http://" + default_metrics_addr("raw", prefix),
            "sink-sessions": "http://" + default_metrics_addr("sessions", prefix),
            "gateway": f"http://127.0.0.1:{free_port()}",
        }
        argv = {
            "stream": [script("desktrace-stream")],
            "sink-raw": [script("desktrace-sink"), "raw"],
            "sink-sessions": [script("desktrace-sink"), "sessions"],
            "gateway": [script("desktrace-gateway")],
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        self.services = {
            name: ServiceHandle(
                name, argv[name],
                {**common, **({"DESKTRACE_HTTP_ADDR": urls[name][7:]} if name == "gateway" else {})},
                log_dir / f"{name}.log", health_url=urls[name] + "/healthz", cwd=log_dir,
            )
            for name in argv
        }
        self.urls = urls
        self.cwd = log_dir

    def start(self) -> None:
        for s in self.services.values():
            s.start()

    def wait_ready(self, timeout: float) -> None:
        for s in self.services.values():
            s.wait_healthy(timeout)

    def stop(self) -> None:
        for s in self.services.values():
            s.stop()

    def dead(self) -> list[str]:
        return [n for n, s in self.services.items() if not s.alive()]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{s.log_tail(15)}" for n, s in self.services.items())


async def stored(dsn: str) -> tuple[int, int, dict[str, tuple[Any, ...]]]:
    """``(raw rows, distinct (agent_id, seq) among them, {session_id: (kind, start, end, user_key)})``."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        raw = await conn.fetchval("SELECT count(*) FROM raw_events")
        distinct = await conn.fetchval("SELECT count(DISTINCT (agent_id, seq)) FROM raw_events")
        rows = await conn.fetch("SELECT session_id, kind, started_at, ended_at, user_key FROM sessions")
    finally:
        await conn.close()
    return raw, distinct, {r["session_id"]: (r["kind"], r["started_at"], r["ended_at"], r["user_key"])
                           for r in rows}
