"""PostgreSQL least privilege: the reader role used by the gateway and reports can read, never write."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sinks.migrations import apply_migrations

pytestmark = pytest.mark.postgres


def test_reader_role_reads_but_cannot_write(fresh_pg_dsn: str) -> None:
    async def scenario() -> None:
        admin = await asyncpg.connect(fresh_pg_dsn)
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'desktrace_reader'")
            if not exists:
                await admin.execute("CREATE ROLE desktrace_reader LOGIN PASSWORD 'reader-test'")
            else:
                await admin.execute("ALTER ROLE desktrace_reader LOGIN PASSWORD 'reader-test'")
        finally:
            await admin.close()
        await apply_migrations(fresh_pg_dsn)
        parts = urlsplit(fresh_pg_dsn)
        host = parts.hostname or "127.0.0.1"
        reader_dsn = urlunsplit(parts._replace(netloc=f"desktrace_reader:reader-test@{host}:{parts.port}"))
        reader = await asyncpg.connect(reader_dsn)
        try:
            assert await reader.fetchval("SELECT count(*) FROM sessions") == 0
            assert await reader.fetchval("SELECT count(*) FROM raw_events") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute("DELETE FROM sessions")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute(
                    "INSERT INTO sessions (session_id, user_key, kind, started_at, ended_at,"
                    " duration_s, hosts) VALUES ('x', 'd\\\\u', 'active', now(), now(), 0, '{}')"
                )
        finally:
            await reader.close()

    asyncio.run(scenario())
