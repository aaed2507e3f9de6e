"""The two table writers: how a Kafka record becomes an item, and how a list of items is written.

A writer's :meth:`write` runs inside a transaction the caller opened and is idempotent: writing the same
items again (a redelivery after a crash) leaves the table as writing them once.

- :class:`RawWriter`: COPY straight into ``raw_events`` inside a savepoint; when a row of the batch is
  already there (a redelivery), the savepoint is rolled back and the batch goes through a temporary
  staging table, ``INSERT INTO raw_events SELECT ... ON CONFLICT (agent_id, seq, ts) DO NOTHING``.
  Partitions of the batch's days are ensured first.
- :class:`SessionWriter`: reduces the batch to the last write per ``session_id`` (topic order), then one
  ``DELETE`` for the retracted ids and ``INSERT ... ON CONFLICT (session_id) DO UPDATE`` (via COPY into a
  staging table) for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

import asyncpg

from proto.codec import decode_event, decode_session_message
from proto.sessions import SessionMessage
from proto.topics import Topics
from sinks.errors import Reject
from sinks.partitions import PartitionCache
from sinks.rows import RAW_COLUMNS, SESSION_COLUMNS, RawRow, days_of, raw_row, reduce_sessions, session_row


class Writer(Protocol):
    """What the sink runner needs from a table writer."""

    name: str  # "raw" | "sessions"
    table: str
    service: str  # dead-letter service name
    #: True when batches must be written one after the other, in topic order; False when they may be
    #: written at once, in any order (every write idempotent and independent of the others).
    ordered: bool

    def topics(self, topics: Topics) -> list[str]: ...

    def decode(self, value: bytes | None) -> Any:
        """The item of one record value; raises :class:`Reject` or ``proto.EventDecodeError``."""
        ...

    def refresh(self, now: datetime) -> None:
        """Called once per batch with the wall clock (the writers themselves read no clock)."""
        ...

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Per-connection set-up (temporary tables)."""
        ...

    async def before_write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> None:
        """Outside the transaction, before :meth:`write` (DDL such as partitions)."""
        ...

    async def write(self, conn: asyncpg.Connection, items: Sequence[Any]) -> tuple[int, int]:
        """Write ``items`` inside the caller's transaction; returns ``(rows changed, duplicates skipped)``."""
        ...

    def on_partition_missing(self) -> None: ...


async def _create_stage(conn: asyncpg.Connection, stage: str, table: str, cols_sql: str) -> None:
    """An empty per-connection temporary staging table shaped like ``cols_sql`` of ``table``."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {cols_sql} FROM {table} WITH NO DATA"
    )
    await conn.execute(f"TRUNCATE {stage}")


async def _copy_and_apply(
    conn: asyncpg.Connection, stage: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str], sql: str
) -> int:
    """COPY ``records`` into ``stage``, run ``sql`` (which reads it), empty ``stage``; returns the row
    count of ``sql``'s status."""
    await conn.copy_records_to_table(stage, records=records, columns=columns)
    status = await conn.execute(sql)
    await conn.execute(f"TRUNCATE {stage}")
    return _rowcount(status)


