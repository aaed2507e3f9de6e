"""The durable on-disk queue between the recorder and Kafka: SQLite (standard library) in WAL mode.

Guarantees (what :class:`Spool` promises):

- an event is on disk (committed and fsynced) before :meth:`Spool.append` returns, and only then may the
  shipper see it; it leaves the spool only through :meth:`Spool.ack` (after Kafka acknowledged it) or a
  counted drop when the spool is full;
- the agent's next ``seq`` (and its ``agent_id``) are stored in the same database and committed in the same
  transaction as the events that used them: after kill -9 or a power cut, the spool holds exactly the events
  whose seqs were consumed, so no seq is ever sent twice with different content;
- bounded: the payload bytes (value + key + topic) never exceed ``max_bytes``, after every append. When an
  append would exceed it, events are dropped by class, oldest first within a class: **HID events first,
  then UI events, presence events (heartbeats, lock/unlock, agent start/stop) last**; within a class the
  stored events go before the ones being appended. An event larger than ``max_bytes`` on its own is refused
  (counted as ``refused_too_large``) and never makes room: nothing stored is dropped for it. Every drop and
  refusal is counted, and the count not yet reported in a heartbeat is kept on disk too.

Why ``synchronous=FULL``: in WAL mode ``NORMAL`` never corrupts the database but may roll back the last
commits on a power cut. The shipper may already have sent those events, and the rolled-back seq would then be
reused for a different event — a silent loss downstream, because consumers dedup by (agent_id, seq). ``FULL``
fsyncs the WAL on every commit; the agent commits a handful of times per minute (HID events are throttled),
so the cost is negligible (measured in bench/bench_agent.py).

One connection, used from one thread (the agent's event loop).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    hid   INTEGER NOT NULL,  -- drop class: 1 HID, 2 UI, 0 presence (DROP_ORDER); older spools: 0/1
    seq   INTEGER NOT NULL,
    topic TEXT    NOT NULL,
    key   BLOB    NOT NULL,
    value BLOB    NOT NULL,
    size  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_hid ON events (hid, id);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


#: Drop classes (the ``hid`` column) in the order a full spool drops them: HID, UI, then presence.
HID_CLASS, UI_CLASS, PRESENCE_CLASS = 1, 2, 0
DROP_ORDER = (HID_CLASS, UI_CLASS, PRESENCE_CLASS)


class SpoolRecord(NamedTuple):
    """One event to store: where it goes (topic, key), its msgpack bytes, and whether it is an HID or a UI
    event (neither: a presence event, heartbeats included)."""

    topic: str
    key: bytes
    value: bytes
    seq: int
    hid: bool = False
    ui: bool = False

    @property
    def size(self) -> int:
        return len(self.value) + len(self.key) + len(self.topic)

    @property
    def drop_class(self) -> int:
        return HID_CLASS if self.hid else UI_CLASS if self.ui else PRESENCE_CLASS


class Spooled(NamedTuple):
    """A stored event as the shipper reads it."""

    id: int
    topic: str
    key: bytes
    value: bytes
    seq: int


class SpoolStats(NamedTuple):
    """Figures of the spool; ``dropped_*`` count refusals too, ``refused_too_large`` (by the spool's bound)
    and ``refused_by_broker`` (permanently refused by Kafka) only those."""

    events: int
    bytes: int
    dropped_total: int
    dropped_unreported: int
    refused_too_large: int = 0
    refused_by_broker: int = 0


class Spool:
    """A bounded, durable FIFO of encoded events (see the module docstring for the guarantees)."""

    def __init__(self, path: str | Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # One transaction: a reader (or a crash) never sees half a schema.
        self._db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        self._count = self._bytes = 0
        self._meta: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        """Read the in-memory counters and meta values from the database (at open, after a rollback)."""
        row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM events").fetchone()
        self._count, self._bytes = row[0], row[1]
        self._meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())

    # ---- identity stored with the events ------------------------------------------------------------

    @property
    def agent_id(self) -> str | None:
        return self._meta.get("agent_id")

    @property
    def next_seq(self) -> int:
        """The first seq not used by any event ever appended to this spool (0 for a new spool)."""
        return int(self._meta.get("next_seq", "0"))

    def bind_agent(self, agent_id: str) -> None:
        """Record the agent id this spool's seqs belong to (once, durably)."""
        with self._tx():
            self._set("agent_id", agent_id)

    # ---- writing --------------------------------------------------------------------------------------

    def append(
        self, records: Sequence[SpoolRecord], next_seq: int | None = None, dropped_reported: int = 0
    ) -> int:
        """Store ``records`` durably in one transaction, with the agent's ``next_seq``; ``dropped_reported``
        drops were reported in one of these records (a Heartbeat) and leave the unreported count.
        Returns how many events were dropped or refused (stored ones and appended ones)."""
        too_large = sum(1 for r in records if r.size > self.max_bytes)
        batch = [r for r in records if r.size <= self.max_bytes]
        with self._tx():
            dropped = too_large + self._make_room(batch)
            self._db.executemany(
                "INSERT INTO events (hid, seq, topic, key, value, size) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.drop_class, r.seq, r.topic, r.key, r.value, r.size) for r in batch],
            )
            self._count += len(batch)
            self._bytes += sum(r.size for r in batch)
            if next_seq is not None:
                self._set("next_seq", str(max(next_seq, self.next_seq)))
            if too_large:
                self._set("refused_too_large", str(int(self._meta.get("refused_too_large", "0")) + too_large))
            if dropped or dropped_reported:
                total = int(self._meta.get("dropped_total", "0")) + dropped
                unreported = max(
                    0, int(self._meta.get("dropped_unreported", "0")) + dropped - dropped_reported
                )
                self._set("dropped_total", str(total))
                self._set("dropped_unreported", str(unreported))
        return dropped

    def _make_room(self, batch: list[SpoolRecord]) -> int:
        """Drop stored events and, if need be, records of ``batch`` (removed from it in place) until the
        batch fits: by :data:`DROP_ORDER`, within a class stored ones first, oldest first."""
        need = sum(r.size for r in batch)
        dropped = 0
        for cls in DROP_ORDER:
            while self._count and self._bytes + need > self.max_bytes:
                rows = self._db.execute(
                    "SELECT id, size FROM events WHERE hid = ? ORDER BY id LIMIT 256", (cls,)
                ).fetchall()
                if not rows:
                    break
                ids = []
                for rid, size in rows:
                    if self._bytes + need <= self.max_bytes:
                        break
                    ids.append((rid,))
                    self._bytes -= size
                    self._count -= 1
                self._db.executemany("DELETE FROM events WHERE id = ?", ids)
                dropped += len(ids)
            i = 0
            while i < len(batch) and self._bytes + need > self.max_bytes:
                if batch[i].drop_class == cls:
                    need -= batch.pop(i).size
                    dropped += 1
                else:
                    i += 1
        return dropped

    # ---- reading and acknowledging ------------------------------------------------------------------

    def peek(self, limit: int = 500, after_id: int = 0) -> list[Spooled]:
        """The oldest ``limit`` stored events with ``id > after_id``, oldest first."""
        rows = self._db.execute(
            "SELECT id, topic, key, value, seq FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [Spooled(*r) for r in rows]

    def discard(self, ids: Iterable[int]) -> int:
        """Remove events Kafka refused for good (too large, invalid: sending them again cannot succeed) and
        count them as dropped (reported in the next heartbeat's ``spool_dropped``) and as
        ``refused_by_broker``; returns how many went."""
        with self._tx():
            removed = self._delete(ids)
            if removed:
                for k in ("refused_by_broker", "dropped_total", "dropped_unreported"):
                    self._set(k, str(int(self._meta.get(k, "0")) + removed))
        return removed

    def ack(self, ids: Iterable[int]) -> int:
        """Remove events Kafka acknowledged (ids already dropped are ignored); returns how many went."""
        with self._tx():
            return self._delete(ids)

    def _delete(self, ids: Iterable[int]) -> int:
        """Delete ``ids`` inside the caller's transaction, keeping the in-memory count and bytes."""
        removed = 0
        for rid in ids:
            row = self._db.execute("DELETE FROM events WHERE id = ? RETURNING size", (rid,)).fetchone()
            if row is not None:
                removed += 1
                self._count -= 1
                self._bytes -= int(row[0])
        return removed

    def stats(self) -> SpoolStats:
        return SpoolStats(
            events=self._count,
            bytes=self._bytes,
            dropped_total=int(self._meta.get("dropped_total", "0")),
            dropped_unreported=int(self._meta.get("dropped_unreported", "0")),
            refused_too_large=int(self._meta.get("refused_too_large", "0")),
            refused_by_broker=int(self._meta.get("refused_by_broker", "0")),
        )

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()

    # ---- helpers ------------------------------------------------------------------------------------------

    def _set(self, k: str, v: str) -> None:
        self._db.execute(
            "INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v", (k, v)
        )
        self._meta[k] = v

    def _tx(self) -> _Tx:
        return _Tx(self)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT; on an error ROLLBACK and reload the in-memory counters."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def __enter__(self) -> None:
        self.spool._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        db = self.spool._db
        if exc_type is None:
            db.execute("COMMIT")
            return
        db.execute("ROLLBACK")
        self.spool._load()


def integrity_ok(path: str | Path) -> bool:
    """``PRAGMA integrity_check`` of a spool file (used by tests and ``desktrace-agent`` diagnostics)."""
    db = sqlite3.connect(str(path))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
