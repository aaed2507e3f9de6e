"""``POST /api/report``: the seed's legacy client API, answered only after Kafka acknowledged the event."""

from __future__ import annotations

import ipaddress
import logging

from litestar import Request, Response, post
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from gateway.auth import bearer, check_token
from gateway.legacy import LegacyAck, LegacyError, LegacyReport, ReportRejected, to_event
from gateway.publisher import KafkaUnavailable
from gateway.state import gw
from proto.keys import event_user_key

log = logging.getLogger(__name__)


class LegacyRefused(Exception):
    """Access to the legacy API refused (network or token); carries the status and reason."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def client_host(connection: ASGIConnection) -> str:
    return connection.client.host if connection.client else ""


def legacy_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Allowed networks first (403), then the token when one is configured (401)."""
    g = gw(connection)
    if g.networks:
        try:
            addr = ipaddress.ip_address(client_host(connection))
        except ValueError:
            addr = None
        if addr is None or not any(addr in net for net in g.networks):
            raise LegacyRefused(403, "this address may not report (legacy_networks)", "forbidden_network")
    token = g.settings.legacy_token
    if token:
        presented = bearer(connection.headers.get("authorization")) or connection.headers.get(
            "x-desktrace-token", ""
        )
        if not check_token(presented, [token]):
            raise LegacyRefused(
                401,
                "a token is required: send 'Authorization: Bearer <token>' or 'X-Desktrace-Token: <token>'",
                "unauthorized",
            )


def _refuse(request: Request, status: int, message: str, reason: str) -> Response[LegacyError]:
    gw(request).metrics.rejected.labels(reason).inc()
    headers = {"WWW-Authenticate": 'Bearer realm="legacy"'} if status == 401 else None
    return Response(
        LegacyError(success=False, error=message, reason=reason), status_code=status, headers=headers
    )


def on_refused(request: Request, exc: LegacyRefused) -> Response[LegacyError]:
    return _refuse(request, exc.status, str(exc), exc.reason)


def on_invalid(request: Request, exc: ClientException) -> Response[LegacyError]:
    """A body that is not JSON (400) or does not match the schema (422), with msgspec's explanation."""
    if request.headers.get("content-length") == "0":
        return _refuse(request, 400, "the body is empty: send a JSON object", "malformed_json")
    if not isinstance(exc, ValidationException):
        return _refuse(request, 400, f"the body is not valid JSON: {exc.detail}", "malformed_json")
    details = exc.extra if isinstance(exc.extra, list) else []
    messages = [str(d.get("message", "")) for d in details if isinstance(d, dict)]
    text = "; ".join(m for m in messages if m) or str(exc.detail)
    return _refuse(
        request,
        422,
        f'the body must be {{"user": str, "state": "working"|"stopped", "ts": ISO 8601 (optional)}}: {text}',
        "invalid_body",
    )


@post(
    "/api/report",
    status_code=200,
    guards=[legacy_guard],
    exception_handlers={LegacyRefused: on_refused, ClientException: on_invalid},
    summary="Report a legacy client's state change",
    description=(
        'The seed\'s client API: one working/stopped change of one user. Answers {"success": true} once '
        "Kafka acknowledged the event; 400/422 for an invalid body, 401 without the token (when one is "
        "configured), 403 from a network not listed in legacy_networks, 503 while Kafka is unavailable "
        "(retry: a report with the same ts is never counted twice)."
    ),
    tags=["legacy"],
    responses={
        400: ResponseSpec(LegacyError, generate_examples=False, description="the body is not JSON"),
        401: ResponseSpec(
            LegacyError, generate_examples=False, description="legacy_token is set and was not presented"
        ),
        403: ResponseSpec(
            LegacyError, generate_examples=False, description="the client's address is not in legacy_networks"
        ),
        422: ResponseSpec(
            LegacyError, generate_examples=False, description="the body does not describe a valid report"
        ),
        503: ResponseSpec(
            LegacyError,
            generate_examples=False,
            description="Kafka did not acknowledge the report: retry later",
        ),
    },
)
async def legacy_report(request: Request, data: LegacyReport) -> Response[LegacyAck] | Response[LegacyError]:
    g = gw(request)
    now = g.now()
    try:
        event = to_event(
            data, now=now, default_domain=g.settings.legacy_domain, zone=g.zone, host=client_host(request)
        )
    except ReportRejected as exc:
        return _refuse(request, 422, str(exc), exc.reason)
    key = event_user_key(event)
    retry = g.retry.recall(key, event.state, now) if data.ts is None else None
    if retry is not None or g.retry.published(event):
        g.metrics.retries.inc()
        return Response(LegacyAck())
    try:
        await g.publisher.send(event)
    except KafkaUnavailable as exc:
        return Response(
            LegacyError(
                success=False, error=f"{exc}; the report was not stored, retry later", reason="kafka"
            ),
            status_code=503,
            headers={"Retry-After": "5"},
        )
    g.retry.mark_published(event)
    if data.ts is None:
        g.retry.remember(key, event, now)
    else:
        g.retry.forget(key)
    g.metrics.accepted.inc()
    return Response(LegacyAck())
