"""The real PostgreSQL the fixtures provide: a row goes in and comes back out unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

pytestmark = pytest.mark.postgres


async def test_row_round_trip_in_fresh_database(fresh_pg_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        await conn.execute(
            "CREATE TABLE spine (id bigint PRIMARY KEY, user_key text NOT NULL, at timestamptz NOT NULL,"
            " doc jsonb NOT NULL)"
        )
        at = datetime(2024, 3, 1, 8, 30, 15, 123000, tzinfo=UTC)
        await conn.execute(
            "INSERT INTO spine VALUES ($1, $2, $3, $4::jsonb)", 1, "corp\\alice", at, '{"k": "ü"}'
        )
        row = await conn.fetchrow("SELECT id, user_key, at, doc FROM spine WHERE id = 1")
    finally:
        await conn.close()
    assert row is not None
    assert (row["id"], row["user_key"], row["at"], row["doc"]) == (1, "corp\\alice", at, '{"k": "ü"}')


async def test_fresh_databases_are_isolated(pg_dsn: str, fresh_pg_dsn: str) -> None:
    """The fresh database is a different database from the session one, and it exists."""
    assert fresh_pg_dsn != pg_dsn
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert fresh_pg_dsn.endswith("/" + name)
    assert name.startswith("t_")
