"""Reads for the reports (asyncpg). Only SELECTs on ``sessions`` and ``raw_events``; no arithmetic here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from reports.apps import UI_EVENT_TYPES
from reports.compute import utc_window
from reports.model import LogonAt, SessionSpan, UiFocusEvent

SESSIONS_SQL = """
SELECT user_key, kind, reason, started_at, ended_at, tz
FROM sessions
WHERE started_at <= $2 AND ended_at >= $1 AND ($3::text IS NULL OR user_key = $3)
  AND ($4::text[] IS NULL OR user_key = ANY($4::text[]))
ORDER BY user_key, started_at
"""

#: Logon events, and legacy reports: the seed's client starts at logon, so a user's first report of a day is
#: their first logon of that day (docs/reports.md).
LOGONS_SQL = """
SELECT user_key, ts, tz
FROM raw_events
WHERE type IN ('Logon', 'StateChange') AND ts >= $1 AND ts < $2 AND ($3::text IS NULL OR user_key = $3)
  AND ($4::text[] IS NULL OR user_key = ANY($4::text[]))
ORDER BY ts
"""

UI_EVENTS_SQL = """
SELECT user_key, ts, coalesce(app, '') AS app, coalesce(url_domain, '') AS domain,
       {url} AS url
FROM raw_events
WHERE type = ANY($3::text[]) AND ts >= $1 AND ts <= $2 AND ($4::text IS NULL OR user_key = $4)
  AND ($5::text[] IS NULL OR user_key = ANY($5::text[]))
ORDER BY user_key, ts, agent_id, seq
"""

USERS_SQL = "SELECT DISTINCT user_key FROM sessions ORDER BY user_key"

USER_EXISTS_SQL = "SELECT EXISTS (SELECT 1 FROM sessions WHERE user_key = $1)"

#: The user keys a typed name may mean: the key itself, or every key whose login part is the name.
CANDIDATES_SQL = """
SELECT DISTINCT user_key FROM sessions
WHERE user_key = $1 OR (strpos($1, E'\\\\') = 0 AND right(user_key, $3) = $2)
ORDER BY user_key
"""



async def fetch_sessions(
    pool: Any, lo: datetime, hi: datetime, user: str | None = None, users: Sequence[str] | None = None
) -> list[SessionSpan]:
    """Sessions overlapping the UTC range ``[lo, hi]`` (of one user, of the ``users`` listed, or everyone)."""
    rows = await pool.fetch(SESSIONS_SQL, lo, hi, user, _list(users))
    return [
        SessionSpan(
            user_key=r["user_key"],
            kind=r["kind"],
            reason=r["reason"],
            start=r["started_at"],
            end=r["ended_at"],
            tz=r["tz"] or "UTC",
        )
        for r in rows
    ]


async def fetch_logons(
    pool: Any, lo: datetime, hi: datetime, user: str | None = None, users: Sequence[str] | None = None
) -> list[LogonAt]:
    """``Logon`` raw events and legacy ``StateChange`` reports in the UTC range ``[lo, hi)``."""
    rows = await pool.fetch(LOGONS_SQL, lo, hi, user, _list(users))
    return [LogonAt(user_key=r["user_key"], ts=r["ts"], tz=r["tz"] or "UTC") for r in rows]


async def fetch_ui_events(
    pool: Any,
    lo: datetime,
    hi: datetime,
    user: str | None = None,
    with_urls: bool = False,
    users: Sequence[str] | None = None,
) -> list[UiFocusEvent]:
    """UI raw events in ``[lo, hi]``, ordered by user, time, agent and seq. The full URL is read from the
    database only when ``with_urls`` is set."""
    sql = UI_EVENTS_SQL.format(url="details->>'url'" if with_urls else "NULL::text")
    rows = await pool.fetch(sql, lo, hi, list(UI_EVENT_TYPES), user, _list(users))
    return [
        UiFocusEvent(user_key=r["user_key"], ts=r["ts"], app=r["app"], domain=r["domain"], url=r["url"])
        for r in rows
    ]


async def fetch_users(pool: Any) -> list[str]:
    """Every user key that has a session."""
    return [r["user_key"] for r in await pool.fetch(USERS_SQL)]


async def user_exists(pool: Any, user: str) -> bool:
    """Whether ``user`` has any session at all."""
    return bool(await pool.fetchval(USER_EXISTS_SQL, user))


async def fetch_user_candidates(pool: Any, name: str) -> list[str]:
    """The user keys with sessions that ``name`` (a user key or a bare login, lower-cased) may mean."""
    suffix = "\\" + name
    return [r["user_key"] for r in await pool.fetch(CANDIDATES_SQL, name, suffix, len(suffix))]


async def sessions_for_dates(
    pool: asyncpg.Pool, start: date, end: date, user: str | None = None, users: Sequence[str] | None = None
) -> tuple[list[SessionSpan], list[LogonAt]]:
    """Sessions and Logon events that may touch local dates ``start``..``end`` in any time zone."""
    lo, hi = utc_window(start, end)
    return await fetch_sessions(pool, lo, hi, user, users), await fetch_logons(pool, lo, hi, user, users)


def _list(users: Sequence[str] | None) -> list[str] | None:
    return None if users is None else list(users)
