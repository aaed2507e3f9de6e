"""``desktrace-report``: working-time reports on the command line.

    desktrace-report day   [--date D] [--end D] [--user U] [--format table|csv|json]
    desktrace-report week  [--date D] [--user U] [--format ...]      ISO week (Monday first) containing D
    desktrace-report month [--date D] [--user U] [--format ...]      calendar month containing D
    desktrace-report user  --user U [--date D] [--format ...]        one user's day: timeline and totals
    desktrace-report apps  [--date D] [--end D] [--user U] [--show-urls] [--per-user] [--format ...]
    desktrace-report users                                           every user key with sessions
    desktrace-report export|flow|tasks --from D --to D ...           task mining (reports/mining_cli.py)

``--team NAME`` (with ``--teams-file``) keeps only the members of a team of the team file.

Dates are the users' own local dates. ``--date`` defaults to today in the time zone of the machine running
the command (``TZ``); it also accepts ``today`` and ``yesterday``. The database is ``--pg-dsn`` /
``DESKTRACE_PG_DSN`` / ``pg_dsn`` in the TOML file. Exit status 2 on a configuration or database error, 1
when ``--user`` names no user or several (a bare login such as ``alice`` is fine when one key has it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from common.settings import HELP, SettingsError, add_arguments, spellings
from reports import render
from reports.service import ReportService
from reports.settings import ReportSettings, database_problem, load_report_settings
from reports.teams import TeamFileError, load_team_file

log = logging.getLogger("reports.cli")


class ReportError(Exception):
    """A problem the user can fix; the message says how."""


class UnknownUser(ReportError):
    """``--user`` names no user, or several (exit status 1, not a configuration error)."""


async def resolve_user_arg(svc: ReportService, name: str | None) -> str | None:
    """The user key ``--user`` means: a key, or a bare login exactly one key has; raises :class:`UnknownUser`
    (never an empty report that looks like a day off)."""
    if not name:
        return name
    lookup = await svc.resolve_user(name)
    if lookup.key is None:
        raise UnknownUser(lookup.message())
    return lookup.key


def parse_date(text: str) -> date:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (in the local zone of this machine)."""
    today = datetime.now().astimezone().date()
    if text == "today":
        return today
    if text == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD, today or yesterday): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_arguments(
        common,
        ReportSettings,
        {**HELP, "teams_file": "TOML or JSON team file (teams = {name = [user keys]}) that --team reads"},
    )
    common.add_argument(
        "--date",
        type=parse_date,
        default=None,
        help="local date YYYY-MM-DD, 'today' or 'yesterday' (default: today in this machine's time zone)",
    )
    common.add_argument(
        "--user",
        default=None,
        metavar="KEY",
        help="one user key, e.g. 'corp\\alice', or a bare login that only one user key has ('alice'); "
        "an unknown or ambiguous name exits with status 1 and lists the candidates",
    )
    common.add_argument(
        "--team", default=None, metavar="NAME", help="only the members of this team of the teams_file"
    )
    common.add_argument("--format", choices=render.FORMATS, default="table", help="output format")
    parser = argparse.ArgumentParser(
        prog="desktrace-report",
        description="Working-time reports (active, idle, locked, presence per user and local day) "
        "from the desktrace PostgreSQL tables.",
        epilog="Dates are the users' own local dates; durations in the table format are hours:minutes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    day = sub.add_parser("day", parents=[common], help="one row per user and day")
    day.add_argument("--end", type=parse_date, default=None, help="last date of a range (inclusive)")
    sub.add_parser("week", parents=[common], help="ISO week (Monday first) containing --date")
    sub.add_parser("month", parents=[common], help="calendar month containing --date")
    sub.add_parser("user", parents=[common], help="one user's day: timeline and totals (needs --user)")
    apps = sub.add_parser("apps", parents=[common], help="focus time per application and URL domain")
    apps.add_argument("--end", type=parse_date, default=None, help="last date of a range (inclusive)")
    apps.add_argument("--show-urls", action="store_true", help="also show full URLs (default: domains only)")
    apps.add_argument("--per-user", action="store_true", help="one row per user (default: everyone added up)")
    sub.add_parser("users", parents=[common], help="list the user keys that have sessions")
    mining_subcommands().add_parsers(sub)
    return parser


def mining_subcommands() -> Any:
    """The task-mining subcommands (export, flow, tasks), imported on use."""
    from reports import mining_cli

    return mining_cli


def team_members(team: str | None, teams_file: str) -> list[str] | None:
    """The user keys of ``team`` in the team file (None without ``--team``); raises :class:`ReportError`."""
    if not team:
        return None
    if not teams_file:
        raise ReportError(f"--team needs a team file: set {spellings('teams_file')}")
    try:
        members = load_team_file(teams_file).teams.get(team)
    except TeamFileError as exc:
        raise ReportError(str(exc)) from None
    if members is None:
        raise ReportError(f"no team {team!r} in {teams_file}")
    return sorted(members)


async def _report(args: argparse.Namespace, dsn: str, teams_file: str = "") -> str:
    d: date = args.date or datetime.now().astimezone().date()
    members = team_members(getattr(args, "team", None), teams_file)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, timeout=15, command_timeout=120)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise ReportError(f"cannot connect to PostgreSQL ({type(exc).__name__}: {exc})") from None
    try:
        svc = ReportService(pool)
        fmt = args.format
        if args.command != "users":
            args.user = await resolve_user_arg(svc, args.user)
        if args.command == "day":
            end = args.end or d
            if end < d:
                raise ReportError("--end is before --date")
            return render.days(await svc.days(d, end, args.user, members), fmt)
        if args.command == "week":
            return render.periods(await svc.week(d, args.user, members), fmt)
        if args.command == "month":
            return render.periods(await svc.month(d, args.user, members), fmt)
        if args.command == "user":
            if not args.user:
                raise ReportError("'user' needs --user KEY (see: desktrace-report users)")
            totals, items = await svc.user_day(args.user, d)
            return render.user_day(args.user, d.isoformat(), totals, items, fmt)
        if args.command == "apps":
            end = args.end or d
            if end < d:
                raise ReportError("--end is before --date")
            rows = await svc.apps(
                d, end, args.user, show_urls=args.show_urls, per_user=args.per_user, users=members
            )
            return render.apps(rows, fmt)
        users = await svc.users()
        if fmt == "json":
            return render.to_json(users)
        if fmt == "csv":
            return render.to_csv(("user_key",), [(u,) for u in users])
        return "\n".join(users) if users else "no users"
    except asyncpg.PostgresError as exc:
        raise ReportError(database_problem(exc, "report")) from None
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in mining_subcommands().COMMANDS:
        return int(mining_subcommands().run(args))
    try:
        settings = load_report_settings(ReportSettings, args)
    except SettingsError as exc:
        print(f"desktrace-report: {exc}", file=sys.stderr)
        return 2
    try:
        text = asyncio.run(_report(args, settings.pg_dsn, settings.teams_file))
    except ReportError as exc:
        print(f"desktrace-report: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, UnknownUser) else 2
    print(text)
    log.info("report printed", extra={"kv": {"command": args.command, "format": args.format}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
