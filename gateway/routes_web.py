"""The web pages: login (throttled), logout (revoking the session), overview (day/week/month, sortable, with a
total row and charts), a user's day, week and month, applications. Each page reads only the users of the
login's scope (``gateway.principal``).

Without a valid session cookie every page answers 401 with the login form in its body."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, Parameter
from litestar.response import Redirect, Template

from gateway import charts, views
from gateway.access import Scope
from gateway.auth import COOKIE_NAME, check_login
from gateway.principal import check_user, readable_users, session_info, session_scope, session_user
from gateway.state import Gateway, gw

DateQuery = Annotated[str | None, Parameter(query="date", required=False)]
TeamQuery = Annotated[str | None, Parameter(query="team", required=False)]
SortQuery = Annotated[str | None, Parameter(query="sort", required=False)]
DirQuery = Annotated[str | None, Parameter(query="dir", required=False)]


class LoginRequired(Exception):
    """A page was asked for without a valid login."""


def page_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    if session_user(connection) is None:
        raise LoginRequired


def page_scope(request: Request[Any, Any, Any]) -> Scope:
    scope = session_scope(request)
    if scope is None:
        raise LoginRequired
    return scope


def safe_next(target: str | None) -> str:
    """Only local paths may be redirected to after a login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(
    request: Request,
    status: int = 401,
    error: str = "",
    next_: str | None = None,
    headers: dict[str, str] | None = None,
) -> Template:
    target = (
        next_
        if next_ is not None
        else request.url.path + (f"?{request.url.query}" if request.url.query else "")
    )
    return Template(
        template_name="login.html",
        context={"error": error, "next": safe_next(target), "user": None},
        status_code=status,
        headers=headers,
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


def parse_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """The ``start``..``end`` query dates (``start`` defaults to ``today``, ``end`` to ``start``); a 400
    when one is malformed or ``end`` is before ``start``."""
    first = parse_day(start, today)
    last = parse_day(end, first)
    if last < first:
        raise ClientException(detail="end is before start")
    return first, last


def parse_view(view: str) -> str:
    if view not in views.VIEWS:
        raise ClientException(detail="view must be day, week or month")
    return view


def base_context(request: Request, **extra: Any) -> dict[str, Any]:
    scope = session_scope(request)
    return {"user": session_user(request), "scope": scope, "views": views, **extra}


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


def throttle_keys(request: Request[Any, Any, Any], username: str) -> list[str]:
    """The throttling counters a login attempt touches: its user name and its client address (the peer of
    the TCP connection: the gateway trusts no forwarding header)."""
    address = request.client.host if request.client else "unknown"
    return [f"user:{username.strip().lower()}", f"addr:{address}"]


@post("/login", include_in_schema=False, status_code=303)
async def login_submit(
    request: Request, data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)]
) -> Response[Any]:
    g = gw(request)
    keys = throttle_keys(request, data.username)
    wait = g.throttle.wait(keys, g.epoch_s())
    if wait > 0:
        g.metrics.logins.labels("throttled").inc()
        seconds = math.ceil(wait)
        return login_page(
            request,
            status=429,
            error=f"Too many failed logins. Try again in {seconds} s.",
            next_=data.next,
            headers={"Retry-After": str(seconds)},
        )
    if not g.users or not check_login(g.users, data.username, data.password):
        g.throttle.failed(keys, g.epoch_s())
        g.metrics.logins.labels("failed").inc()
        return login_page(request, status=401, error="Wrong user name or password.", next_=data.next)
    g.throttle.succeeded(keys)
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
async def logout(request: Request) -> Redirect:
    """Ends the session server-side (its id is revoked until the cookie would expire) and drops the cookie."""
    g = gw(request)
    info = session_info(request)
    if info is not None:
        g.revoked.revoke(info.sid, info.exp, g.epoch_s())
        g.metrics.logouts.inc()
    response = Redirect("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


def period_context(request: Request, d: date, view: str, today: date, **extra: Any) -> dict[str, Any]:
    """The page context every period view shares: the period (``first``/``last``), its label, the previous
    and next period, and today; ``extra`` adds the page's own keys."""
    first, last = views.period_bounds(d, view)
    return base_context(
        request, view=view, d=d, first=first, last=last, today=today, label=views.period_label(d, view),
        prev=views.step(d, view, -1), next=views.step(d, view, 1), **extra,
    )


def notice_for(g: Gateway, first: date, scope: Scope) -> str:
    """The notice of a period that cannot have data: it starts in the future, or the login reads nobody."""
    if scope.users is not None and not scope.users:
        return "no-scope"
    if first > g.today():
        return "future"
    return ""


def visible_teams(g: Gateway, scope: Scope) -> list[str]:
    return g.access.teams if scope.everyone else [t for t in g.access.teams if t in scope.teams]


@get("/", include_in_schema=False, guards=[page_guard])
async def overview(
    request: Request,
    day: DateQuery = None,
    view: str = "day",
    team: TeamQuery = None,
    sort: SortQuery = None,
    dir_: DirQuery = None,
) -> Template:
    g = gw(request)
    view = parse_view(view)
    scope = page_scope(request)
    today = g.today()
    d = parse_day(day, today)
    sort_key = sort if sort in views.SORT_FIELDS else "user"
    desc = dir_ == "desc"
    users = readable_users(request, scope, None, team or None)
    reports = await g.reports()
    context = period_context(
        request,
        d,
        view,
        today,
        team=team or "",
        teams=visible_teams(g, scope),
        sort=sort_key,
        desc=desc,
    )
    first, last = context["first"], context["last"]
    context["notice"] = notice_for(g, first, scope)
    listed: list[Any]
    if view == "day":
        listed = await reports.day(d, users=users)
        context["rows"] = views.sort_rows(listed, sort_key, desc)
        context["row_bars"] = charts.row_bars(listed)
    else:
        listed = await (reports.week(d, users=users) if view == "week" else reports.month(d, users=users))
        context["periods"] = views.sort_rows(listed, sort_key, desc)
        if view == "week":
            context["grid"] = charts.week_grid(context["periods"], first)
        else:
            context["strip"] = charts.month_strip(context["periods"], first, last)
    context["total"] = views.total(listed)
    if not team:  # a total per team the login may read
        context["team_totals"] = [
            (t, views.total(r for r in listed if r.user_key in (g.access.members(t) or ())))
            for t in context["teams"]
        ]
    return Template(template_name="overview.html", context=context)


@get("/user/{user_key:str}", include_in_schema=False, guards=[page_guard])
async def user_page(
    request: Request, user_key: str, day: DateQuery = None, view: str = "day"
) -> Template | Redirect:
    g = gw(request)
    view = parse_view(view)
    scope = page_scope(request)
    today = g.today()
    d = parse_day(day, today)
    reports = await g.reports()
    # A bare login ("alice") or another spelling ("CORP\\Alice"): the one user key in scope it means.
    lookup = await reports.resolve_user(user_key)
    visible = [c for c in (lookup.candidates or ((lookup.key,) if lookup.key else ())) if scope.allows(c)]
    if len(visible) == 1 and visible[0] != user_key:
        query = views.nav_query(date=d) if view == "day" else views.nav_query(date=d, view=view)
        return Redirect(f"/user/{views.user_path(visible[0])}?{query}")
    if len(visible) > 1:
        return Template(
            template_name="user.html",
            context=period_context(
                request, d, view, today, user_key=user_key, notice="ambiguous", candidates=visible,
                tz=g.zone.key, row=None, items=[], rows=[], teams_of=[],
            ),
            status_code=300,
        )
    check_user(scope, user_key)
    context = period_context(request, d, view, today, user_key=user_key, teams_of=g.access.teams_of(user_key))
    first, last = context["first"], context["last"]
    if not await reports.user_exists(user_key):
        context.update(notice="unknown-user", tz=g.zone.key, row=None, items=[], rows=[])
        return Template(template_name="user.html", context=context, status_code=404)
    context["notice"] = "future" if first > today else ""
    if view == "day":
        row, items = await reports.user_day(user_key, d)
        tz = row.tz if row else (str(items[0].start.tzinfo) if items else g.zone.key)
        context.update(
            row=row,
            items=items,
            tz=tz,
            bars=views.timeline_bars(items, d, tz),
            ticks=views.hour_ticks(),
            width=views.CHART_WIDTH,
            row_height=views.ROW_HEIGHT,
        )
    else:
        rows = await reports.days(first, last, users=[user_key])
        context.update(rows=rows, total=views.total(rows), tz=rows[-1].tz if rows else g.zone.key)
        if view == "week":
            context["columns"] = charts.day_columns(rows, charts.week_days(first))
        else:
            context["calendar"] = charts.month_calendar(rows, first, user_key)
    return Template(template_name="user.html", context=context)


@get("/apps", include_in_schema=False, guards=[page_guard])
async def apps_page(
    request: Request,
    start: Annotated[str | None, Parameter(query="start", required=False)] = None,
    end: Annotated[str | None, Parameter(query="end", required=False)] = None,
    user: Annotated[str | None, Parameter(query="user", required=False)] = None,
) -> Template:
    g = gw(request)
    scope = page_scope(request)
    first, last = parse_range(start, end, g.today())
    users = readable_users(request, scope, user or None)
    show_urls = g.settings.reports_show_urls
    reports = await g.reports()
    rows = await reports.apps(first, last, user or None, show_urls=show_urls, users=users)
    return Template(
        template_name="apps.html",
        context=base_context(
            request,
            start=first,
            end=last,
            filter_user=user or "",
            users=[u for u in await reports.users() if scope.allows(u)],
            by_app=views.totals(rows, "app"),
            by_domain=views.totals(rows, "domain"),
            by_url=views.totals(rows, "url") if show_urls else [],
            show_urls=show_urls,
            span_days=(last - first).days + 1,
        ),
    )


web_handlers = [login_form, login_submit, logout, overview, user_page, apps_page]
