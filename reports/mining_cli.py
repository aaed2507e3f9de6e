"""The task-mining subcommands of ``desktrace-report``: ``export``, ``flow`` and ``tasks`` (docs/mining.md).

    desktrace-report export --format xes|ocel --from D --to D [--user KEY]... [--team T] --out FILE
    desktrace-report flow   --from D --to D [--user KEY]... [--team T] [--level app|window]
                            [--format json|table|dot|svg]
    desktrace-report tasks  --from D --to D [--user KEY]... [--team T] [--level app|window] [--gap S]
                            [--min-count N] [--min-len N] [--max-len N] [--top N] [--format table|json|csv]

Dates are the users' local dates. ``reports_show_urls`` (``DESKTRACE_REPORTS_SHOW_URLS``) puts full URLs
into the export; otherwise only URL domains leave the database. ``--team T`` reads the members of team T
from the team file of the reports and the gateway (``teams_file`` / ``DESKTRACE_TEAMS_FILE``, read by
:func:`reports.teams.load_team_file`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from common.settings import HELP, SettingsError, add_arguments, spellings
from reports import export, flow, tasks
from reports.settings import database_problem, load_report_settings
from reports.teams import TeamFileError, load_team_file

COMMANDS = ("export", "flow", "tasks")

log = logging.getLogger("reports.mining")


class MiningError(Exception):
    """A problem the user can fix; the message says how."""


@functools.cache
def _settings_cls() -> Any:
    from reports.settings import MiningSettings

    return MiningSettings


MINING_HELP = {
    **HELP,
    "reports_show_urls": "export full URLs (default: URL domains only, as the report pages)",
    "gap": "G, the idle gap in seconds (as the sessions' setting): tasks never span a longer pause",
    "teams_file": "TOML or JSON team file ([teams] name = [user keys]) that --team reads",
}


def team_members(team: str, teams_file: str) -> list[str]:
    """The user keys of ``team`` in the team file the reports and the gateway read (``teams_file``, parsed by
    :func:`reports.teams.load_team_file`), lower-cased as user keys are. Raises :class:`MiningError`."""
    if not teams_file:
        raise MiningError(
            f"--team needs a team file: set {spellings('teams_file')} to a TOML or JSON file with a [teams] "
            "table (see docs/mining.md)"
        )
    try:
        teams = load_team_file(teams_file).teams
    except TeamFileError as exc:
        raise MiningError(str(exc)) from None
    if team not in teams:
        raise MiningError(f"no team {team!r} in {teams_file} (teams: {', '.join(sorted(teams)) or 'none'})")
    return sorted({m.lower() for m in teams[team]})


def _date(text: str) -> date:
    from reports.cli import parse_date

    return parse_date(text)


def add_parsers(sub: Any) -> None:
    """Add ``export``, ``flow`` and ``tasks`` to the subparsers of ``desktrace-report``."""
    common = argparse.ArgumentParser(add_help=False)
    add_arguments(common, _settings_cls(), MINING_HELP)
    common.add_argument(
        "--from", dest="start", type=_date, required=True, metavar="D", help="first local date"
    )
    common.add_argument("--to", dest="end", type=_date, required=True, metavar="D", help="last local date")
    common.add_argument(
        "--user",
        dest="users",
        action="append",
        default=None,
        metavar="KEY",
        help="a user key, e.g. 'corp\\alice' (repeatable; default: everyone)",
    )
    common.add_argument(
        "--team", default=None, metavar="T", help="the members of team T of the teams_file (see --teams-file)"
    )
    ex = sub.add_parser(
        "export", parents=[common], help="event log of UI events as IEEE XES or OCEL 2.0 JSON (streaming)"
    )
    ex.add_argument(
        "--format", choices=export.FORMATS, default="xes", help="xes (default) or ocel (OCEL 2.0 JSON)"
    )
    ex.add_argument("--out", required=True, metavar="FILE", help="output file ('-': standard output)")
    ex.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on standard error (default: a bar on a terminal, plain lines otherwise)",
    )
    fl = sub.add_parser("flow", parents=[common], help="directly-follows graph of the UI events")
    fl.add_argument("--level", choices=flow.LEVELS, default="app", help="activity: application or window")
    fl.add_argument("--format", choices=flow.FORMATS, default="table", help="output format")
    tk = sub.add_parser("tasks", parents=[common], help="most frequent sequences of application/window steps")
    tk.add_argument("--level", choices=flow.LEVELS, default="app", help="step: application or window")
    tk.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    tk.add_argument("--min-count", type=int, default=2, help="least occurrences of a sequence (default 2)")
    tk.add_argument("--min-len", type=int, default=tasks.MIN_LEN, help="fewest steps (default 2)")
    tk.add_argument("--max-len", type=int, default=tasks.MAX_LEN, help="most steps (default 8)")
    tk.add_argument("--top", type=int, default=20, help="rows shown (default 20)")
    tk.add_argument("--sort", choices=tasks.SORTS, default="total", help="rank by total time or count")


class Progress:
    """Progress of a long read on a text stream: a redrawn bar on a terminal, a plain line every few
    seconds otherwise."""

    def __init__(self, out: TextIO, total: int | None, tty: bool, every_s: float = 5.0) -> None:
        self.out, self.total, self.tty, self.every_s = out, total, tty, every_s
        self.t0 = self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        now = time.monotonic()
        rate = n / max(now - self.t0, 1e-9)
        if self.tty:
            if self.total:
                frac = min(1.0, n / self.total)
                bar = "#" * int(frac * 30)
                self.out.write(f"\r[{bar:<30}] {frac:6.1%} {n}/{self.total} events {rate:,.0f}/s ")
            else:
                self.out.write(f"\r{n} events {rate:,.0f}/s ")
            self.out.flush()
        elif now - self._last >= self.every_s:
            of = f"/{self.total}" if self.total else ""
            self.out.write(f"export: {n}{of} events read, {rate:,.0f}/s\n")
            self.out.flush()
            self._last = now

    def done(self, stats: export.ExportStats) -> None:
        dt = max(time.monotonic() - self.t0, 1e-9)
        end = "\n" if self.tty else ""
        self.out.write(
            f"{end}export: {stats.traces} traces, {stats.events} events in {dt:.1f} s "
            f"({stats.events / dt:,.0f} events/s)\n"
        )
        self.out.flush()


def tasks_render(rows: list[tasks.TaskRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], ensure_ascii=False, indent=2)
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("steps", "count", "users", "median_s", "total_s"))
        for r in rows:
            w.writerow((" > ".join(r.steps), r.count, r.users, r.median_s, r.total_s))
        return buf.getvalue().rstrip("\n")
    if not rows:
        return "no recurring sequence in this period"
    lines = [f"{'COUNT':>6} {'USERS':>5} {'MEDIAN':>8} {'TOTAL':>9}  STEPS"]
    for r in rows:
        lines.append(
            f"{r.count:>6} {r.users:>5} {_hms(r.median_s):>8} {_hms(r.total_s):>9}  {' > '.join(r.steps)}"
        )
    return "\n".join(lines)


def _hms(s: float) -> str:
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=15, command_timeout=None)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise MiningError(f"cannot connect to PostgreSQL ({type(exc).__name__}: {exc})") from None


async def _users(
    conn: asyncpg.Connection, names: list[str] | None, team: list[str] | None
) -> list[str] | None:
    """The user keys to read (None: everyone): ``--user`` names (a user key, or a bare login that exactly one
    user key has, as ``desktrace-report --user``; raises ``UnknownUser``) and the ``--team`` members."""
    if not names and team is None:
        return None
    from reports.cli import resolve_user_arg
    from reports.service import ReportService

    keys = set(team or [])
    for name in names or []:
        if "\\" in name:  # a whole user key: taken as it is (raw events may have no sessions yet)
            keys.add(name.strip().lower())
        else:
            keys.add(str(await resolve_user_arg(ReportService(conn), name)))
    return sorted(keys)


async def _run(args: argparse.Namespace, settings: Any, team: list[str] | None) -> str | None:
    conn = await _connect(settings.pg_dsn)
    try:
        users = await _users(conn, args.users, team)
        if args.command == "export":
            await _export(conn, args, settings, users)
            return None
        if args.command == "flow":
            b = flow.DfgBuilder(args.level)
            async for t in export.stream_traces(conn, args.start, args.end, users):
                b.add(t)
            try:
                return flow.render(b.result(), args.format)
            except flow.GraphvizMissing as exc:
                raise MiningError(f"{exc}; or use --format dot/table/json") from None
        miner = tasks.TaskMiner(settings.gap, args.level)
        async for t in export.stream_traces(conn, args.start, args.end, users):
            miner.add(t)
        try:
            rows = miner.result(args.min_count, args.min_len, args.max_len, args.top, args.sort)
        except ValueError as exc:
            raise MiningError(str(exc)) from None
        return tasks_render(rows, args.format)
    except asyncpg.PostgresError as exc:
        raise MiningError(database_problem(exc, "event")) from None
    finally:
        await conn.close()


async def _export(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Any, users: list[str] | None
) -> None:
    show = args.progress if args.progress is not None else True
    tty = sys.stderr.isatty()
    total = await export.count_events(conn, args.start, args.end, users) if show and tty else None
    progress = Progress(sys.stderr, total, tty) if show else None
    to_stdout = args.out == "-"
    target = Path(args.out)
    tmp = target.with_name(f".{target.name}.part") if not to_stdout else target
    try:
        with (
            # The writes block anyway (the export is one sequential stream): no async file API needed.
            open(sys.stdout.fileno(), "w", encoding="utf-8", closefd=False, buffering=1 << 20)  # noqa: ASYNC230
            if to_stdout
            else open(tmp, "w", encoding="utf-8", buffering=1 << 20)  # noqa: ASYNC230
        ) as out:
            stats = await export.export_log(
                conn,
                args.format,
                out,
                args.start,
                args.end,
                users,
                show_urls=settings.reports_show_urls,
                on_rows=progress,
            )
    except OSError as exc:
        raise MiningError(f"cannot write {args.out}: {exc.strerror}") from None
    except BaseException:
        if not to_stdout:
            tmp.unlink(missing_ok=True)
        raise
    if not to_stdout:
        os.replace(tmp, target)
    log.info(
        "event log exported",
        extra={"kv": {"format": args.format, "traces": stats.traces, "events": stats.events}},
    )
    if progress is not None:
        progress.done(stats)


def run(args: argparse.Namespace) -> int:
    """Run one mining subcommand; exit status 2 on a configuration or database error, 1 when ``--user``
    names no user or several."""
    from reports.cli import UnknownUser

    try:
        settings = load_report_settings(_settings_cls(), args)
    except SettingsError as exc:
        print(f"desktrace-report: {exc}", file=sys.stderr)
        return 2
    try:
        if args.end < args.start:
            raise MiningError("--to is before --from")
        team: list[str] | None = None
        if args.team:
            team = team_members(args.team, settings.teams_file)
            if not team:
                raise MiningError(f"team {args.team!r} has no members")
        text = asyncio.run(_run(args, settings, team))
    except MiningError as exc:
        print(f"desktrace-report: {exc}", file=sys.stderr)
        return 2
    except UnknownUser as exc:
        print(f"desktrace-report: {exc}", file=sys.stderr)
        return 1
    if text is not None:
        print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for tests: the same as ``desktrace-report`` restricted to the mining subcommands."""
    from reports.cli import build_parser

    return run(build_parser().parse_args(argv))
