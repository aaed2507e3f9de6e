"""The gateway's settings, named the ``common.settings`` way: flag ``--legacy-tz`` = ``DESKTRACE_LEGACY_TZ``
= TOML key ``legacy_tz`` (optionally inside a ``[gateway]`` table)."""

from __future__ import annotations

import ipaddress
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Meta

from common import health
from common.horizon import DEFAULT_RAW_RETENTION_DAYS, DEFAULT_RETENTION_S
from common.kafka import prefixed_port
from common.settings import (
    HELP,
    CommonSettings,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SettingsError,
    spellings,
)

SECTION = "gateway"


class GatewaySettings(CommonSettings, kw_only=True):
    """Everything ``desktrace-gateway`` reads, checked by msgspec constraints when loaded. Secrets
    (``*_token*``, ``*password*``, ``web_users``, ``session_secret``) are never logged."""

    http_addr: str = ""
    legacy_domain: str = "legacy"
    legacy_tz: str = "UTC"
    legacy_token: str = ""
    legacy_token_file: str = ""
    legacy_networks: str = ""
    legacy_send_timeout_s: PositiveFloat = 10.0
    legacy_dedup_window_s: PositiveFloat = 30.0
    legacy_max_body_bytes: Annotated[int, Meta(ge=64, le=16 * 1024 * 1024)] = 65536
    legacy_tokens_file: str = ""
    retention: PositiveFloat = DEFAULT_RETENTION_S
    raw_retention_days: NonNegativeInt = DEFAULT_RAW_RETENTION_DAYS
    web_users: str = ""
    web_users_file: str = ""
    web_password: str = ""
    web_password_file: str = ""
    web_session_secret: str = ""
    web_session_secret_file: str = ""
    web_session_hours: PositiveFloat = 12.0
    web_cookie_secure: bool = False
    api_tokens: str = ""
    api_tokens_file: str = ""
    reports_show_urls: bool = False
    pg_pool_max: PositiveInt = 4
    teams_file: str = ""
    login_free_failures: NonNegativeInt = 5
    login_max_delay_s: PositiveFloat = 900.0
    metrics_addr: str = ""
    gap: PositiveFloat = 300.0
    metrics_token: str = ""
    metrics_token_file: str = ""


GATEWAY_HELP: dict[str, str] = {
    **HELP,
    "http_addr": "host:port the HTTP server listens on ('' = 127.0.0.1:8080, or with a topic prefix a port "
    "derived from it, so two pipelines on one host differ by the prefix alone)",
    "legacy_domain": "domain of legacy POST /api/report users given without DOMAIN\\",
    "legacy_tz": "IANA time zone of legacy reports: a ts without offset is read in it, and events carry it",
    "legacy_token": "when set, POST /api/report needs 'Authorization: Bearer <token>' or X-Desktrace-Token",
    "legacy_token_file": "file holding legacy_token",
    "legacy_networks": "comma-separated CIDRs allowed to POST /api/report (empty: any address)",
    "legacy_send_timeout_s": "how long a legacy report waits for Kafka before answering 503",
    "legacy_dedup_window_s": "a report without ts repeating the same user and state within this is a retry",
    "legacy_max_body_bytes": "largest POST /api/report body; a larger one gets 413 before it is read",
    "legacy_tokens_file": "file of per-client legacy tokens: one 'TOKEN  USER_KEY|DOMAIN\\*|*[, ...]' per "
    "line; a token may only report for the users it lists (also accepted as ?token= on the URL)",
    "retention": "the stream's horizon in seconds (same setting as desktrace-stream): reports the stream "
    "would drop as late get 422 ts_too_old",
    "raw_retention_days": "the raw sink's retention in days (same setting as desktrace-sink): older reports "
    "get 422 ts_too_old",
    "web_users": "web login users: 'name:hash,...' (hash from `desktrace-gateway --hash-password`)",
    "web_users_file": "file holding web_users",
    "web_password": "password (or hash) of the single web user 'admin', when web_users is empty",
    "web_password_file": "file holding web_password",
    "web_session_secret": "key signing session cookies (empty: random per process, logins end on restart)",
    "web_session_secret_file": "file holding web_session_secret",
    "web_session_hours": "how long a web login lasts",
    "web_cookie_secure": "mark the session cookie Secure (serve over HTTPS)",
    "api_tokens": "comma-separated Bearer tokens for /api/v1/reports/*",
    "api_tokens_file": "file holding api_tokens",
    "reports_show_urls": "show full URLs on the apps page and API (else domains only)",
    "pg_pool_max": "largest PostgreSQL connection pool",
    "teams_file": "TOML or JSON file of teams (user keys) and roles of web users and named API tokens"
    " (admin, lead, viewer); empty: every login is an admin",
    "login_free_failures": "failed logins per user name and per client address before each further attempt"
    " must wait (1 s, doubling)",
    "login_max_delay_s": "longest wait a run of failed logins imposes",
    "metrics_addr": "host:port of a separate listener for /metrics (then the main listener has no /metrics)",
    "gap": "G, the idle gap in seconds that splits tasks on the Processes page (the same setting as "
    "desktrace-stream's)",
    "metrics_token": "Bearer token /metrics on the main listener requires (without it and without"
    " metrics_addr, /metrics answers loopback clients only)",
    "metrics_token_file": "file holding metrics_token",
}


BASE_HTTP_PORT = 8080


def http_address(settings: GatewaySettings) -> str:
    """``http_addr``, or ``127.0.0.1:8080`` without a topic prefix and a port derived from it with one
    (:func:`common.kafka.prefixed_port`, as the stream's and the sinks' metrics ports)."""
    return settings.http_addr or f"127.0.0.1:{prefixed_port(BASE_HTTP_PORT, settings.topic_prefix)}"


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a tuple; raises :class:`SettingsError`."""
    try:
        return health.parse_addr(addr)
    except ValueError as exc:
        raise SettingsError(f"http_addr: {exc} ({spellings('http_addr')})") from None


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The CIDR list of ``legacy_networks``; raises :class:`SettingsError` naming the bad entry."""
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(
                f"legacy_networks: {part!r} is not a CIDR network ({spellings('legacy_networks')})"
            ) from None
    return tuple(out)


def check_zone(name: str) -> ZoneInfo:
    """The zone ``legacy_tz`` names; raises :class:`SettingsError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"legacy_tz: unknown IANA time zone {name!r} ({spellings('legacy_tz')})"
        ) from None


def split_list(text: str) -> list[str]:
    """A comma-separated setting as a list of non-empty, stripped items."""
    return [p.strip() for p in text.split(",") if p.strip()]
