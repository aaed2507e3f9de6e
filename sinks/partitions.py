"""Daily range partitions of ``raw_events``: created ahead, on demand, and dropped after retention.

Partitions are named ``raw_events_pYYYYMMDD`` and cover one UTC day ``[day, day + 1)``. Creation goes
through the SQL function ``raw_events_ensure_partition(day)`` of migration 0001 (advisory-locked, so
concurrent sinks are safe). There is no DEFAULT partition (see sinks/README.md): a row whose partition is
missing fails loudly instead of landing somewhere retention and on-demand creation cannot handle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import date, timedelta

import asyncpg

log = logging.getLogger(__name__)

PARTITION_PREFIX = "raw_events_p"
#: Longest wait for the parent table's lock when creating or dropping a partition.
DDL_LOCK_TIMEOUT_MS = 5000
_PART_NAME = re.compile(r"^raw_events_p(\d{8})$")


def partition_name(day: date) -> str:
    """The name of the partition holding ``day`` (UTC)."""
    return f"{PARTITION_PREFIX}{day.year:04d}{day.month:02d}{day.day:02d}"


def partition_day(name: str) -> date | None:
    """The day of a partition name made by :func:`partition_name`, else None."""
    m = _PART_NAME.match(name)
    if not m:
        return None
    text = m.group(1)
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def window(today: date, behind: int, ahead: int) -> list[date]:
    """The days ``today - behind .. today + ahead`` (inclusive)."""
    return [today + timedelta(days=d) for d in range(-behind, ahead + 1)]


def expired(days: Iterable[date], today: date, retention_days: int) -> list[date]:
    """The days whose partitions retention drops: older than ``today - retention_days`` (0 keeps all)."""
    if retention_days <= 0:
        return []
    cutoff = today - timedelta(days=retention_days)
    return sorted(d for d in days if d < cutoff)


class PartitionCache:
    """Creates missing partitions before a batch is written, remembering the days known to exist so a
    steady stream costs no extra round trip. :meth:`forget` clears it (after a drop, or when an insert
    still found a partition missing)."""

    def __init__(self) -> None:
        self._known: set[date] = set()

    def forget(self) -> None:
        self._known.clear()

    async def ensure(self, conn: asyncpg.Connection, days: Iterable[date]) -> list[date]:
        """Make sure each day's partition exists (outside any transaction); returns the days created now."""
        created: list[date] = []
        for day in sorted(set(days) - self._known):
            async with conn.transaction():
                # CREATE TABLE ... PARTITION OF locks the parent: give up quickly (and retry) rather than
                # queue every reader of raw_events behind a long report query.
                await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT_MS}ms'")
                made = await conn.fetchval("SELECT raw_events_ensure_partition($1)", day)
            if made:
                created.append(day)
                log.info("partition created", extra={"kv": {"partition": partition_name(day)}})
            self._known.add(day)
        return created


async def list_partitions(conn: asyncpg.Connection) -> dict[str, date | None]:
    """Every partition of ``raw_events`` with its day (None for a partition not made by this module)."""
    rows = await conn.fetch(
        """
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'raw_events'::regclass
        ORDER BY c.relname
        """
    )
    return {r["relname"]: partition_day(r["relname"]) for r in rows}


async def create_window(conn: asyncpg.Connection, today: date, behind: int, ahead: int) -> list[date]:
    """Create the partitions of ``today - behind .. today + ahead``; returns the days created now."""
    return await PartitionCache().ensure(conn, window(today, behind, ahead))


async def drop_expired(conn: asyncpg.Connection, today: date, retention_days: int) -> list[str]:
    """Drop the partitions older than the retention; returns their names. Each drop is its own
    statement, so a failure leaves the others done."""
    parts = await list_partitions(conn)
    days = {d: name for name, d in parts.items() if d is not None}
    dropped: list[str] = []
    for day in expired(days, today, retention_days):
        name = days[day]
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT_MS}ms'")
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        dropped.append(name)
        log.info("partition dropped (retention)", extra={"kv": {"partition": name}})
    return dropped
