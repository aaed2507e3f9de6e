"""Settings of ``desktrace-report`` and its mining subcommands (flag ``--teams-file`` =
``DESKTRACE_TEAMS_FILE`` = TOML ``teams_file``, also in a ``[report]`` table), the :mod:`common.settings` way.

The reports read PostgreSQL only: no Kafka settings."""

from __future__ import annotations

from common.settings import LogSettings, PositiveFloat


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