def _rowcount(status: str) -> int:
    """The row count at the end of a command status such as ``INSERT 0 12`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


_RAW_COLS_SQL = ", ".join(f'"{c}"' for c in RAW_COLUMNS)
_RAW_STAGE = "desktrace_raw_stage"
_RAW_INSERT = (
    f"INSERT INTO raw_events ({_RAW_COLS_SQL}) SELECT {_RAW_COLS_SQL} FROM {_RAW_STAGE} "
    "ON CONFLICT (agent_id, seq, ts) DO NOTHING"
)


class RawWriter:
    """Writes raw events to ``raw_events``; duplicates of ``(agent_id, seq, ts)`` are skipped.

    A batch is first COPYed straight into the table: the staging path's ``INSERT ... ON CONFLICT`` takes
    about 40% more time per row (``bench/bench_sinks.py``), and PostgreSQL's CPU per row, its WAL
    included, was a third higher in the whole sink process (``bench/bench_sink_process.py``).

    When the unique key refuses a row, that attempt is rolled back to its savepoint and the batch is
    written through the staging table, which skips the duplicates; the staging path is then kept until
    a batch meets no duplicate, so a redelivery of many batches (a restart, a rebalance) does not pay a
    failed COPY for each. Either path writes the same rows.

    Events older than ``retention_days`` (when > 0) are rejected as ``late``: their partition would be
    dropped by the next retention run anyway, and creating it would only churn DDL.
    """

    name = "raw"
    table = "raw_events"
    service = "sink-raw"
    ordered = False  # rows keyed by (agent_id, seq, ts), each written once whatever the order

    def __init__(self, retention_days: int = 400) -> None:
        self.retention_days = retention_days
        self.partitions = PartitionCache()
        #: Midnight (UTC) of the oldest day kept; events before it are ``late``.
        self._oldest_start: datetime | None = None
        #: True while batches go through the staging table (since a batch met a duplicate).
        self.staging = False

    def topics(self, topics: Topics) -> list[str]:
        return list(topics.raw)

    def refresh(self, now: datetime) -> None:
        if self.retention_days > 0:
            oldest_day = (now.astimezone(UTC) - timedelta(days=self.retention_days)).date()
            self._oldest_start = datetime.combine(oldest_day, time(0), UTC)
        else:
            self._oldest_start = None

    def decode(self, value: bytes | None) -> RawRow:
        if value is None:
            raise Reject("record has no value (tombstone)", "invalid")
        row = raw_row(decode_event(value))
        if self._oldest_start is not None and row[2] < self._oldest_start:
            raise Reject(f"event older than the raw retention of {self.retention_days} days", "late")
        return row

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await _create_stage(conn, _RAW_STAGE, self.table, _RAW_COLS_SQL)

    async def before_write(self, conn: asyncpg.Connection, items: Sequence[RawRow]) -> None:
        await self.partitions.ensure(conn, days_of(items))

    async def write(self, conn: asyncpg.Connection, items: Sequence[RawRow]) -> tuple[int, int]:
        if not self.staging:
            try:
                async with conn.transaction():  # a savepoint in the caller's transaction
                    await conn.copy_records_to_table(self.table, records=items, columns=RAW_COLUMNS)
                return len(items), 0
            except asyncpg.UniqueViolationError:
                self.staging = True
        inserted = await _copy_and_apply(conn, _RAW_STAGE, items, RAW_COLUMNS, _RAW_INSERT)
        self.staging = inserted < len(items)
        return inserted, len(items) - inserted

    def on_partition_missing(self) -> None:
        self.partitions.forget()


_SES_COLS_SQL = ", ".join(SESSION_COLUMNS)
_SES_STAGE = "desktrace_sessions_stage"
_SES_UPDATE = ", ".join(f"{c} = EXCLUDED.{c}" for c in SESSION_COLUMNS if c != "session_id")
_SES_UPSERT = (
    f"INSERT INTO sessions ({_SES_COLS_SQL}, updated_at) "
    f"SELECT {_SES_COLS_SQL}, now() FROM {_SES_STAGE} "
    f"ON CONFLICT (session_id) DO UPDATE SET {_SES_UPDATE}, updated_at = EXCLUDED.updated_at"
)


class SessionWriter:
    """Applies session upserts and retractions to ``sessions`` so that the table ends as if every
    message had been applied one by one in topic order."""

    name = "sessions"
    table = "sessions"
    service = "sink-sessions"
    ordered = True  # a session's last message in topic order must be the one that stays

    def topics(self, topics: Topics) -> list[str]:
        return [topics.sessions]

    def refresh(self, now: datetime) -> None:
        pass

    def decode(self, value: bytes | None) -> SessionMessage:
        if value is None:
            raise Reject("record has no value (tombstone)", "invalid")
        return decode_session_message(value)

    async def prepare(self, conn: asyncpg.Connection) -> None:
        await _create_stage(conn, _SES_STAGE, self.table, _SES_COLS_SQL)

    async def before_write(self, conn: asyncpg.Connection, items: Sequence[SessionMessage]) -> None:
        pass

    async def write(self, conn: asyncpg.Connection, items: Sequence[SessionMessage]) -> tuple[int, int]:
        upserts, deletes = reduce_sessions(items)
        changed = 0
        if deletes:
            status = await conn.execute("DELETE FROM sessions WHERE session_id = ANY($1::text[])", deletes)
            changed += _rowcount(status)
        if upserts:
            rows = [session_row(s) for s in upserts]
            changed += await _copy_and_apply(conn, _SES_STAGE, rows, SESSION_COLUMNS, _SES_UPSERT)
        return changed, 0

    def on_partition_missing(self) -> None:
        pass
