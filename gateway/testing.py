"""Helpers for the gateway's tests (and anyone driving a real gateway): run ``desktrace-gateway`` as a
subprocess on a free loopback port, and seed the report tables."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import asyncpg

from proto.sessions import Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    loopback port; yield its base URL once ``/healthz`` answers; stop it afterwards."""
    port = free_port()
    full = {**os.environ, **env, "DESKTRACE_HTTP_ADDR": f"127.0.0.1:{port}"}
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(gateway_command(), env=full, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"desktrace-gateway exited with {proc.returncode} before answering")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"desktrace-gateway did not answer within {timeout_s} s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if log_path:
            out.close()  # type: ignore[union-attr]


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
