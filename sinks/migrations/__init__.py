"""Versioned schema migrations: ``NNNN_name.sql`` files in this package, applied in order.

Guarantees of :func:`apply_migrations`:

- each migration runs at most once per database, in its own transaction, recorded in ``schema_migrations``
  (version, name, SHA-256 of the file, time applied);
- the whole run holds a session-level advisory lock, so several sinks (or a sink and ``desktrace-sink
  migrate``) starting together apply each migration exactly once and each waits for the other;
- running it again is a no-op that returns ``[]``;
- an applied migration whose file has changed since is refused (:class:`MigrationError`): migrations are
  append-only, a fix is a new file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)

#: Key of the session-level advisory lock held while migrating (any constant shared by all desktrace code).
MIGRATION_LOCK_KEY = 0x6465736B74726163  # "desktrac"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migrations on disk and the ones recorded in the database disagree, or one failed."""


@dataclass(frozen=True)
class Migration:
    """One migration file: ``version`` is its 4-digit prefix, ``checksum`` the SHA-256 of its text."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def discover() -> list[Migration]:
    """The migrations shipped in this package, ordered by version; refuses duplicate versions."""
    found: dict[str, Migration] = {}
    for entry in resources.files(__name__).iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version, name = m.group(1), m.group(2)
        if version in found:
            raise MigrationError(f"two migrations with version {version}: {found[version].name} and {name}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def apply_pending(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations on ``conn`` (not inside a transaction); returns the versions applied."""
    migrations = discover() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        recorded = {r["version"]: r for r in rows}
        applied: list[str] = []
        for mig in migrations:
            done = recorded.get(mig.version)
            if done is not None:
                if done["checksum"] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.version}_{mig.name} changed after it was applied "
                        f"(recorded checksum {done['checksum'][:12]}, file {mig.checksum[:12]}); "
                        "migrations are append-only: add a new one instead"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        mig.version,
                        mig.name,
                        mig.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {mig.version}_{mig.name} failed: {type(exc).__name__}: {exc}"
                ) from exc
            log.info("migration applied", extra={"kv": {"version": mig.version, "name": mig.name}})
            applied.append(mig.version)
        unknown = sorted(set(recorded) - {m.version for m in migrations})
        if unknown:
            log.warning(
                "database has migrations this code does not know (newer code ran here)",
                extra={"kv": {"versions": unknown}},
            )
        return applied
    finally:
        if not conn.is_closed():
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                pass  # the lock dies with the session anyway


async def apply_migrations(dsn: str) -> list[str]:
    """Connect to ``dsn``, apply every pending migration and return the versions applied now (idempotent:
    ``[]`` when the schema is current)."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        return await apply_pending(conn)
    finally:
        await conn.close()


__all__ = [
    "MIGRATION_LOCK_KEY",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "apply_pending",
    "discover",
]
