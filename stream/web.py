"""The worker's own small HTTP endpoint: ``/metrics`` (Prometheus text), ``/healthz`` (liveness) and
``/readyz`` (partitions assigned and state recovered). Nothing else is served: Faust's web server, whose
``/table`` views would expose users' state, is disabled."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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
        self.host, self.port = host, port
        self.registry = registry
        self._ready, self._alive = ready, alive
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("http endpoints listening", extra={"kv": {"host": self.host, "port": self.port}})

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self._alive()
        return web.Response(text="ok\n" if ok else "crashed\n", status=200 if ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        ok = self._ready()
        return web.Response(text="ready\n" if ok else "not ready\n", status=200 if ok else 503)
