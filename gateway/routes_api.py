"""``/api/v1/reports/*``: the reports as JSON, for Bearer tokens (``api_tokens``) or a logged-in browser."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec
from litestar import Request, Router, get
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from gateway.auth import COOKIE_NAME, bearer, check_token
from gateway.state import Gateway, gw
from reports.model import AppUsage, DayRow, PeriodRow, TimelineItem


def session_user(connection: ASGIConnection) -> str | None:
    """The user of a valid session cookie, else None."""
    g = gw(connection)
    user = g.signer.check(connection.cookies.get(COOKIE_NAME), g.epoch_s())
    return user if user is not None and user in g.users else None


def api_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    g = gw(connection)
    if check_token(bearer(connection.headers.get("authorization")), g.api_tokens):
        return
    if session_user(connection) is not None:
        return
    raise NotAuthorizedException(
        detail="a Bearer token (api_tokens) or a web login is required",
        headers={"WWW-Authenticate": 'Bearer realm="reports"'},
    )


class ErrorBody(msgspec.Struct, kw_only=True):
    """An error: the HTTP status and what went wrong."""

    status_code: int
    detail: str


class UserDay(msgspec.Struct, kw_only=True):
    """One user's local day: the figures (None when the day has no data) and the timeline."""

    user_key: str
    date: date
    day: DayRow | None
    timeline: list[TimelineItem]


API_RESPONSES = {
    401: ResponseSpec(
        ErrorBody, generate_examples=False, description="no valid Bearer token (api_tokens) nor web login"
    ),
    503: ResponseSpec(ErrorBody, generate_examples=False, description="PostgreSQL is not reachable"),
}
DateParam = Annotated[
    date | None, Parameter(query="date", description="a day in the period (YYYY-MM-DD); default today")
]
UserParam = Annotated[
    str | None, Parameter(query="user", description="a user key (domain\\login); default every user")
]


def _day(g: Gateway, d: date | None) -> date:
    return d or g.today()


@get("/day", responses=API_RESPONSES, summary="Working time per user on one local day")
async def api_day(request: Request, d: DateParam = None, user: UserParam = None) -> list[DayRow]:
    g = gw(request)
    return await (await g.reports()).day(_day(g, d), user)


@get("/week", responses=API_RESPONSES, summary="Working time per user over the ISO week containing the date")
async def api_week(request: Request, d: DateParam = None, user: UserParam = None) -> list[PeriodRow]:
    g = gw(request)
    return await (await g.reports()).week(_day(g, d), user)


@get("/month", responses=API_RESPONSES, summary="Working time per user over the month containing the date")
async def api_month(request: Request, d: DateParam = None, user: UserParam = None) -> list[PeriodRow]:
    g = gw(request)
    return await (await g.reports()).month(_day(g, d), user)


@get("/user", responses=API_RESPONSES, summary="One user's day: figures and timeline")
async def api_user(
    request: Request,
    user: Annotated[str, Parameter(query="user", description="the user key (domain\\login)", min_length=1)],
    d: DateParam = None,
) -> UserDay:
    g = gw(request)
    day = _day(g, d)
    row, timeline = await (await g.reports()).user_day(user, day)
    return UserDay(user_key=user, date=day, day=row, timeline=timeline)


@get(
    "/apps",
    responses=API_RESPONSES,
    summary="Focus time per application and domain (full URLs only when the server allows)",
)
async def api_apps(
    request: Request,
    start: Annotated[
        date | None, Parameter(query="start", description="first local date; default today")
    ] = None,
    end: Annotated[date | None, Parameter(query="end", description="last local date; default start")] = None,
    user: UserParam = None,
) -> list[AppUsage]:
    g = gw(request)
    first = start or g.today()
    last = end or first
    if last < first:
        raise ClientException(detail="end is before start")
    return await (await g.reports()).apps(first, last, user, show_urls=g.settings.reports_show_urls)


api_router = Router(
    path="/api/v1/reports",
    route_handlers=[api_day, api_week, api_month, api_user, api_apps],
    guards=[api_guard],
    security=[{"BearerToken": []}],
    tags=["reports"],
)
