"""Spool -> Kafka: at-least-once delivery of every spooled event, in spool order per key.

The shipper reads the oldest batch from the spool (waiting up to ``linger_s`` for a partial batch to fill,
because a few minutes of events compress to a fraction of their size), sends it with an idempotent aiokafka
producer
(``acks='all'``), waits until every send future resolved, and only then deletes the batch from the spool.
While the broker is unreachable it retries with exponential backoff and full jitter, creating a new producer
for each attempt. An event can be sent twice only when a batch was written but its acknowledgement was lost
(broker failover, the agent killed between send and delete); consumers dedup by ``(agent_id, seq)``.

Logs carry counts only, never event contents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from agent.spool import Spool, Spooled
from common.backoff import Backoff
from common.kafka import ProduceErrorKind, produce_error_kind, produce_error_name

log = logging.getLogger("desktrace.agent.shipper")


@dataclass
class ShipperStats:
    """Counters for logs and the heartbeat: sent events and bytes, failed attempts."""

    sent_events: int = 0
    sent_bytes: int = 0
    failed_attempts: int = 0
    refused_events: int = 0  #: permanently refused by Kafka (e.g. over its size limit): dropped, counted
    batches: int = 0
    connected: bool = False


ProducerFactory = Callable[[], AIOKafkaProducer]


def producer_factory(client_options: dict[str, Any], compression_type: str = "gzip") -> ProducerFactory:
    """A factory of idempotent producers (``acks='all'``) with the given compression."""

    def make() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options,
            enable_idempotence=True,
            acks="all",
            compression_type=None if compression_type == "none" else compression_type,
            linger_ms=50,
            request_timeout_ms=15_000,
            retry_backoff_ms=200,
            client_id="desktrace-agent",
        )

    return make


class Shipper:
    """Moves events from the spool to Kafka (see the module docstring for the delivery guarantee).

    ``wake()`` tells it new events were spooled; otherwise it polls the spool every ``poll_s``."""

    def __init__(
        self,
        spool: Spool,
        make_producer: ProducerFactory,
        *,
        batch_size: int = 500,
        poll_s: float = 1.0,
        backoff: Backoff | None = None,
        linger_s: float = 0.0,
        diagnose: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.spool = spool
        #: Says why Kafka refuses a connection (common.kafka.connection_problem); asked once a minute at most.
        self.diagnose = diagnose
        self.problem = ""
        self._diagnosed_at = -1e9
        self.make_producer = make_producer
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.linger_s = linger_s
        self._first_seen: float | None = None
        self.backoff = backoff or Backoff(0.5, 30.0, jitter=True)
        self.stats = ShipperStats()
        self._wake = asyncio.Event()
        self._stopping = False
        self._drain_deadline = 0.0
        self._producer: AIOKafkaProducer | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self, drain_s: float = 0.0) -> None:
        """Return from :meth:`run` once the spool is empty or ``drain_s`` seconds passed (the batch in
        flight is always finished)."""
        loop = asyncio.get_running_loop()
        self._drain_deadline = loop.time() + drain_s
        self._stopping = True
        self._wake.set()

    def _done(self) -> bool:
        if not self._stopping:
            return False
        return len(self.spool) == 0 or asyncio.get_running_loop().time() >= self._drain_deadline

    async def run(self) -> None:
        """Ship until :meth:`stop`; never raises for broker trouble (it waits and retries)."""
        try:
            while not self._done():
                # the spool counts its events in memory: a lingering partial batch is not read each poll
                waiting = min(len(self.spool), self.batch_size)
                batch = self.spool.peek(self.batch_size) if waiting and not self._lingering(waiting) else []
                if not batch:
                    await self._poll()
                    continue
                if await self.ship(batch):
                    self.backoff.reset()
                else:
                    delay = self.backoff.next()
                    log.warning(
                        "kafka unavailable, retrying",
                        extra={"kv": {"pending_events": len(self.spool), "retry_in_s": round(delay, 2),
                                      **({"problem": self.problem} if self.problem else {})}},
                    )
                    await self._sleep(delay)
        finally:
            await self._close_producer()

    async def _poll(self) -> None:
        """Wait for :meth:`wake` (or :meth:`stop`), at most ``poll_s``."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self.poll_s)
        except TimeoutError:
            pass

    def _lingering(self, n: int) -> bool:
        """Whether to wait for more events: a partial batch waits up to ``linger_s`` (bigger batches
        compress far better: see bench/bench_agent.py); a full batch or a stop sends at once."""
        if self.linger_s <= 0 or n >= self.batch_size or self._stopping:
            self._first_seen = None
            return False
        now = asyncio.get_running_loop().time()
        if self._first_seen is None:
            self._first_seen = now
        if now - self._first_seen < self.linger_s:
            return True
        self._first_seen = None
        return False

    async def ship(self, batch: list[Spooled]) -> bool:
        """Send ``batch``; delete from the spool every event Kafka acknowledged, and every event it refused
        for good (too large, invalid: counted in ``refused_events`` and the spool's drops, logged by error
        class). True if none is left to retry."""
        sent: list[tuple[Spooled, Awaitable[Any]]] = []
        refused: list[tuple[Spooled, BaseException]] = []
        try:
            producer = await self._ensure_producer()
            for b in batch:
                try:
                    sent.append((b, await producer.send(b.topic, b.value, key=b.key)))
                except KafkaError as exc:  # checked before sending, e.g. over max_request_size
                    if produce_error_kind(exc) is not ProduceErrorKind.PERMANENT:
                        raise
                    refused.append((b, exc))
        except (KafkaError, OSError, TimeoutError) as exc:
            return await self._failed(exc, len(batch))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        ok: list[Spooled] = []
        failed: BaseException | None = None
        for (b, _), r in zip(sent, results, strict=True):
            if not isinstance(r, BaseException):
                ok.append(b)
            elif produce_error_kind(r) is ProduceErrorKind.PERMANENT:
                refused.append((b, r))
            elif failed is None:
                failed = r
        if ok:
            self.spool.ack([b.id for b in ok])
            self.stats.sent_events += len(ok)
            self.stats.sent_bytes += sum(len(b.value) + len(b.key) for b in ok)
            self.stats.batches += 1
        if refused:
            self._refused(refused)
        if failed is not None:
            return await self._failed(failed, len(batch) - len(ok) - len(refused))
        return True

    def _refused(self, refused: list[tuple[Spooled, BaseException]]) -> None:
        """Drop events Kafka will never take (sending them again would stall the spool behind them)."""
        self.spool.discard([b.id for b, _ in refused])
        self.stats.refused_events += len(refused)
        for b, exc in refused:
            log.warning(
                "event refused by Kafka for good, dropped",
                extra={"kv": {"reason": produce_error_name(exc), "topic": b.topic, "seq": b.seq,
                              "bytes": len(b.value)}},
            )

    async def _failed(self, exc: BaseException, events: int) -> bool:
        if not isinstance(exc, KafkaError | OSError | TimeoutError):
            raise exc
        self.stats.failed_attempts += 1
        log.info("send failed", extra={"kv": {"error_class": type(exc).__name__, "events": events}})
        now = asyncio.get_running_loop().time()
        if self.diagnose is not None and self._producer is None and now - self._diagnosed_at >= 60:
            self._diagnosed_at = now  # the connection itself failed: say why (e.g. a refused login)
            problem = await self.diagnose()
            if problem and problem != self.problem:
                log.error("kafka refuses the connection", extra={"kv": {"problem": problem}})
            self.problem = problem
        await self._close_producer()
        return False

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self.make_producer()
            try:
                await producer.start()
            except BaseException:
                await _quiet_stop(producer)
                raise
            self._producer = producer
            self.stats.connected = True
            log.info("connected to kafka", extra={"kv": {"pending_events": len(self.spool)}})
        return self._producer

    async def _close_producer(self) -> None:
        p, self._producer = self._producer, None
        self.stats.connected = False
        if p is not None:
            await _quiet_stop(p)

    async def _sleep(self, delay: float) -> None:
        if self._stopping:
            delay = min(delay, max(0.0, self._drain_deadline - asyncio.get_running_loop().time()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._stop_requested(), delay)
        except TimeoutError:
            pass

    async def _stop_requested(self) -> None:
        while not self._done():
            await self._wake.wait()
            self._wake.clear()


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except (KafkaError, OSError, TimeoutError):
        pass
