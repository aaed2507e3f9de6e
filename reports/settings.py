"""Settings of ``desktrace-report`` and its mining subcommands (flag ``--teams-file`` =
``DESKTRACE_TEAMS_FILE`` = TOML ``teams_file``, also in a ``[report]`` table), the :mod:`common.settings` way.

The reports read PostgreSQL only: no Kafka settings."""

from __future__ import annotations

import argparse
from typing import TypeVar

from common.logs import setup_logging
from common.settings import LogSettings, PositiveFloat, SettingsError, load, spellings


class ReportSettings(LogSettings, kw_only=True):
    """Settings of ``desktrace-report`` (flags = ``DESKTRACE_*`` = TOML keys, ``[report]`` table)."""

    pg_dsn: str = ""
    pg_dsn_file: str = ""
    teams_file: str = ""
    log_level: str = "WARNING"


class MiningSettings(ReportSettings, kw_only=True):
    """``desktrace-report`` settings plus those of the mining subcommands (``gap``: the same G as the
    stream's, seconds)."""

    reports_show_urls: bool = False
    gap: PositiveFloat = 300.0




S = TypeVar("S", bound=ReportSettings)


def load_report_settings(cls: type[S], args: argparse.Namespace) -> S:
    """``cls`` from flags, ``DESKTRACE_*`` and the TOML file (``[report]``), with logging set up; raises
    :class:`SettingsError` saying what to set when a setting is wrong or no PostgreSQL DSN is given."""
    settings = load(cls, args, section="report")
    setup_logging("report", settings.log_level, settings.log_format)
    if not settings.pg_dsn:
        raise SettingsError(
            f"no PostgreSQL DSN: set {spellings('pg_dsn')} (e.g. postgresql://user:pass@host:5432/desktrace)"
        )
    return settings


def database_problem(exc: Exception, tables: str) -> str:
    """What to tell a person about a PostgreSQL error of a report command: missing ``tables`` (run the
    migrations) or the failed query's error class and message."""
    import asyncpg

    if isinstance(exc, asyncpg.UndefinedTableError):
        return (
            f"the {tables} tables do not exist in this database ({exc}): run `desktrace-sink migrate` first"
        )
    return f"query failed ({type(exc).__name__}: {exc})"
