"""``POST /api/report``: the seed's legacy client API, answered only after Kafka acknowledged the event.

The body is read here, not by Litestar, so that its size is checked before it is read (413, also with
``Expect: 100-continue``: the ``100 Continue`` is only sent once the body is asked for) and its encoding is
read the way real clients write it (:mod:`gateway.legacy_body`).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, InternalServerException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation

from common.horizon import accepted_since
from gateway.auth import bearer, check_token
from gateway.legacy import LegacyAck, LegacyError, LegacyReport, ReportRejected, to_event
from gateway.legacy_body import BodyRejected, parse_report
from gateway.legacy_tokens import ANY, TokenScopes
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


def presented_token(connection: ASGIConnection) -> str:
    """The legacy token of a request: ``Authorization: Bearer``, ``X-Desktrace-Token`` or ``?token=`` (the
    seed's client can only be given a URL)."""
    return (
        bearer(connection.headers.get("authorization"))
        or connection.headers.get("x-desktrace-token", "")
        or connection.query_params.get("token", "")
    )


def legacy_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Allowed networks first (403), then the token when any is configured (401). The user scopes of the
    token go to ``connection.state.legacy_scopes`` (checked against the body's user by the handler)."""
    g = gw(connection)
    if g.networks:
        try:
            addr = ipaddress.ip_address(client_host(connection))
        except ValueError:
            addr = None
        if addr is None or not any(addr in net for net in g.networks):
            raise LegacyRefused(403, "this address may not report (legacy_networks)", "forbidden_network")
    token = g.settings.legacy_token
    scoped = g.legacy_tokens
    if not token and not len(scoped):
        return
    presented = presented_token(connection)
    if token and check_token(presented, [token]):
        connection.state.legacy_scopes = (ANY,)
        return
    scopes = scoped.scopes_of(presented)
    if scopes is None:
        raise LegacyRefused(
            401,
            "a token is required: append ?token=<token> to the URL, or send 'Authorization: Bearer <token>' "
            "or 'X-Desktrace-Token: <token>'",
            "unauthorized",
        )
    connection.state.legacy_scopes = scopes


def _refuse(request: Request, status: int, message: str, reason: str) -> Response[LegacyError]:
    gw(request).metrics.rejected.labels(reason).inc()
    headers: dict[str, str] | None = None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="legacy"'}
    elif status == 413:
        headers = {"Connection": "close"}  # the unread body is not waited for
    return Response(
        LegacyError(success=False, error=message, reason=reason), status_code=status, headers=headers
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing one over ``limit`` bytes before reading it (announced length) or as soon
    as it passes the limit (chunked); raises :class:`BodyRejected`."""
    too_large = BodyRejected(
        413, "body_too_large", f"the body is larger than {limit} bytes (legacy_max_body_bytes): not read"
    )
    announced = request.headers.get("content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise BodyRejected(400, "malformed_json", "the Content-Length header is not a number") from None
        if length > limit:
            raise too_large
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large
            chunks.append(chunk)
    except ClientException as exc:  # Litestar's own checks (content-length, its body limit)
        if exc.status_code == 413:
            raise too_large from None
        raise BodyRejected(400, "malformed_json", "the body could not be read") from None
    except InternalServerException:  # what Litestar raises when the client leaves mid-body
        raise BodyRejected(
            400, "incomplete_body", "the connection closed before the whole body arrived"
        ) from None
    return b"".join(chunks)


def on_refused(request: Request, exc: LegacyRefused) -> Response[LegacyError]:
    return _refuse(request, exc.status, str(exc), exc.reason)


def on_invalid(request: Request, exc: ClientException) -> Response[LegacyError]:
    """A request Litestar refused before the handler (400/422), as a legacy error body."""
    if exc.status_code == 413:
        return _refuse(request, 413, "the body is too large", "body_too_large")
    if not isinstance(exc, ValidationException):
        return _refuse(request, 400, f"the request is not valid: {exc.detail}", "malformed_json")
    details = exc.extra if isinstance(exc.extra, list) else []
    messages = [str(d.get("message", "")) for d in details if isinstance(d, dict)]
    text = "; ".join(m for m in messages if m) or str(exc.detail)
    return _refuse(
        request,
        422,
        f'the body must be {{"user": str, "state": "working"|"stopped", "ts": ISO 8601 (optional)}}: {text}',
        "invalid_body",
    )


_REPORT_SCHEMA: dict[str, Any] = msgspec.json.schema_components([LegacyReport])[1]["LegacyReport"]


class LegacyReportOperation(Operation):
    """The operation of ``POST /api/report``: the handler reads its body itself, so the request body is
    described here. (The ``?token=`` alternative is told in the description, not declared as a parameter:
    it is a credential, like the Authorization header.)"""

    def to_schema(self) -> dict[str, Any]:
        out = super().to_schema()
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _REPORT_SCHEMA}},
            "description": "UTF-8, or the charset of Content-Type; without one, bytes that are not UTF-8 "
            "are read as Windows-1252 (Windows PowerShell 5.1). Unknown fields are ignored.",
        }
        return out


@post(
    "/api/report",
    status_code=200,
    guards=[legacy_guard],
    exception_handlers={LegacyRefused: on_refused, ClientException: on_invalid},
    operation_class=LegacyReportOperation,
    summary="Report a legacy client's state change",
    description=(
        'The seed\'s client API: one working/stopped change of one user. Answers {"success": true} once '
        "Kafka acknowledged the event; 400/422 for an invalid body, 401 without the token when one is "
        "configured (Authorization: Bearer, X-Desktrace-Token, or ?token= on the URL), 403 from a network "
        "not listed in legacy_networks or for a user the token may not report for, 413 for a body over "
        "legacy_max_body_bytes, 422 ts_too_old for a time the pipeline "
        "would no longer count, 503 while Kafka is unavailable (retry: a report with the same ts is never "
        "counted twice)."
    ),
    tags=["legacy"],
    responses={
        400: ResponseSpec(
            LegacyError, generate_examples=False, description="the body is not JSON in a readable encoding"
        ),
        401: ResponseSpec(
            LegacyError,
            generate_examples=False,
            description="a legacy token is required and was not presented",
        ),
        403: ResponseSpec(
            LegacyError,
            generate_examples=False,
            description="the client's address is not in legacy_networks, or the token may not report for "
            "this user",
        ),
        413: ResponseSpec(
            LegacyError, generate_examples=False, description="the body is larger than legacy_max_body_bytes"
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
async def legacy_report(request: Request) -> Response[LegacyAck] | Response[LegacyError]:
    g = gw(request)
    settings = g.settings
    try:
        raw = await read_body(request, settings.legacy_max_body_bytes)
        data = parse_report(raw, request.headers.get("content-type"))
    except BodyRejected as exc:
        return _refuse(request, exc.status, str(exc), exc.reason)
    now = g.now()
    try:
        event = to_event(
            data,
            now=now,
            default_domain=settings.legacy_domain,
            zone=g.zone,
            host=client_host(request),
            oldest=accepted_since(now, settings.retention, settings.raw_retention_days),
        )
    except ReportRejected as exc:
        return _refuse(request, 422, str(exc), exc.reason)
    key = event_user_key(event)
    scopes = request.state.get("legacy_scopes")
    if scopes is not None and not TokenScopes.allows(scopes, key):
        message = "this token may not report for this user (legacy_tokens_file)"
        return _refuse(request, 403, message, "forbidden_user")
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
