"""Databases of their own for tests, on the tests' PostgreSQL server (the ``fresh_pg_dsn`` fixture, and
tests that need more than one)."""

from __future__ import annotations

import uuid

import asyncpg

from devstack._proc import run_sync
from devstack.postgres import with_database


def fresh_database(pg_dsn: str) -> str:
    """A new, empty database on the server of ``pg_dsn``; its DSN (drop it with :func:`drop_database`)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    _admin(pg_dsn, f'CREATE DATABASE "{name}"')
    return with_database(pg_dsn, name)


def drop_database(pg_dsn: str, dsn: str) -> None:
    """Drop the database of ``dsn`` (made by :func:`fresh_database`), its connections closed by force."""
    name = dsn.rsplit("/", 1)[1].split("?", 1)[0]
    _admin(pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(pg_dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_sync(go)
