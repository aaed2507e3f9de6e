"""Helpers for the sink tests and benchmark: a realistic event mix, publishing, bounded waiting.

Not used by the services; kept in the package so tests and ``bench/`` share one definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from devstack.pipeline import free_port as free_port  # re-exported for the tests
from proto.codec import encode_event, encode_session
from proto.events import (
    DocumentSave,
    Envelope,
    HardwareKeyboardEvent,
    HardwareMouseClick,
    Heartbeat,
    Lock,
    UiNode,
    Unlock,
    WindowSwitch,
    WindowUpdate,
)
from proto.keys import event_user_key
from proto.sessions import SessionMessage
from proto.topics import Topics
from sinks.metrics import SinkMetrics
from sinks.runner import SinkRunner
from sinks.settings import SinkSettings
from sinks.writers import Writer

_APPS = [
    ("chrome.exe", "https://intranet.example.com/wiki/page", "Wiki - Chrome"),
    ("EXCEL.EXE", "", "budget.xlsx - Excel"),
    ("WINWORD.EXE", "", "report.docx - Word"),
    ("outlook.exe", "", "Inbox - Outlook"),
    ("firefox.exe", "https://mail.example.org/inbox?x=1", "Mail - Firefox"),
]


def event_mix(
    n: int,
    agents: int = 4,
    start: datetime | None = None,
    seed: int = 7,
    step_ms: int = 700,
) -> list[Envelope]:
    """``n`` events from ``agents`` agents (one user each), in the proportions a desktop produces: mostly
    throttled HID events, window switches/updates, a heartbeat a minute, a few locks and saves."""
    rnd = random.Random(seed)
    if start is None:  # yesterday 08:00 UTC: inside any retention, spanning one or two partitions
        start = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=1)
    seqs = [0] * agents
    out: list[Envelope] = []
    for i in range(n):
        a = i % agents
        seqs[a] += 1
        ts = start + timedelta(milliseconds=step_ms * (i // agents) + a)
        app, url, title = _APPS[rnd.randrange(len(_APPS))]
        env: dict[str, Any] = {
            "agent_id": f"00000000-0000-4000-8000-{a:012d}",
            "seq": seqs[a],
            "ts": ts,
            "user": f"user{a}",
            "domain": "CORP",
            "host": f"PC-{a:03d}",
            "host_domain": "corp.example.com",
            "tz": "Europe/Berlin",
            "utc_offset_min": 60,
            "agent_version": "1.0.0",
        }
        ctx: dict[str, Any] = {
            "app": app,
            "title": title,
            "url": url,
            "pid": 1000 + a,
            "exe_path": f"C:\\Program Files\\{app}",
            "hierarchy": [
                UiNode(name=title, control_type="Window"),
                UiNode(name="Body", control_type="Pane"),
            ],
        }
        r = rnd.random()
        ev: Envelope
        if r < 0.45:
            ev = HardwareKeyboardEvent(input="hardware", **env, **ctx)
        elif r < 0.70:
            ev = HardwareMouseClick(input="hardware", **env, **ctx)
        elif r < 0.82:
            ev = WindowSwitch(input="hardware", **env, **ctx)
        elif r < 0.90:
            ev = WindowUpdate(input="none", **env, **ctx)
        elif r < 0.97:
            ev = Heartbeat(input="none", last_input_ts=ts - timedelta(seconds=3), idle_ms=3000, **env)
        elif r < 0.98:
            ev = DocumentSave(input="hardware", file_path="C:\\docs\\report.docx", **env, **ctx)
        elif r < 0.99:
            ev = Lock(input="none", **env)
        else:
            ev = Unlock(input="hardware", **env)
        out.append(ev)
    return out


async def publish(
    bootstrap: str,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    **options: object,
) -> int:
    """Publish ``(topic, key, value)`` records in order (acks=all); returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, **options)
    await producer.start()
    n = 0
    try:
        futures = []
        for topic, key, value in records:
            futures.append(await producer.send(topic, value=value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


def event_records(topics: Topics, events: Sequence[Envelope]) -> list[tuple[str, bytes | None, bytes | None]]:
    """Each event as ``(its raw topic, user key, msgpack bytes)``."""
    return [(topics.for_event(e), event_user_key(e).encode(), encode_event(e)) for e in events]


def session_records(
    topics: Topics, messages: Sequence[SessionMessage]
) -> list[tuple[str, bytes | None, bytes | None]]:
    """Each session message as ``(session topic, user key, JSON bytes)``."""
    return [(topics.sessions, (m.user_key or "").encode(), encode_session(m)) for m in messages]


async def wait_until(probe: Callable[[], Awaitable[bool]], within: float, interval: float = 0.25) -> bool:
    """Poll ``probe`` until it returns True or ``within`` seconds pass; returns its last answer."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        try:
            if await probe():
                return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        if loop.time() >= end:
            return False
        await asyncio.sleep(interval)


async def fetchval(dsn: str, sql: str, *args: object) -> object:
    """One value from a short-lived connection."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def sink_env(bootstrap: str, dsn: str, topics: Topics, metrics_port: int, **extra: object) -> dict[str, str]:
    """Environment for a ``desktrace-sink`` subprocess (inherits PATH etc., overrides DESKTRACE_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
    env.update(
        DESKTRACE_KAFKA_BOOTSTRAP=bootstrap,
        DESKTRACE_PG_DSN=dsn,
        DESKTRACE_TOPIC_PREFIX=topics.prefix,
        DESKTRACE_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
        DESKTRACE_KAFKA_SESSION_TIMEOUT_MS="6000",
        DESKTRACE_RETRY_INITIAL_S="0.2",
        DESKTRACE_RETRY_MAX_S="2",
        DESKTRACE_BATCH_WAIT_MS="200",
    )
    env.update({f"DESKTRACE_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    """``(status, body)`` of a GET on the sink's health server (status 0 when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def settings_for(bootstrap: str, dsn: str, topics: Topics, **kw: object) -> SinkSettings:
    return msgspec.structs.replace(
        SinkSettings(),
        kafka_bootstrap=bootstrap,
        pg_dsn=dsn,
        topic_prefix=topics.prefix,
        batch_wait_ms=200,
        retry_initial_s=0.2,
        retry_max_s=2.0,
        kafka_session_timeout_ms=6000,
        **kw,
    )


@contextlib.asynccontextmanager
async def running(writer: Writer, settings: SinkSettings) -> AsyncIterator[SinkRunner]:
    runner = SinkRunner(writer, settings, SinkMetrics(writer.table))
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        try:
            await asyncio.wait_for(task, 20)
        except TimeoutError:
            task.cancel()


async def dead_letters(bootstrap: str, topics: Topics, expected: int, within: float = 15.0) -> list[object]:
    consumer = AIOKafkaConsumer(
        topics.deadletter, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[object] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while len(out) < expected and loop.time() < end:
            got = await consumer.getmany(timeout_ms=500)
            for recs in got.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


class SinkProcess:
    """One ``desktrace-sink <kind>`` subprocess (this interpreter), its stderr (JSON logs) in ``log``."""

    def __init__(self, kind: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sinks.cli", kind], env=env, stdout=subprocess.DEVNULL, stderr=self._fh
        )

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last commit."""
        self.proc.kill()
        self.proc.wait(10)
        self._fh.close()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode
