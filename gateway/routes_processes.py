"""The "Processes" page: the directly-follows graph of a user's or team's UI events over a period, drawn by
Graphviz (a plain edge table when ``dot`` is missing), and their top recurring tasks. Behind the same login
guard as the other report pages and filtered by the login's scope exactly like them
(``gateway.principal.readable_users``: admin everyone, lead their teams, viewer their own user key; a user
or team outside the scope is 403, an unknown team 404); see docs/mining.md.

The graph is embedded as an ``<img>`` with an SVG data URI: titles and application names come from the
workstations, and an SVG shown as an image cannot run scripts whatever its text holds.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import date, timedelta
from typing import Annotated, Any

from litestar import Request, get
from litestar.exceptions import ClientException
from litestar.params import Parameter
from litestar.response import Template

from gateway.principal import readable_users
from gateway.routes_web import base_context, notice_for, page_guard, page_scope, parse_range, visible_teams
from gateway.state import gw
from reports import export, flow, tasks

#: The longest period the page reads (the CLI has no limit): it answers while the user waits.
MAX_DAYS = 31
TOP_TASKS = 15

Query = Annotated[str | None, Parameter(required=False)]


def _svg_data_uri(g: flow.Dfg) -> str | None:
    """The DFG as an SVG data URI, or None without Graphviz (the page then shows the edge table)."""
    if not flow.dot_available():
        return None
    try:
        svg = flow.to_svg(g)
    except (flow.GraphvizMissing, RuntimeError, OSError):
        return None
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


@get("/processes", include_in_schema=False, guards=[page_guard])
async def processes_page(
    request: Request,
    start: Query = None,
    end: Query = None,
    user: Query = None,
    team: Query = None,
    level: Query = None,
) -> Template:
    g = gw(request)
    scope = page_scope(request)
    first, last = parse_range(start, end, g.today())
    if last - first >= timedelta(days=MAX_DAYS):
        raise ClientException(
            detail=f"the Processes page shows at most {MAX_DAYS} days (use desktrace-report)"
        )
    lvl = level or "app"
    if lvl not in flow.LEVELS:
        raise ClientException(detail="level must be app or window")
    settings = g.settings
    filter_user = user.lower() if user else ""  # user keys are lower-case (spec/events.md)
    found = readable_users(request, scope, filter_user or None, team or None)
    users = None if found is None else list(found)
    reports = await g.reports()
    dfg, rows = await _mine(g, first, last, users, lvl, settings.gap)
    svg = await asyncio.to_thread(_svg_data_uri, dfg) if dfg.edges else None
    return Template(
        template_name="processes.html",
        context=base_context(
            request,
            start=first,
            end=last,
            filter_user=filter_user,
            team=team or "",
            teams=visible_teams(g, scope),
            level=lvl,
            levels=flow.LEVELS,
            users=[u for u in await reports.users() if scope.allows(u)],
            dfg=dfg,
            svg=svg,
            tasks=rows,
            gap=settings.gap,
            notice=notice_for(g, first, scope),
        ),
    )


async def _mine(
    g: Any, first: date, last: date, users: list[str] | None, level: str, gap: float
) -> tuple[flow.Dfg, list[tasks.TaskRow]]:
    """One read of the events feeds both the graph and the task miner. ``users`` None is everyone, an empty
    list no one (then nothing is read)."""
    if users is not None and not users:
        return flow.DfgBuilder(level).result(), []
    await g.reports()  # connects the pool on first use
    pool = g._pool
    b = flow.DfgBuilder(level)
    miner = tasks.TaskMiner(gap, level)
    async with pool.acquire(timeout=10) as conn:
        async for t in export.stream_traces(conn, first, last, users):
            b.add(t)
            miner.add(t)
    return b.result(), miner.result(top=TOP_TASKS)


process_handlers = [processes_page]
