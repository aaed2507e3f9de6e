"""Settings of ``desktrace-local`` and ``desktrace-demo``, named the :mod:`common.settings` way (flag
``--users`` = ``DESKTRACE_USERS`` = TOML ``users`` in a ``[demo]`` table; ``[local]`` for
``desktrace-local``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import msgspec

from agent.simulator import DEMO_ZONES, check_zones
from common.settings import HELP, CommonSettings, PositiveFloat, SettingsError, add_arguments, load
from devstack.demo_view import Mode
from devstack.secure import DEFAULT_SECURE_PORT
from devstack.stack import DEFAULT_KAFKA_PORT, DEFAULT_PG_PORT

DEMO_DB = "desktrace_demo"


class LocalSettings(CommonSettings, kw_only=True):
    """Settings of ``desktrace-local``. An empty ``kafka_bootstrap`` / ``pg_dsn`` means "run our own"."""

    kafka_bootstrap: str = ""
    local_dir: str = ""
    local_kafka_port: int = DEFAULT_KAFKA_PORT
    local_kafka_controller_port: int = 0
    local_pg_port: int = DEFAULT_PG_PORT
    partitions: int = 6
    secure: bool = False
    local_secure_kafka_port: int = DEFAULT_SECURE_PORT


LOCAL_HELP = {
    **HELP,
    "kafka_bootstrap": "use this Kafka instead of starting one (empty: run the local one)",
    "pg_dsn": "use this PostgreSQL instead of starting one (empty: run the local one)",
    "local_dir": "state directory of the local services (default ~/.local/state/desktrace/local)",
    "local_kafka_port": "port of the local Kafka broker (127.0.0.1)",
    "local_kafka_controller_port": "port of the local Kafka controller (127.0.0.1; 0: Kafka's port + 1)",
    "local_pg_port": "port of the local PostgreSQL (127.0.0.1)",
    "partitions": "partitions of each topic `up` creates",
    "secure": "the TLS + SASL/SCRAM Kafka with per-service users and ACLs (docs/security.md) instead of "
    "the plaintext one; `down --secure` stops only it (PostgreSQL is shared)",
    "local_secure_kafka_port": "port of the secure local Kafka (127.0.0.1; its controller: this + 1)",
}


class DemoSettings(msgspec.Struct, kw_only=True):
    """``desktrace-demo``'s settings: flag ``--close-timeout`` = ``DESKTRACE_CLOSE_TIMEOUT`` = TOML key
    ``close_timeout`` (top level or in ``[demo]``), as everywhere (``common.settings``)."""

    users: int = 12  # checked in options(): its message is part of the demo's tests
    zones: str = ",".join(DEMO_ZONES)
    date: str = ""
    now: str = ""
    speed: PositiveFloat = 3000.0
    seed: int = 1
    close_timeout: PositiveFloat = 5.0
    database: str = DEMO_DB
    progress: Literal["auto", "bar", "plain"] = "auto"
    prometheus: bool = True
    exit: bool = False
    web_password: str = ""


DEMO_HELP = {
    "users": "simulated users",
    "zones": "IANA time zones the users live in, in turn (comma-separated)",
    "date": "the local date YYYY-MM-DD every user lives through as a working day "
    "(empty: the most recent Monday-Friday that is over in every zone)",
    "now": "pretend the current time is this ISO date-time (UTC unless an offset is given) when choosing "
    "the day, to reproduce a run of another hour (empty: the real clock)",
    "speed": "simulated seconds per real second (3000: the 20 hours from the first zone's morning to the "
    "last zone's evening in about 25 s); hours when no simulated agent runs are skipped",
    "seed": "simulation seed: same seed, same day",
    "close_timeout": "seconds of silence before the stream closes a user's sessions",
    "database": "the database (re)created for this run's data",
    "progress": "auto (bars on a terminal, plain lines otherwise), bar or plain",
    "prometheus": "start the local Prometheus server",
    "exit": "stop everything after printing the report",
    "web_password": "web password for user 'admin' (empty: a random one)",
}


@dataclass(frozen=True)
class DemoOptions:
    """The demo's settings, checked and parsed."""

    users: int
    zones: tuple[str, ...]
    date: date | None
    now: datetime | None
    speed: float
    seed: int
    close_timeout: float
    database: str
    progress: Mode
    prometheus: bool
    exit: bool
    web_password: str


def parse_now(text: str) -> datetime:
    """An ISO date-time, UTC unless it has an offset."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise SettingsError(f"--now: not an ISO date-time: {text!r} (e.g. 2026-11-28T05:20Z)") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SettingsError(f"--date: not a date: {text!r} (use YYYY-MM-DD)") from None


def options(settings: DemoSettings) -> DemoOptions:
    """Check and parse ``settings``; a SettingsError names the setting."""
    if settings.users < 1:
        raise SettingsError("--users must be at least 1")
    if not settings.database or '"' in settings.database:
        raise SettingsError(f"--database: not a usable database name: {settings.database!r}")
    try:
        zones = check_zones(settings.zones.split(","))
    except ValueError as exc:
        raise SettingsError(f"--zones: {exc}") from None
    progress: Mode = settings.progress
    return DemoOptions(
        users=settings.users,
        zones=zones,
        date=parse_day(settings.date) if settings.date else None,
        now=parse_now(settings.now) if settings.now else None,
        speed=settings.speed,
        seed=settings.seed,
        close_timeout=settings.close_timeout,
        database=settings.database,
        progress=progress,
        prometheus=settings.prometheus,
        exit=settings.exit,
        web_password=settings.web_password,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="desktrace-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--password", dest="web_password", default=None, help="the same as --web-password")
    add_arguments(p, DemoSettings, DEMO_HELP)
    return p


def load_options(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> DemoOptions:
    """Flags (``argv``) over ``DESKTRACE_*`` variables over the TOML file over the defaults."""
    args = build_parser().parse_args(argv)
    return options(load(DemoSettings, args, section="demo", env=env))


