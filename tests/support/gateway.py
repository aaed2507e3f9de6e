"""The gateway's test kit: run ``desktrace-gateway`` as a subprocess on a free loopback port, and seed the
report tables."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import asyncpg

from proto.sessions import Session
from tests.support.process import ServiceHandle, free_port


def gateway_command() -> list[str]:
    """``desktrace-gateway`` from the running interpreter's environment."""
    exe = Path(sys.executable).with_name("desktrace-gateway")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("desktrace-gateway")
    return [found] if found else [sys.executable, "-m", "gateway.cli"]


@contextlib.contextmanager
def running_gateway(
    env: Mapping[str, str], timeout_s: float = 20.0, log_path: Path | None = None
) -> Iterator[str]:
    """Start ``desktrace-gateway`` with ``env`` (DESKTRACE_* settings) added to this environment, on a free
    loopback port; yield its base URL once ``/healthz`` answers; stop it afterwards. Its output goes to
    ``log_path`` (truncated first), else to a temporary file that is removed afterwards."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "gateway.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")
        service = ServiceHandle(
            "desktrace-gateway",
            gateway_command(),
            {**env, "DESKTRACE_HTTP_ADDR": f"127.0.0.1:{port}"},
            log_path,
            port=port,
            ready_path="/healthz",
        )
        stack.callback(service.stop, 10.0)
        service.start(timeout_s)
        yield base


async def seed_sessions(dsn: str, sessions: Iterable[Session]) -> None:
    """Insert session records into ``sessions`` (as the session sink would)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.executemany(
            "INSERT INTO sessions (session_id, user_key, kind, reason, started_at, ended_at, duration_s,"
            " hosts, tz) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                (s.session_id, s.user_key, s.kind, s.reason, s.start, s.end, s.duration_s, s.hosts, s.tz)
                for s in sessions
            ],
        )
    finally:
        await conn.close()


async def seed_ui_event(
    dsn: str,
    user_key: str,
    ts: datetime,
    app: str,
    url_domain: str = "",
    url: str = "",
    seq: int = 0,
    tz: str = "UTC",
) -> None:
    """Insert one ``WindowSwitch`` into ``raw_events`` (creating its day partition)."""
    domain, _, login = user_key.partition("\\")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("SELECT raw_events_ensure_partition($1::date)", ts.date())
        await conn.execute(
            'INSERT INTO raw_events (agent_id, seq, ts, type, category, input, user_key, "user", domain,'
            " host, tz, app, url_domain, details) VALUES ('seed', $1, $2, 'WindowSwitch', 'ui', 'hardware',"
            " $3, $4, $5, 'pc1', $6, $7, $8, $9::jsonb)",
            seq,
            ts,
            user_key,
            login,
            domain,
            tz,
            app,
            url_domain or None,
            json.dumps({"url": url} if url else {}),
        )
    finally:
        await conn.close()
