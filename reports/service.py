"""The Python API the gateway and the CLI use: reports read from PostgreSQL, computed by ``compute``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date

import asyncpg

from reports import compute, queries
from reports.apps import focus_usage
from reports.model import AppUsage, DayRow, PeriodRow, TimelineItem
from reports.names import UserLookup, normalise, resolve

log = logging.getLogger(__name__)


class ReportService:
    """Working-time reports over the ``sessions`` and ``raw_events`` tables.

    Guarantees: dates are the users' own local dates (each session split at local midnight in its ``tz``);
    in every row ``active_s + idle_s + locked_s == presence_s``; a week (ISO, Monday first) or month total
    is exactly the sum of its day rows; ``apps`` counts focus time only inside active sessions and returns
    full URLs only when ``show_urls`` is set. Read-only; safe to share between concurrent requests.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def days(
        self, start: date, end: date, user: str | None = None, users: Sequence[str] | None = None
    ) -> list[DayRow]:
        """One row per user and local date in ``start``..``end`` (inclusive) that has data; only of the
        ``users`` listed when given (an empty list reads nothing)."""
        if end < start:
            raise ValueError("end date is before start date")
        if users is not None and not users:
            return []
        sessions, logons = await queries.sessions_for_dates(self._pool, start, end, user, users)
        rows = compute.day_rows(sessions, logons, start, end)
        log.debug("day rows", extra={"kv": {"sessions": len(sessions), "rows": len(rows)}})
        return rows

    async def day(self, d: date, user: str | None = None, users: Sequence[str] | None = None) -> list[DayRow]:
        """One row per user that has data on local date ``d``."""
        return await self.days(d, d, user, users)

    async def week(
        self, d: date, user: str | None = None, users: Sequence[str] | None = None
    ) -> list[PeriodRow]:
        """Per user, the ISO week (Monday..Sunday) containing ``d``."""
        label, start, end = compute.iso_week(d)
        return compute.period_rows(await self.days(start, end, user, users), label, start, end)

    async def month(
        self, d: date, user: str | None = None, users: Sequence[str] | None = None
    ) -> list[PeriodRow]:
        """Per user, the calendar month containing ``d``."""
        label, start, end = compute.month(d)
        return compute.period_rows(await self.days(start, end, user, users), label, start, end)

    async def timeline(self, user: str, d: date) -> list[TimelineItem]:
        """``user``'s sessions clipped to their local date ``d``, in time order."""
        lo, hi = compute.utc_window(d, d)
        sessions = await queries.fetch_sessions(self._pool, lo, hi, user)
        return compute.timeline(sessions, user, d)

    async def user_day(self, user: str, d: date) -> tuple[DayRow | None, list[TimelineItem]]:
        """``user``'s row of local date ``d`` (None without data) and timeline: what :meth:`day` and
        :meth:`timeline` return, from one read of the sessions."""
        sessions, logons = await queries.sessions_for_dates(self._pool, d, d, user)
        rows = compute.day_rows(sessions, logons, d, d)
        return (rows[0] if rows else None), compute.timeline(sessions, user, d)

    async def apps(
        self,
        start: date,
        end: date,
        user: str | None = None,
        show_urls: bool = False,
        per_user: bool = False,
        users: Sequence[str] | None = None,
    ) -> list[AppUsage]:
        """Focus time per application and URL domain over local dates ``start``..``end``.

        ``user=None`` adds up everyone (or the ``users`` listed; rows with ``user_key=None``) unless
        ``per_user`` is set; full URLs are read and returned only with ``show_urls=True``.
        """
        if end < start:
            raise ValueError("end date is before start date")
        if users is not None and not users:
            return []
        lo, hi = compute.utc_window(start, end)
        sessions = [
            s for s in await queries.fetch_sessions(self._pool, lo, hi, user, users) if s.kind == "active"
        ]
        if not sessions:
            return []
        ev_lo = min(s.start for s in sessions)
        ev_hi = max(s.end for s in sessions)
        events = await queries.fetch_ui_events(
            self._pool, ev_lo, ev_hi, user, with_urls=show_urls, users=users
        )
        return focus_usage(
            events, sessions, start, end, show_urls=show_urls, per_user=per_user or user is not None
        )

    async def resolve_user(self, name: str) -> UserLookup:
        """The user key ``name`` means (a key, or a bare login that exactly one key has), or the candidates
        (:mod:`reports.names`)."""
        wanted = normalise(name)
        return resolve(name, await queries.fetch_user_candidates(self._pool, wanted))

    async def users(self) -> list[str]:
        """Every user key that has a session, sorted."""
        return await queries.fetch_users(self._pool)

    async def user_exists(self, user: str) -> bool:
        """Whether ``user`` has ever had a session."""
        return await queries.user_exists(self._pool, user)
