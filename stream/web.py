"""The worker's own small HTTP endpoint: ``/metrics`` (Prometheus text), ``/healthz`` (liveness) and
``/readyz`` (partitions assigned and state recovered), served by :class:`common.health.HealthServer`.
Nothing else is served: Faust's web server, whose ``/table`` views would expose users' state, is
disabled."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mode import Service
from prometheus_client import CollectorRegistry

from common.health import HealthServer

log = logging.getLogger(__name__)

class HttpEndpoints(Service):
    """Serves the three endpoints on ``host:port`` (port 0: a free port, logged as ``port``) while the
    worker runs."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        async def recovered() -> bool:
            return ready()

        self.server = HealthServer(addr, registry, readiness={"recovered": recovered}, alive=alive)
        self.host, self.port = host, port

    async def on_start(self) -> None:
        await self.server.start()
        self.port = self.server.port
        log.info("http endpoints listening", extra={"kv": {"host": self.host, "port": self.port}})

    async def on_stop(self) -> None:
        await self.server.stop()
