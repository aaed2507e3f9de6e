"""The Litestar application: routes, templates, static files, metrics, error pages."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.config.compression import CompressionConfig
from litestar.connection import ASGIConnection
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.health import HealthServer
from gateway import views
from gateway.auth import bearer, check_token
from gateway.metrics import GatewayMetrics
from gateway.principal import request_scope, session_user
from gateway.routes_api import api_router
from gateway.routes_legacy import legacy_report
from gateway.routes_processes import process_handlers
from gateway.routes_web import LoginRequired, on_login_required, web_handlers
from gateway.settings import GatewaySettings
from gateway.state import Gateway, ReportsUnavailable, gw

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
VERSION = "0.1.0"


class Health(msgspec.Struct):
    """Liveness/readiness: ``ok`` and, for readiness, each dependency."""

    ok: bool
    kafka: bool | None = None
    postgres: bool | None = None
    #: why Kafka refuses the connection when that is known (a refused login: names the setting to check)
    kafka_problem: str | None = None


@get("/healthz", summary="Liveness: the process answers", tags=["ops"])
async def healthz() -> Health:
    return Health(ok=True)


@get(
    "/readyz",
    summary="Readiness: Kafka and PostgreSQL reachable (503 otherwise)",
    tags=["ops"],
    responses={503: ResponseSpec(Health, generate_examples=False, description="a dependency is unreachable")},
)
async def readyz(request: Request) -> Response[Health]:
    g = gw(request)
    if not g.publisher.ready:
        await g.publisher.start()
    kafka = g.publisher.ready
    postgres = await g.postgres_ready()
    ok = kafka and postgres
    problem = None if kafka else (g.publisher.problem or None)
    return Response(
        Health(ok=ok, kafka=kafka, postgres=postgres, kafka_problem=problem), status_code=200 if ok else 503
    )


def metrics_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """``/metrics`` on the main listener: absent when ``metrics_addr`` serves it, else it needs
    ``Authorization: Bearer <metrics_token>``, or without a token comes from a loopback address."""
    g = gw(connection)
    if g.settings.metrics_addr:
        raise NotFoundException(detail=f"/metrics is served on {g.settings.metrics_addr} (metrics_addr)")
    if g.settings.metrics_token:
        if not check_token(bearer(connection.headers.get("authorization")), [g.settings.metrics_token]):
            raise NotAuthorizedException(
                detail="/metrics needs 'Authorization: Bearer <metrics_token>'",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return
    host = connection.client.host if connection.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise PermissionDeniedException(
            detail="/metrics answers loopback clients only: set metrics_token or metrics_addr"
        )


@get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE_LATEST, guards=[metrics_guard])
async def metrics_endpoint(request: Request) -> Response[bytes]:
    return Response(generate_latest(gw(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def schema_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The OpenAPI description needs a web login or an API token, like the reports it describes."""
    if request_scope(connection) is None:
        raise NotAuthorizedException(
            detail="the API description needs a web login or a Bearer token (api_tokens)",
            headers={"WWW-Authenticate": 'Bearer realm="reports"'},
        )


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Counts every HTTP request by route template, method and status, and times it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            route = scope.get("path_template") or "unmatched"
            m: GatewayMetrics = scope["app"].state.gateway.metrics
            m.requests.labels(route, scope.get("method", ""), str(status)).inc()
            m.request_seconds.labels(route).observe(time.perf_counter() - t0)

    return middleware


def _wants_html(request: Request[Any, Any, Any]) -> bool:
    return not request.url.path.startswith(("/api/", "/schema", "/healthz", "/readyz", "/metrics"))


def on_reports_unavailable(request: Request, exc: Exception) -> Response[Any]:
    """PostgreSQL missing or failing mid-request: 503 (a page or JSON), never a 500."""
    if isinstance(exc, ReportsUnavailable):
        message = f"reports are unavailable: {exc}"
    else:
        log.warning("report query failed", extra={"kv": {"error_class": type(exc).__name__}})
        message = f"reports are unavailable: the database query failed ({type(exc).__name__})"
    if _wants_html(request):
        return Template(
            template_name="error.html",
            context={"status": 503, "message": message, "user": None},
            status_code=503,
        )
    return Response({"status_code": 503, "detail": message}, status_code=503, headers={"Retry-After": "10"})


def on_http_error(request: Request, exc: HTTPException) -> Response[Any]:
    """Pages get an HTML error page; the API gets Litestar's JSON body."""
    if _wants_html(request) and exc.status_code < 500 and exc.status_code != 401:
        return Template(
            template_name="error.html",
            # a logged-in person keeps the header (navigation, log out) on a 403 or 404
            context={"status": exc.status_code, "message": exc.detail, "user": session_user(request)},
            status_code=exc.status_code,
        )
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def on_unexpected(request: Request, exc: Exception) -> Response[Any]:
    """Never leak a traceback; log the error class only."""
    log.error(
        "unhandled error",
        extra={"kv": {"error_class": type(exc).__name__, "route": request.url.path}},
        exc_info=log.isEnabledFor(logging.DEBUG),
    )
    return Response({"status_code": 500, "detail": "internal error"}, status_code=500)


def create_app(settings: GatewaySettings, *, start_kafka: bool = True) -> Litestar:
    """The gateway application. ``start_kafka=False`` connects to Kafka only on the first report."""
    gateway = Gateway(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if start_kafka:
            await gateway.start()
        metrics_server = None
        if settings.metrics_addr:
            metrics_server = HealthServer(settings.metrics_addr, registry=gateway.metrics.registry)
            await metrics_server.start()
        try:
            yield
        finally:
            if metrics_server is not None:
                await metrics_server.stop()
            await gateway.close()

    def setup_engine(engine: JinjaTemplateEngine) -> None:
        env = engine.engine
        env.filters["hms"] = views.hms
        env.filters["clock"] = views.clock
        env.filters["userpath"] = views.user_path
        env.filters["hm"] = views.hm
        env.globals["q"] = views.nav_query

    engine_config = TemplateConfig(
        directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=setup_engine
    )

    app = Litestar(
        route_handlers=[
            legacy_report,
            api_router,
            healthz,
            readyz,
            metrics_endpoint,
            *web_handlers,
            *process_handlers,
            create_static_files_router(
                path="/static", directories=[HERE / "static"], include_in_schema=False
            ),
        ],
        template_config=engine_config,
        # pages of hundreds of users are megabytes of repetitive HTML/SVG: gzip shrinks them ~15x
        compression_config=CompressionConfig(backend="gzip", minimum_size=2048, gzip_compress_level=6),
        middleware=[metrics_middleware],
        exception_handlers={
            LoginRequired: on_login_required,
            ReportsUnavailable: on_reports_unavailable,
            asyncpg.PostgresError: on_reports_unavailable,
            asyncpg.InterfaceError: on_reports_unavailable,
            OSError: on_reports_unavailable,
            TimeoutError: on_reports_unavailable,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        openapi_config=OpenAPIConfig(
            title="desktrace gateway",
            version=VERSION,
            description="Legacy client API (POST /api/report) and working-time reports (JSON).",
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http", scheme="bearer", description="one of api_tokens"
                    )
                }
            ),
            openapi_router=Router(
                path="/schema", route_handlers=[], guards=[schema_guard], include_in_schema=False
            ),
        ),
        lifespan=[lifespan],
        logging_config=None,
    )
    app.state.gateway = gateway
    return app
