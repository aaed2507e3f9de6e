"""Helpers for the stream worker's integration tests and benchmark: a realistic event generator, a worker
subprocess handle, a sessions-topic view that applies upserts and retractions, and the offline oracle.

Not used by the worker itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from proto import events as E
from proto.codec import decode_session_message, encode_event, event_to_json
from proto.keys import event_user_key
from proto.sessions import Session, SessionRetraction
from proto.topics import Topics

BIN = Path(sys.executable).parent


# ---- events --------------------------------------------------------------------------------------------


class _Agent:
    def __init__(self, rng: random.Random, user: str, domain: str, host: str, version: str) -> None:
        self.agent_id = str(uuid.UUID(int=rng.getrandbits(128)))
        self.user, self.domain, self.host, self.version = user, domain, host, version
        self.seq = 0
        self.last_input: datetime | None = None

    def make(self, cls: type[E.Envelope], ts: datetime, **kw: Any) -> E.Envelope:
        self.seq += 1
        if "input" not in kw:
            kw["input"] = "hardware" if cls.__name__.startswith("Hardware") else "none"
        if kw["input"] == "hardware":
            self.last_input = ts if self.last_input is None else max(self.last_input, ts)
        return cls(
            agent_id=self.agent_id, seq=self.seq, ts=ts, user=self.user, domain=self.domain, host=self.host,
            host_domain=self.domain, tz="Europe/Berlin", utc_offset_min=60, agent_version=self.version, **kw,
        )


def generate_events(
    seed: int = 7, users: int = 4, hours: float = 3.0, start: datetime | None = None
) -> list[E.Envelope]:
    """A few users' realistic morning, time-ordered: agent start and logon, heartbeats every 60 s (with
    ``last_input_ts``), throttled HID input in work bursts separated by idle gaps longer and shorter than
    the default G, UI events, a lock/unlock, a suspend/resume, a second host for one user, injected input,
    a legacy ``StateChange`` client, and a logoff/agent stop at the end."""
    rng = random.Random(seed)
    t0 = start or datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
    out: list[E.Envelope] = []
    for u in range(users):
        login = f"user{u}"
        hosts = ["pc-" + login] + (["laptop-" + login] if u == 1 else [])
        for h, host in enumerate(hosts):
            agent = _Agent(rng, login, "corp", host, rng.choice(["1.4.0", "1.4.1", "1.5.0"]))
            begin = t0 + timedelta(minutes=rng.randint(0, 20) + 45 * h)
            end = begin + timedelta(hours=hours - 0.75 * h, minutes=rng.randint(-10, 10))
            out += _agent_day(rng, agent, begin, end)
    # a legacy client (POST /api/report through the gateway)
    legacy = _Agent(rng, "legacy", "shop", "till-1", "")
    t = t0 + timedelta(minutes=5)
    state = "working"
    while t < t0 + timedelta(hours=hours):
        out.append(legacy.make(E.StateChange, t, state=state))
        state = "stopped" if state == "working" and rng.random() < 0.3 else "working"
        t += timedelta(seconds=rng.choice([60, 60, 60, 120, 400]))
    out.sort(key=lambda e: e.ts)
    return out


def _agent_day(rng: random.Random, a: _Agent, begin: datetime, end: datetime) -> list[E.Envelope]:
    evs = [a.make(E.AgentStart, begin), a.make(E.Logon, begin + timedelta(seconds=2))]
    t = begin + timedelta(seconds=5)
    next_hb = begin + timedelta(seconds=60)
    locked = False
    suspended_until: datetime | None = None
    hid = [E.HardwareKeyboardEvent, E.HardwareMouseClick, E.HardwareMouseScroll]
    while t < end:
        while next_hb <= t:
            if suspended_until is None or next_hb >= suspended_until:
                evs.append(a.make(E.Heartbeat, next_hb, last_input_ts=a.last_input,
                                  idle_ms=rng.randint(0, 60000), spool_events=rng.randint(0, 5)))
            next_hb += timedelta(seconds=60)
        r = rng.random()
        if r < 0.70 and not locked:  # a minute of work: throttled HID + maybe a window switch
            for cls in rng.sample(hid, rng.randint(1, 3)):
                evs.append(a.make(cls, t + timedelta(milliseconds=rng.randint(0, 59_999)), app="excel"))
            if rng.random() < 0.4:
                evs.append(a.make(E.WindowSwitch, t + timedelta(seconds=rng.randint(0, 59)),
                                  input="hardware", app="outlook", title="Inbox"))
            if rng.random() < 0.1:
                evs.append(a.make(E.InjectedMouseClick, t + timedelta(seconds=rng.randint(0, 59)),
                                  input="injected"))
            t += timedelta(seconds=60)
        elif r < 0.85:  # idle: sometimes shorter, sometimes longer than G = 5 min
            t += timedelta(minutes=rng.choice([2, 4, 6, 9, 15]))
        elif r < 0.93 and not locked:
            evs.append(a.make(E.Lock, t))
            locked = True
            t += timedelta(minutes=rng.randint(3, 12))
            evs.append(a.make(E.Unlock, t, input="hardware"))
            locked = False
            t += timedelta(seconds=30)
        elif suspended_until is None:
            evs.append(a.make(E.Suspend, t))
            suspended_until = t + timedelta(minutes=rng.randint(10, 20))
            t = suspended_until
            evs.append(a.make(E.Resume, t))
            evs.append(a.make(E.WindowUpdate, t + timedelta(seconds=3), app="chrome", url="https://x.invalid/"))
        else:
            t += timedelta(minutes=1)
    evs.append(a.make(E.Logoff, end))
    evs.append(a.make(E.AgentStop, end + timedelta(seconds=1)))
    return evs


def shuffled_with_duplicates(events: Sequence[E.Envelope], seed: int = 11, dup_ratio: float = 0.1) -> list[
    E.Envelope
]:
    """The events in a random order, about ``dup_ratio`` of them twice (as agents resend after a crash)."""
    rng = random.Random(seed)
    out = list(events) + [e for e in events if rng.random() < dup_ratio]
    rng.shuffle(out)
    return out


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
    out: dict[str, Session] = {}
    for line in proc.stdout.splitlines():
        if line.strip():
            msg = decode_session_message(line)
            if isinstance(msg, Session):
                out[msg.session_id] = msg
            else:
                out.pop(msg.session_id, None)
    return out


# ---- Kafka I/O -----------------------------------------------------------------------------------------


async def publish(
    bootstrap: str, topics: Topics, records: Iterable[E.Envelope | tuple[str, bytes | None, bytes]],
    **client_options: Any,
) -> int:
    """Publish events (to their raw topic, keyed by user key) or literal ``(topic, key, value)`` records."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **client_options)
    await producer.start()
    n = 0
    try:
        futures = []
        for rec in records:
            if isinstance(rec, tuple):
                topic, key, value = rec
            else:
                topic, key, value = topics.for_event(rec), event_user_key(rec).encode(), encode_event(rec)
            futures.append(await producer.send(topic, value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


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
        n = 0
        for records in got.values():
            for r in records:
                msg = decode_session_message(r.value)
                n += 1
                if isinstance(msg, SessionRetraction):
                    self.retractions += 1
                    self.sessions.pop(msg.session_id, None)
                else:
                    self.sessions[msg.session_id] = msg
        self.messages += n
        return n

    async def wait_equal(self, expected: Mapping[str, Session], within_s: float) -> bool:
        """Poll until the applied view equals ``expected`` (bounded by ``within_s``)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            await self.poll(0.5)
            if self.sessions == expected:
                return True
        await self.poll(0.2)
        return self.sessions == expected


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


# ---- the worker process --------------------------------------------------------------------------------


class WorkerProcess:
    """``desktrace-stream`` as a real subprocess with ``DESKTRACE_*`` settings; logs go to ``log_path``."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self, ready_timeout: float = 60.0) -> WorkerProcess:
        self.port = None
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # the real console script
            [str(BIN / "desktrace-stream")], env=self.env, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"desktrace-stream exited with {self.proc.returncode}:\n{self.tail()}")
            if self.port is None:
                self.port = self._port_from_log(offset)
            if self.port is not None and self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.2)
        raise TimeoutError(f"desktrace-stream not ready within {ready_timeout}s:\n{self.tail()}")

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
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` matching ``labels`` (0 when absent or unreachable)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.get("/metrics")
        if status != 200:
            return 0.0
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


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

