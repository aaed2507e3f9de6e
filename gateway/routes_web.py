"""The web pages: login, overview (day/week/month), a user's day with its timeline chart, applications.

Without a valid session cookie every page answers 401 with the login form in its body."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, Parameter
from litestar.response import Redirect, Template

from gateway import views
from gateway.auth import COOKIE_NAME, check_login
from gateway.routes_api import session_user
from gateway.state import gw

DateQuery = Annotated[str | None, Parameter(query="date", required=False)]


class LoginRequired(Exception):
    """A page was asked for without a valid login."""


def page_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if session_user(connection) is None:
        raise LoginRequired


def safe_next(target: str | None) -> str:
    """Only local paths may be redirected to after a login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(request: Request, status: int = 401, error: str = "", next_: str | None = None) -> Template:
    target = (
        next_
        if next_ is not None
        else request.url.path + (f"?{request.url.query}" if request.url.query else "")
    )
    return Template(
        template_name="login.html",
        context={"error": error, "next": safe_next(target), "user": None},
        status_code=status,
    )


def on_login_required(request: Request, _: LoginRequired) -> Template:
    return login_page(request)


def parse_day(text: str | None, default: date) -> date:
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ClientException(detail="date must be YYYY-MM-DD") from None


def base_context(request: Request, **extra: Any) -> dict[str, Any]:
    return {"user": session_user(request), "views": views, **extra}


@get("/login", include_in_schema=False)
async def login_form(
    request: Request, next_: Annotated[str | None, Parameter(query="next")] = None
) -> Response[Any]:
    if session_user(request) is not None:
        return Redirect(safe_next(next_))
    return login_page(request, status=200, next_=next_ or "/")


@dataclass
class LoginForm:
    username: str = ""
    password: str = ""
    next: str = "/"


@post("/login", include_in_schema=False, status_code=303)
async def login_submit(
    request: Request, data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Response[Any]:
    g = gw(request)
    if not g.users or not check_login(g.users, data.username, data.password):
        g.metrics.logins.labels("failed").inc()
        return login_page(request, status=401, error="Wrong user name or password.", next_=data.next)
    g.metrics.logins.labels("ok").inc()
    response = Redirect(safe_next(data.next), status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        g.signer.issue(data.username, g.epoch_s(), g.settings.web_session_hours * 3600),
        max_age=int(g.settings.web_session_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=g.settings.web_cookie_secure,
        path="/",
    )
    return response


@post("/logout", include_in_schema=False, status_code=303)
async def logout() -> Redirect:
    response = Redirect("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@get("/", include_in_schema=False, guards=[page_guard])
async def overview(request: Request, day: DateQuery = None, view: str = "day") -> Template:
    g = gw(request)
    if view not in views.VIEWS:
        raise ClientException(detail="view must be day, week or month")
    today = g.today()
    d = parse_day(day, today)
    reports = await g.reports()
    context = base_context(
        request,
        view=view,
        d=d,
        label=views.period_label(d, view),
        prev=views.step(d, view, -1),
        next=views.step(d, view, 1),
        today=today,
    )
    if view == "day":
        context["rows"] = await reports.day(d)
    elif view == "week":
        context["periods"] = await reports.week(d)
    else:
        context["periods"] = await reports.month(d)
    return Template(template_name="overview.html", context=context)


@get("/user/{user_key:str}", include_in_schema=False, guards=[page_guard])
async def user_day(request: Request, user_key: str, day: DateQuery = None) -> Response[Any]:
    g = gw(request)
    d = parse_day(day, g.today())
    reports = await g.reports()
    # A bare login ("alice") or another spelling: redirect to the one user key it means, else say so.
    lookup = await reports.resolve_user(user_key)
    if lookup.key is not None and lookup.key != user_key:
        return Redirect(f"/user/{views.user_path(lookup.key)}?{views.nav_query(date=d)}")
    if lookup.key is None:
        return Template(
            template_name="user.html",
            context=base_context(
                request, user_key=user_key, d=d, notice=lookup.message(), candidates=lookup.candidates,
                prev=d - timedelta(days=1), next=d + timedelta(days=1), tz=g.zone.key,
            ),
            status_code=300 if lookup.ambiguous else 404,
        )
    row, items = await reports.user_day(user_key, d)
    tz = row.tz if row else (str(items[0].start.tzinfo) if items else g.zone.key)
    return Template(
        template_name="user.html",
        context=base_context(
            request,
            user_key=user_key,
            d=d,
            prev=d - timedelta(days=1),
            next=d + timedelta(days=1),
            row=row,
            items=items,
            tz=tz,
            bars=views.timeline_bars(items, d, tz),
            ticks=views.hour_ticks(),
            width=views.CHART_WIDTH,
            row_height=views.ROW_HEIGHT,
        ),
    )


@get("/apps", include_in_schema=False, guards=[page_guard])
async def apps_page(
    request: Request,
    start: Annotated[str | None, Parameter(query="start", required=False)] = None,
    end: Annotated[str | None, Parameter(query="end", required=False)] = None,
    user: Annotated[str | None, Parameter(query="user", required=False)] = None,
) -> Template:
    g = gw(request)
    first = parse_day(start, g.today())
    last = parse_day(end, first)
    if last < first:
        raise ClientException(detail="end is before start")
    show_urls = g.settings.reports_show_urls
    reports = await g.reports()
    rows = await reports.apps(first, last, user or None, show_urls=show_urls)
    return Template(
        template_name="apps.html",
        context=base_context(
            request,
            start=first,
            end=last,
            filter_user=user or "",
            users=await reports.users(),
            by_app=views.totals(rows, "app"),
            by_domain=views.totals(rows, "domain"),
            by_url=views.totals(rows, "url") if show_urls else [],
            show_urls=show_urls,
            span_days=(last - first).days + 1,
        ),
    )


web_handlers = [login_form, login_submit, logout, overview, user_day, apps_page]
