"""The "Processes" page: the directly-follows graph of a user's or team's UI events over a period, drawn by
Graphviz (a plain edge table when ``dot`` is missing), and their top recurring tasks. Behind the same login
guard as the other report pages; see docs/mining.md.

The graph is embedded as an ``<img>`` with an SVG data URI: titles and application names come from the
workstations, and an SVG shown as an image cannot run scripts whatever its text holds.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from datetime import date, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.exceptions import ClientException
from litestar.params import Parameter
from litestar.response import Template

from common.settings import load
from gateway.routes_web import base_context, page_guard, parse_day
from gateway.state import gw
from reports import export, flow, tasks
from reports.mining_cli import MiningError, resolve_team

#: The longest period the page reads (the CLI has no limit): it answers while the user waits.
MAX_DAYS = 31
TOP_TASKS = 15

Query = Annotated[str | None, Parameter(required=False)]


class ProcessPageSettings(msgspec.Struct, kw_only=True):
    """Settings of the page, read like every setting (``DESKTRACE_*``, TOML top level or ``[gateway]``)."""

    team_file: str = ""
    gap: float = 300.0


@functools.cache
def page_settings() -> ProcessPageSettings:
    return load(ProcessPageSettings, section="gateway")


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
    first = parse_day(start, g.today())
    last = parse_day(end, first)
    if last < first:
        raise ClientException(detail="end is before start")
    if last - first >= timedelta(days=MAX_DAYS):
        raise ClientException(
            detail=f"the Processes page shows at most {MAX_DAYS} days (use desktrace-report)"
        )
    lvl = level or "app"
    if lvl not in flow.LEVELS:
        raise ClientException(detail="level must be app or window")
    settings = page_settings()
    error = ""
    users: list[str] | None = [user.lower()] if user else None
    if team:
        try:
            users = sorted(set(users or []) | set(resolve_team(team, settings.team_file)))
        except MiningError as exc:
            error = str(exc)
    reports = await g.reports()
    dfg: flow.Dfg | None = None
    rows: list[tasks.TaskRow] = []
    svg: str | None = None
    if not error:
        dfg, rows = await _mine(g, first, last, users, lvl, settings.gap)
        svg = await asyncio.to_thread(_svg_data_uri, dfg) if dfg.edges else None
    return Template(
        template_name="processes.html",
        context=base_context(
            request,
            start=first,
            end=last,
            filter_user=user or "",
            team=team or "",
            level=lvl,
            levels=flow.LEVELS,
            users=await reports.users(),
            dfg=dfg,
            svg=svg,
            tasks=rows,
            error=error,
            gap=settings.gap,
        ),
    )


async def _mine(
    g: Any, first: date, last: date, users: list[str] | None, level: str, gap: float
) -> tuple[flow.Dfg, list[tasks.TaskRow]]:
    """One read of the events feeds both the graph and the task miner."""
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
