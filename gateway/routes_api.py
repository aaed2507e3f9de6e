"""``/api/v1/reports/*``: the reports as JSON or CSV (``format=csv``), for Bearer tokens (``api_tokens``) or
a logged-in browser, each reading only the users of its scope (``gateway.principal``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import Parameter

from gateway.access import Scope
from gateway.principal import check_user, readable_users, request_scope
from gateway.principal import session_user as session_user  # re-exported (pages import it from here)
from gateway.state import Gateway, gw
from reports import render
from reports.model import AppUsage, DayRow, PeriodRow, TimelineItem

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


def api_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if request_scope(connection) is None:
        raise NotAuthorizedException(
            detail="a Bearer token (api_tokens) or a web login is required",
            headers={"WWW-Authenticate": 'Bearer realm="reports"'},
        )


def scope_of(request: Request[Any, Any, Any]) -> Scope:
    scope = request_scope(request)
    if scope is None:  # the guard ran first; this is a second line of defence
        raise NotAuthorizedException(detail="a Bearer token (api_tokens) or a web login is required")
    return scope


@dataclass
class CsvOperation(Operation):
    """An operation whose 200 answer is also available as ``text/csv`` (``format=csv``)."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = dict(ok.content or {})
            ok.content[CSV_MEDIA_TYPE] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, description="CSV with a header row")
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
    403: ResponseSpec(
        ErrorBody, generate_examples=False, description="the user or team is outside the caller's scope"
    ),
    404: ResponseSpec(ErrorBody, generate_examples=False, description="no such team in the team file"),
    503: ResponseSpec(ErrorBody, generate_examples=False, description="PostgreSQL is not reachable"),
}
DateParam = Annotated[
    date | None, Parameter(query="date", description="a day in the period (YYYY-MM-DD); default today")
]
UserParam = Annotated[
    str | None, Parameter(query="user", description="a user key (domain\\login); default every user in scope")
]
TeamParam = Annotated[
    str | None, Parameter(query="team", description="only the members of this team (of the team file)")
]
FormatParam = Annotated[
    Literal["json", "csv"],
    Parameter(query="format", description="json (default) or csv (text/csv with a header row)"),
]


def _day(g: Gateway, d: date | None) -> date:
    return d or g.today()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def spreadsheet_safe(text: str) -> str:
    """CSV ``text`` with every text cell that a spreadsheet would run as a formula (starting with ``=``,
    ``+``, ``-``, ``@``, tab or CR; e.g. a user key sent by a legacy client) prefixed with ``'``. Numbers
    and RFC 3339 times are left as they are."""
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow(
            ["'" + cell if cell.startswith(_FORMULA_START) and not _is_number(cell) else cell for cell in row]
        )
    return out.getvalue()


def csv_response(text: str, filename: str) -> Response[Any]:
    return Response(
        spreadsheet_safe(text),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@get(
    "/day",
    responses=API_RESPONSES,
    summary="Working time per user on one local day",
    operation_class=CsvOperation,
)
async def api_day(
    request: Request,
    d: DateParam = None,
    user: UserParam = None,
    team: TeamParam = None,
    fmt: FormatParam = "json",
) -> Response[list[DayRow]]:
    g = gw(request)
    users = readable_users(request, scope_of(request), user, team)
    day = _day(g, d)
    rows = await (await g.reports()).day(day, users=users)
    if fmt == "csv":
        return csv_response(render.days(rows, "csv"), f"desktrace-day-{day}.csv")
    return Response(rows)


async def _period(
    request: Request, view: str, d: date | None, user: str | None, team: str | None, fmt: str
) -> Response[Any]:
    g = gw(request)
    users = readable_users(request, scope_of(request), user, team)
    day = _day(g, d)
    reports = await g.reports()
    rows = await (reports.week(day, users=users) if view == "week" else reports.month(day, users=users))
    if fmt == "csv":
        label = rows[0].period if rows else day.isoformat()
        return csv_response(render.period_days_csv(rows), f"desktrace-{view}-{label}.csv")
    return Response(rows)


@get(
    "/week",
    responses=API_RESPONSES,
    summary="Working time per user over the ISO week containing the date (CSV: one line per user and day)",
    operation_class=CsvOperation,
)
async def api_week(
    request: Request,
    d: DateParam = None,
    user: UserParam = None,
    team: TeamParam = None,
    fmt: FormatParam = "json",
) -> Response[list[PeriodRow]]:
    return await _period(request, "week", d, user, team, fmt)


@get(
    "/month",
    responses=API_RESPONSES,
    summary="Working time per user over the month containing the date (CSV: one line per user and day)",
    operation_class=CsvOperation,
)
async def api_month(
    request: Request,
    d: DateParam = None,
    user: UserParam = None,
    team: TeamParam = None,
    fmt: FormatParam = "json",
) -> Response[list[PeriodRow]]:
    return await _period(request, "month", d, user, team, fmt)


@get(
    "/user",
    responses=API_RESPONSES,
    summary="One user's day: figures and timeline (CSV: the timeline)",
    operation_class=CsvOperation,
)
async def api_user(
    request: Request,
    user: Annotated[str, Parameter(query="user", description="the user key (domain\\login)", min_length=1)],
    d: DateParam = None,
    fmt: FormatParam = "json",
) -> Response[UserDay]:
    g = gw(request)
    check_user(scope_of(request), user)
    day = _day(g, d)
    row, timeline = await (await g.reports()).user_day(user, day)
    if fmt == "csv":
        text = render.user_day(user, day.isoformat(), row, timeline, "csv")
        return csv_response(text, f"desktrace-user-{day}.csv")
    return Response(UserDay(user_key=user, date=day, day=row, timeline=timeline))


@get(
    "/apps",
    responses=API_RESPONSES,
    summary="Focus time per application and domain (full URLs only when the server allows)",
    operation_class=CsvOperation,
)
async def api_apps(
    request: Request,
    start: Annotated[
        date | None, Parameter(query="start", description="first local date; default today")
    ] = None,
    end: Annotated[date | None, Parameter(query="end", description="last local date; default start")] = None,
    user: UserParam = None,
    team: TeamParam = None,
    fmt: FormatParam = "json",
) -> Response[list[AppUsage]]:
    g = gw(request)
    users = readable_users(request, scope_of(request), user, team)
    first = start or g.today()
    last = end or first
    if last < first:
        raise ClientException(detail="end is before start")
    rows = await (await g.reports()).apps(
        first, last, user, show_urls=g.settings.reports_show_urls, users=users
    )
    if fmt == "csv":
        return csv_response(render.apps(rows, "csv"), f"desktrace-apps-{first}-{last}.csv")
    return Response(rows)


api_router = Router(
    path="/api/v1/reports",
    route_handlers=[api_day, api_week, api_month, api_user, api_apps],
    guards=[api_guard],
    security=[{"BearerToken": []}],
    tags=["reports"],
)
