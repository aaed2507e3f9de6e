"""A tiny HTTP server for ``/metrics``, ``/healthz`` and ``/readyz`` (asyncio streams, no new dependency).

Usage::

    server = HealthServer("127.0.0.1:9464", registry, readiness={"kafka": check_kafka, "postgres": check_pg})
    await server.start()          # server.port is the bound port (useful with port 0)
    ...
    await server.stop()

- ``GET /metrics``: the Prometheus text exposition of ``registry``.
- ``GET /healthz``: 200 while the event loop answers and the optional ``alive`` callable agrees (liveness;
  never a dependency).
- ``GET /readyz``: runs every readiness check concurrently, each bounded by ``check_timeout``; 200 when all
  pass, else 503. The body is JSON ``{"ready": bool, "checks": {name: "ok" | error class}}``; an error's
  message is not echoed (it could hold a DSN or a host name).

Bounded: requests larger than 16 KiB, slower than ``read_timeout`` or beyond ``max_connections`` at once
are refused; every response closes its connection. Only GET and HEAD are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: A readiness check: returns (anything) when ready, raises or returns False when not.
Check = Callable[[], Awaitable[Any]]

_MAX_REQUEST = 16 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def parse_addr(addr: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` -> ``(host, port)``; raises ValueError with the address."""
    text = addr.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad address {addr!r}: expected host:port")
    host = host.strip("[]") or default_host
    value = int(port)
    if not 0 <= value <= 65535:
        raise ValueError(f"bad address {addr!r}: port out of range")
    return host, value


class HealthServer:
    """Serves metrics, liveness and readiness on one address.

    Guarantees: liveness never depends on a dependency; readiness is 200 only when every check passed
    within its timeout; a check that raises or hangs makes the answer 503, never an error page or a hang.
    """

    def __init__(
        self,
        addr: str,
        registry: CollectorRegistry = REGISTRY,
        readiness: Mapping[str, Check] | None = None,
        *,
        alive: Callable[[], bool] | None = None,
        check_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_connections: int = 32,
    ) -> None:
        self.host, self._port = parse_addr(addr)
        self.registry = registry
        self.readiness: dict[str, Check] = dict(readiness or {})
        self.alive = alive
        self.check_timeout = check_timeout
        self.read_timeout = read_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0 and started)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._port, limit=_MAX_REQUEST)
        log.info("health server listening", extra={"kv": {"addr": f"{self.host}:{self.port}"}})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def ready(self) -> tuple[bool, dict[str, str]]:
        """Run the readiness checks: ``(all passed, {name: "ok" or the failure's class})``."""

        async def one(check: Check) -> str:
            try:
                result = await asyncio.wait_for(check(), self.check_timeout)
            except TimeoutError:
                return "timeout"
            except Exception as exc:  # a failing check is an answer, not an error
                return type(exc).__name__
            return "failed" if result is False else "ok"

        names = list(self.readiness)
        results = await asyncio.gather(*(one(self.readiness[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        return all(v == "ok" for v in results), checks

    # ---- HTTP ----------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()
            return
        async with self._slots:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
                status, ctype, body = await self._route(head)
                method = head.split(b" ", 1)[0]
                await self._respond(writer, status, ctype, b"" if method == b"HEAD" else body, len(body))
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                with contextlib.suppress(Exception):
                    await self._respond(writer, 400, "text/plain", b"bad request\n")
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _route(self, head: bytes) -> tuple[int, str, bytes]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/healthz", "/livez"):
            if self.alive is not None and not self.alive():
                return 503, "text/plain", b"not alive\n"
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ok, checks = await self.ready()
            body = json.dumps({"ready": ok, "checks": checks}).encode() + b"\n"
            return (200 if ok else 503), "application/json", body
        return 404, "text/plain", b"not found\n"

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, length: int | None = None
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"Content-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
