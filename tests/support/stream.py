"""The stream worker's test kit: its settings, a sessions-topic view that applies upserts and retractions,
and the offline oracle (``desktrace-sessionize``, the same core in batch mode)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from proto import events as E
from proto.codec import decode_session_message, event_to_json
from proto.sessions import Session, SessionRetraction, fold_sessions
from proto.topics import Topics
from tests.support.kafka import Record
from tests.support.process import BIN as BIN
from tests.support.process import ServiceHandle, worker_process


def write_jsonl(events: Iterable[E.Envelope], path: Path) -> None:
    with path.open("wb") as f:
        for e in events:
            f.write(event_to_json(e) + b"\n")


# ---- the offline oracle ---------------------------------------------------------------------------------


#: The sessionizer settings both the test workers and the offline oracle run with.
SESSIONIZER_ENV: Mapping[str, str] = {
    "DESKTRACE_GAP": "300", "DESKTRACE_PRESENCE_TIMEOUT": "180", "DESKTRACE_RETENTION": "259200",
    "DESKTRACE_LEGACY_MAX_SPAN": "14400",
}


def offline_sessions(events: Iterable[E.Envelope], workdir: Path, timeout: float = 120) -> dict[str, Session]:
    """Run ``desktrace-sessionize`` (same core, batch mode) on ``events``; its sessions by id."""
    src = workdir / "offline-in.jsonl"
    write_jsonl(events, src)
    proc = subprocess.run(
        [str(BIN / "desktrace-sessionize"), str(src)], env={**os.environ, **SESSIONIZER_ENV},
        capture_output=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"desktrace-sessionize failed ({proc.returncode}): {err}")
    messages = (decode_session_message(line) for line in proc.stdout.splitlines() if line.strip())
    return dict(fold_sessions(messages))


# ---- the sessions topic ---------------------------------------------------------------------------------


class SessionView:
    """The sessions topic as a consumer that applies upserts and retractions by ``session_id`` sees it."""

    def __init__(self, bootstrap: str, topics: Topics, **client_options: Any) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            topics.sessions, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None, **client_options,
        )
        self.sessions: dict[str, Session] = {}
        self.messages = 0
        self.retractions = 0

    async def __aenter__(self) -> SessionView:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, wait_s: float = 0.5) -> int:
        got = await self.consumer.getmany(timeout_ms=int(wait_s * 1000), max_records=5000)
        messages = [decode_session_message(r.value) for records in got.values() for r in records]
        self.retractions += sum(isinstance(m, SessionRetraction) for m in messages)
        fold_sessions(messages, self.sessions)
        self.messages += len(messages)
        return len(messages)

    async def wait_equal(
        self, expected: Mapping[str, Session], within_s: float, keep: Callable[[Session], bool] | None = None
    ) -> bool:
        """Poll until the applied view (its sessions ``keep`` accepts, if given) equals ``expected``
        (bounded by ``within_s``)."""

        def seen() -> dict[str, Session]:
            return self.sessions if keep is None else {k: s for k, s in self.sessions.items() if keep(s)}

        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            await self.poll(0.5)
            if seen() == expected:
                return True
        await self.poll(0.2)
        return seen() == expected


def describe_difference(got: Mapping[str, Session], expected: Mapping[str, Session]) -> str:
    """A short, readable summary of how two session sets differ (for assertion messages)."""
    missing = [expected[k] for k in expected.keys() - got.keys()]
    extra = [got[k] for k in got.keys() - expected.keys()]
    changed = [(got[k], expected[k]) for k in got.keys() & expected.keys() if got[k] != expected[k]]

    def short(s: Session) -> str:
        return f"{s.user_key} {s.kind}/{s.reason} {s.start:%H:%M:%S}-{s.end:%H:%M:%S} {s.hosts}"

    lines = [f"got {len(got)} sessions, expected {len(expected)}"]
    lines += [f"missing: {short(s)}" for s in missing[:10]]
    lines += [f"extra: {short(s)}" for s in extra[:10]]
    lines += [f"changed: {short(g)} != {short(e)}" for g, e in changed[:10]]
    return "\n".join(lines)


# ---- the worker's settings ----------------------------------------------------------------------------


def worker_env(bootstrap: str, topics: Topics, data_dir: Path, **extra: str) -> dict[str, str]:
    """Settings for a test worker: the test's topics and app id, a 3 s close timeout, fast group moves."""
    env = {
        "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap,
        "DESKTRACE_TOPIC_PREFIX": topics.prefix,
        "DESKTRACE_STREAM_APP_ID": app_id_for(topics),
        "DESKTRACE_STREAM_DATA_DIR": str(data_dir),
        "DESKTRACE_METRICS_ADDR": "127.0.0.1:0",
        "DESKTRACE_CLOSE_TIMEOUT": "3",
        "DESKTRACE_SCAN_INTERVAL": "0.5",
        "DESKTRACE_SESSION_TIMEOUT": "6",
        "DESKTRACE_LOG_LEVEL": "INFO",
        **SESSIONIZER_ENV,
    }
    env.update(extra)
    return env


def app_id_for(topics: Topics) -> str:
    return f"{topics.prefix}stream"


async def delete_internal_topics(bootstrap: str, app_id: str, **client_options: Any) -> None:
    """Best-effort removal of a test worker's Faust internal topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(app_id + "-")]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()



class WorkerPool:
    """The ``desktrace-stream`` processes one test starts on its topics (each name its own data directory
    and log under ``tmp_path``; the same name again is a restart on the same state). :meth:`close` stops
    them and removes the app's internal topics (best effort)."""

    def __init__(self, bootstrap: str, topics: Topics, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.tmp_path = tmp_path
        self.started: list[ServiceHandle] = []

    def start(self, name: str = "worker", ready_timeout: float = 60.0, **extra: str) -> ServiceHandle:
        env = worker_env(self.bootstrap, self.topics, self.tmp_path / f"data-{name}", **extra)
        worker = worker_process(env, self.tmp_path / f"{name}.log")
        self.started.append(worker)
        return worker.start(ready_timeout=ready_timeout)

    def close(self) -> None:
        for worker in self.started:
            worker.stop()
        try:
            asyncio.run(asyncio.wait_for(delete_internal_topics(self.bootstrap, app_id_for(self.topics)), 10))
        except Exception:
            pass


# ---- driving a worker ---------------------------------------------------------------------------------

#: How long a test waits for a worker's sessions topic to equal the offline result.
OUTPUT_WAIT_S = 45.0


async def trickle(bootstrap: str, records: list[Record], every_s: float) -> None:
    """Send ``records`` (topic, key, value) one at a time, each acknowledged, ``every_s`` apart."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
            await asyncio.sleep(every_s)
    finally:
        await producer.stop()


async def wait_metric(worker: ServiceHandle, name: str, at_least: float, within_s: float) -> bool:
    """Whether ``worker``'s metric ``name`` reaches ``at_least`` within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if worker.metric(name) >= at_least:
            return True
        await asyncio.sleep(0.05)
    return False
