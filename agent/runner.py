"""Wiring: source -> recorder (privacy, throttle) -> spool -> shipper. The only agent module with a clock.

:func:`open_state` resolves the agent id against the spool (so a seq is never reused, see
:mod:`agent.spool`); :class:`SpoolWriter` encodes events and appends them durably; :class:`AgentRuntime`
runs a source and ticks the recorder once a second until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from agent.identity import Identity, detect_identity, load_or_create_agent_id, write_agent_id
from agent.observations import Observation, Source
from agent.recorder import SnapshotFilter, SpoolState, make_recorder
from agent.settings import AgentSettings
from agent.shipper import ProducerFactory, Shipper, producer_factory
from agent.spool import Spool, SpoolRecord
from common.backoff import Backoff
from common.kafka import client_options, connection_problem
from proto.codec import encode_event
from proto.events import Envelope, Heartbeat
from proto.keys import user_key
from proto.topics import Topics

log = logging.getLogger("desktrace.agent")

SPOOL_FILE = "spool.db"


def open_state(state_dir: Path, spool_max_bytes: int) -> tuple[Spool, str]:
    """Open the spool in ``state_dir`` and return it with the agent id its seqs belong to.

    - spool and id file agree: carry on;
    - the id file is missing or different but the spool knows its agent: the spool wins (rewrite the file);
    - a new spool but an id file from before: that id's seqs may have been used and are unknown now, so a
      new agent id is created (never reuse an ``(agent_id, seq)``).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    had_id = (state_dir / "agent_id").exists()
    file_id = load_or_create_agent_id(state_dir)
    spool = Spool(state_dir / SPOOL_FILE, spool_max_bytes)
    if spool.agent_id is not None:
        if spool.agent_id != file_id:
            write_agent_id(state_dir, spool.agent_id)
        return spool, spool.agent_id
    if had_id and (spool.next_seq == 0 and len(spool) == 0):
        new_id = str(uuid.uuid4())
        log.warning("spool was lost; starting a new agent id so that no seq is reused")
        write_agent_id(state_dir, new_id)
        file_id = new_id
    spool.bind_agent(file_id)
    return spool, file_id


class SpoolWriter:
    """Encodes events (msgpack), picks topic and key, and appends them to the spool in one transaction
    together with the recorder's next seq. Heartbeats' ``spool_dropped`` leave the unreported count."""

    def __init__(self, spool: Spool, topics: Topics, on_spooled: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.topics = topics
        self.on_spooled = on_spooled
        self.written = 0

    def write(self, events: Iterable[Envelope], next_seq: int) -> None:
        records: list[SpoolRecord] = []
        reported = 0
        for e in events:
            category = type(e).category
            records.append(
                SpoolRecord(
                    topic=self.topics.for_category(category),
                    key=user_key(e.domain, e.user).encode(),
                    value=encode_event(e),
                    seq=e.seq,
                    hid=category == "hid",
                    ui=category == "ui",
                )
            )
            if isinstance(e, Heartbeat):
                reported += e.spool_dropped
        if not records:
            return
        self.spool.append(records, next_seq=next_seq, dropped_reported=reported)
        self.written += len(records)
        if self.on_spooled is not None:
            self.on_spooled()

    def spool_state(self) -> SpoolState:
        st = self.spool.stats()
        return SpoolState(events=st.events, bytes=st.bytes, dropped=st.dropped_unreported)


def load_privacy(settings: AgentSettings) -> SnapshotFilter:
    """The privacy engineer's filter, configured from the settings."""
    from agent.privacy import PrivacyFilter

    return PrivacyFilter.from_settings(settings)


class AgentRuntime:
    """One agent: observations from ``source`` become spooled events, shipped to Kafka.

    Guarantees: every event the recorder returns is in the spool (durably) before the next observation is
    handled; an observation that cannot be handled is counted and logged by class, never crashes the agent;
    on stop, ``AgentStop`` is spooled and the shipper gets ``drain_s`` seconds to empty the spool (what is
    left is shipped on the next start)."""

    def __init__(
        self,
        settings: AgentSettings,
        source: Source,
        *,
        identity: Identity | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        make_producer: ProducerFactory | None = None,
        drain_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.source = source
        self.clock = clock
        self.drain_s = drain_s
        self.spool, agent_id = open_state(settings.state_path, settings.spool_max_bytes)
        self.identity = identity or detect_identity(agent_id)
        self.shipper = Shipper(
            self.spool,
            make_producer or producer_factory(client_options(settings), settings.compression_type),
            batch_size=settings.batch_size,
            backoff=Backoff(0.5, settings.retry_max_s, jitter=True),
            linger_s=settings.linger_s,
            diagnose=lambda: connection_problem(settings, wait_s=5.0),
        )
        self.writer = SpoolWriter(self.spool, Topics(settings.topic_prefix), on_spooled=self.shipper.wake)
        self.recorder = make_recorder(settings, self.identity, self.spool.next_seq, load_privacy(settings))
        self.bad_observations = 0
        #: set when the source failed: the agent then exits non-zero (so a restart policy applies)
        self.source_error: BaseException | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def emit(self, obs: Observation) -> None:
        """The source's sink (called on the event loop)."""
        try:
            self.writer.write(self.recorder.observe(obs), self.recorder.seq)
        except (ValueError, TypeError, KeyError) as exc:
            self.bad_observations += 1
            log.warning("observation ignored", extra={"kv": {"error_class": type(exc).__name__}})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if sys.platform != "win32":
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        session_type = str(getattr(self.source, "session_type", ""))
        self.writer.write(self.recorder.start(self.clock(), session_type), self.recorder.seq)
        log.info(
            "agent started",
            extra={"kv": {"agent_id": self.identity.agent_id, "spooled_events": len(self.spool),
                          "session_type": session_type}},
        )
        shipper_task = asyncio.create_task(self.shipper.run(), name="shipper")
        source_task = asyncio.create_task(self.source.run(self.emit), name="source")
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                if source_task.done():
                    exc = source_task.exception()
                    if exc is not None:
                        self.source_error = exc
                        log.error("source failed", extra={"kv": {"error_class": type(exc).__name__}})
                    break
                self._tick()
        finally:
            self.source.stop()
            if not source_task.done():
                source_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await source_task
            self.writer.write(self.recorder.stop(self.clock()), self.recorder.seq)
            self.shipper.stop(drain_s=self.drain_s)
            await shipper_task
            log.info(
                "agent stopped",
                extra={
                    "kv": {
                        "events": self.recorder.seq,
                        "left_in_spool": len(self.spool),
                        "sent_events": self.shipper.stats.sent_events,
                    }
                },
            )
            self.spool.close()

    def _tick(self) -> None:
        try:
            idle = self.source.idle_ms()
        except Exception:  # a platform call failing must not stop the heartbeat
            idle = 0
        self.writer.write(
            self.recorder.tick(self.clock(), idle, self.writer.spool_state()), self.recorder.seq
        )
