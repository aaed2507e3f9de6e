"""Publishes legacy events on the presence topic with an idempotent, acks=all aiokafka producer."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from common.kafka import client_options, connection_problem
from common.settings import CommonSettings
from gateway.metrics import GatewayMetrics
from proto.codec import encode_event
from proto.events import StateChange
from proto.keys import event_user_key
from proto.topics import Topics

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge an event in time; the message says so without any field value."""


class Publisher:
    """Sends :class:`StateChange` events keyed by user key and returns only once Kafka acknowledged them
    (``acks='all'``, idempotent producer). Starts lazily and reconnects after failures, so the gateway
    serves pages while Kafka is down and answers legacy reports with :class:`KafkaUnavailable`."""

    def __init__(self, settings: CommonSettings, metrics: GatewayMetrics, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._diagnosed_at = -1e9
        self._problem = ""

    @property
    def ready(self) -> bool:
        return self._producer is not None

    @property
    def problem(self) -> str:
        """Why the last connection attempt failed, from :func:`common.kafka.connection_problem` ("" when
        unknown or connected)."""
        return "" if self._producer is not None else self._problem

    async def _ensure(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                **client_options(self.settings),
                acks="all",
                enable_idempotence=True,
                linger_ms=0,
                request_timeout_ms=int(max(self.timeout_s, 1.0) * 1000),
                client_id="desktrace-gateway",
            )
            try:
                await asyncio.wait_for(producer.start(), self.timeout_s)
            except (TimeoutError, KafkaError, OSError) as exc:
                await _stop_quietly(producer)
                now = time.monotonic()
                if now - self._diagnosed_at >= 30.0:  # names e.g. a refused login; at most every 30 s
                    self._diagnosed_at = now
                    self._problem = await connection_problem(self.settings, wait_s=min(5.0, self.timeout_s))
                reason = self._problem or type(exc).__name__
                raise KafkaUnavailable(f"cannot connect to Kafka: {reason}") from None
            self._producer = producer
            self.metrics.kafka_ready.set(1)
            log.info("kafka producer started", extra={"kv": {"topic": self.topics.presence}})
            return producer

    async def start(self) -> None:
        """Try to connect now (start-up); failure is logged, not raised: sends retry."""
        try:
            await self._ensure()
        except KafkaUnavailable as exc:
            log.warning(
                "kafka not reachable at start-up; will retry on first report",
                extra={"kv": {"error": str(exc)}},
            )

    async def send(self, event: StateChange) -> None:
        """Publish ``event`` and wait for Kafka's acknowledgement; raises :class:`KafkaUnavailable`."""
        producer = await self._ensure()
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(
                producer.send_and_wait(
                    self.topics.presence, encode_event(event), key=event_user_key(event).encode()
                ),
                self.timeout_s,
            )
        except (TimeoutError, KafkaError, OSError) as exc:
            self.metrics.kafka_errors.inc()
            log.warning(
                "kafka did not acknowledge a legacy event", extra={"kv": {"error_class": type(exc).__name__}}
            )
            raise KafkaUnavailable(f"Kafka did not acknowledge the report: {type(exc).__name__}") from None
        self.metrics.kafka_send_seconds.observe(time.perf_counter() - t0)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        self.metrics.kafka_ready.set(0)
        if producer is not None:
            await _stop_quietly(producer)


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception:
        log.debug("producer stop failed", exc_info=True)
