"""What the request handlers share: settings, metrics, credentials, the Kafka publisher, the reports."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, date, datetime, timedelta

import asyncpg
from litestar.connection import ASGIConnection

from common import health
from common.settings import SettingsError, spellings
from gateway.access import Access, parse_tokens
from gateway.auth import SessionSigner, parse_users
from gateway.legacy import RetryMemory
from gateway.legacy_tokens import TokenScopes, load_token_file
from gateway.login_guard import LoginThrottle, RevokedSessions
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings, check_zone, parse_networks, split_list
from reports.service import ReportService
from reports.teams import TeamFile, TeamFileError, load_team_file

log = logging.getLogger(__name__)


class ReportsUnavailable(RuntimeError):
    """PostgreSQL cannot be reached (or is not configured); pages and the API answer 503."""


class Gateway:
    """The gateway's shared state. Settings are validated here, so a bad one fails at start-up with a
    message naming it (never its value when it is a secret)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.zone = check_zone(settings.legacy_tz)
        self.networks = parse_networks(settings.legacy_networks)
        self.users = parse_users(settings.web_users, settings.web_password)
        self.api_tokens = parse_tokens(split_list(settings.api_tokens))
        self.access = Access(self._team_file(settings.teams_file))
        if settings.login_free_failures < 1 or settings.login_max_delay_s <= 0:
            raise SettingsError(
                "login_free_failures must be at least 1 and login_max_delay_s positive "
                f"({spellings('login_free_failures')})"
            )
        self.throttle = LoginThrottle(free=settings.login_free_failures, max_s=settings.login_max_delay_s)
        self.revoked = RevokedSessions()
        if settings.metrics_addr:
            try:
                health.parse_addr(settings.metrics_addr)
            except ValueError as exc:
                raise SettingsError(f"metrics_addr: {exc} ({spellings('metrics_addr')})") from None
        key = settings.web_session_secret.encode() or secrets.token_bytes(32)
        self.signer = SessionSigner(key)
        self.retry = RetryMemory(timedelta(seconds=settings.legacy_dedup_window_s))
        self.legacy_tokens = (
            load_token_file(settings.legacy_tokens_file) if settings.legacy_tokens_file else TokenScopes({})
        )
        self.publisher = Publisher(settings, self.metrics, timeout_s=settings.legacy_send_timeout_s)
        self._reports: ReportService | None = None
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    @staticmethod
    def _team_file(path: str) -> TeamFile | None:
        if not path:
            return None
        try:
            return load_team_file(path)
        except TeamFileError as exc:
            raise SettingsError(f"teams_file: {exc} ({spellings('teams_file')})") from None

    # ---- clock (the only one) ----
    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)

    @staticmethod
    def epoch_s() -> float:
        return time.time()

    def today(self) -> date:
        """Today in the gateway's zone (``legacy_tz``), the default date of every page."""
        return self.now().astimezone(self.zone).date()

    # ---- reports ----
    async def reports(self) -> ReportService:
        """The report service; connects to PostgreSQL on first use. Raises :class:`ReportsUnavailable`."""
        if self._reports is not None:
            return self._reports
        if not self.settings.pg_dsn:
            raise ReportsUnavailable("no PostgreSQL configured (pg_dsn / DESKTRACE_PG_DSN)")
        async with self._pool_lock:
            if self._reports is None:
                try:
                    self._pool = await asyncio.wait_for(
                        asyncpg.create_pool(
                            self.settings.pg_dsn, min_size=0, max_size=self.settings.pg_pool_max
                        ),
                        10,
                    )
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    log.warning("postgresql not reachable", extra={"kv": {"error_class": type(exc).__name__}})
                    raise ReportsUnavailable(f"PostgreSQL not reachable: {type(exc).__name__}") from None
                self._reports = ReportService(self._pool)
        assert self._reports is not None
        return self._reports

    async def postgres_ready(self) -> bool:
        try:
            await self.reports()
        except ReportsUnavailable:
            return False
        if self._pool is None:
            return True
        try:
            async with self._pool.acquire(timeout=5) as conn:
                await conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        return True

    async def start(self) -> None:
        await self.publisher.start()

    async def close(self) -> None:
        await self.publisher.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def gw(connection: ASGIConnection) -> Gateway:
    """The :class:`Gateway` of the application serving ``connection``."""
    return connection.app.state.gateway
