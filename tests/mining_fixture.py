"""A hand-built UI event log with a known directly-follows graph, written to a real PostgreSQL through the raw
sink's own writer (msgpack bytes -> ``RawWriter.decode`` -> COPY + INSERT), as the pipeline stores events.

Alice (Europe/Berlin) and Bob (America/New_York) around 2026-03-28/29 (Berlin's spring-forward night):

- ``corp\\alice/2026-03-28``: Outlook, Excel
- ``corp\\alice/2026-03-29``: Chrome (23:30 UTC on 03-28 = 00:30 local on 03-29), Outlook, Excel, Excel,
  Chrome, Outlook, Excel, Chrome, Outlook (plus a mouse click, which is no UI event)
- ``corp\\bob/2026-03-28``: Word, Word, Outlook (01:00-01:20 UTC on 03-29 = 21:00-21:20 local on 03-28)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from proto.codec import encode_event
from proto.events import (
    DocumentSave,
    Envelope,
    HardwareMouseClick,
    WindowOpen,
    WindowSwitch,
    WindowUpdate,
)
from proto.sessions import make_session
from sinks.migrations import apply_migrations
from sinks.writers import RawWriter
from tests.support.gateway import seed_sessions

ALICE = "corp\\alice"
BOB = "corp\\bob"
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
# Everything XML 1.0 and a careless writer could trip over: markup, quotes, a bell, tab/newline, emoji.
NASTY_TITLE = 'Budget <2026> & "Q1" \x07bell\x1b[0m\ttab\nline 🙂'
FULL_URL = "https://intranet.example.com/hr/people/42?id=7"


def z(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def _env(user: str, seq: int, ts: datetime, tz: str) -> dict[str, Any]:
    login = user.split("\\")[1]
    return {
        "agent_id": f"agent-{login}",
        "seq": seq,
        "ts": ts,
        "user": login,
        "domain": "CORP",
        "host": f"PC-{login.upper()}",
        "tz": tz,
    }


def alice_events() -> list[Envelope]:
    a = lambda seq, ts: _env(ALICE, seq, ts, BERLIN)  # noqa: E731
    return [
        WindowSwitch(input="hardware", app="Outlook", title="Inbox", **a(1, z(2026, 3, 28, 21, 30))),
        WindowSwitch(
            input="hardware",
            app="Excel",
            title="Forecast.xlsx",
            file_path="C:\\Users\\alice\\Forecast.xlsx",
            **a(2, z(2026, 3, 28, 22, 30)),
        ),
        WindowSwitch(
            input="hardware",
            app="Chrome",
            title="News",
            url="https://news.example.org/today",
            **a(3, z(2026, 3, 28, 23, 30)),
        ),
        WindowSwitch(input="hardware", app="Outlook", title="Inbox", **a(4, z(2026, 3, 29, 7, 0, 0))),
        WindowSwitch(
            input="hardware",
            app="Excel",
            title=NASTY_TITLE,
            file_path="C:\\Users\\alice\\Finance\\Budget.xlsx",
            sheet="Q1",
            **a(5, z(2026, 3, 29, 7, 0, 30)),
        ),
        WindowUpdate(
            input="none",
            app="Excel",
            title="Budget.xlsx",
            file_path="C:\\Users\\alice\\Finance\\Budget.xlsx",
            sheet="Q2",
            **a(6, z(2026, 3, 29, 7, 1, 30)),
        ),
        WindowSwitch(
            input="hardware", app="Chrome", title="HR portal", url=FULL_URL, **a(7, z(2026, 3, 29, 7, 2, 0))
        ),
        WindowSwitch(input="hardware", app="Outlook", title="Inbox", **a(8, z(2026, 3, 29, 7, 4, 0))),
        HardwareMouseClick(input="hardware", app="Outlook", title="Inbox", **a(9, z(2026, 3, 29, 7, 4, 10))),
        WindowSwitch(
            input="hardware",
            app="Excel",
            title="Budget.xlsx",
            file_path="C:\\Users\\alice\\Finance\\Budget.xlsx",
            **a(10, z(2026, 3, 29, 7, 5, 0)),
        ),
        WindowSwitch(
            input="hardware", app="Chrome", title="HR portal", url=FULL_URL, **a(11, z(2026, 3, 29, 7, 5, 30))
        ),
        WindowSwitch(input="hardware", app="Outlook", title="Inbox", **a(12, z(2026, 3, 29, 7, 6, 30))),
    ]


def bob_events() -> list[Envelope]:
    b = lambda seq, ts: _env(BOB, seq, ts, NEW_YORK)  # noqa: E731
    doc = "/home/bob/Contracts/Contract 2026-17.docx"
    return [
        WindowOpen(input="none", app="Word", title="Contract", file_path=doc, **b(1, z(2026, 3, 29, 1, 0))),
        DocumentSave(
            input="hardware", app="Word", title="Contract", file_path=doc, **b(2, z(2026, 3, 29, 1, 10))
        ),
        WindowSwitch(input="hardware", app="Outlook", title="Inbox", **b(3, z(2026, 3, 29, 1, 20))),
    ]


#: The expected traces: name -> activities (application names) in order.
EXPECTED_TRACES = {
    f"{ALICE}/2026-03-28": ["Outlook", "Excel"],
    f"{ALICE}/2026-03-29": [
        "Chrome",
        "Outlook",
        "Excel",
        "Excel",
        "Chrome",
        "Outlook",
        "Excel",
        "Chrome",
        "Outlook",
    ],
    f"{BOB}/2026-03-28": ["Word", "Word", "Outlook"],
}

#: Alice's 2026-03-29 app-level DFG: (from, to) -> (count, median seconds).
ALICE_29_EDGES = {
    ("Chrome", "Outlook"): (3, 120.0),  # 27000 s (overnight), 120 s, 60 s
    ("Outlook", "Excel"): (2, 45.0),  # 30 s, 60 s
    ("Excel", "Excel"): (1, 60.0),
    ("Excel", "Chrome"): (2, 30.0),
}


async def write_events(dsn: str, events: list[Envelope]) -> int:
    """Apply the migrations and write ``events`` as the raw sink does; returns the rows inserted."""
    await apply_migrations(dsn)
    writer = RawWriter(retention_days=0)
    rows = [writer.decode(encode_event(e)) for e in events]
    conn = await asyncpg.connect(dsn)
    try:
        await writer.prepare(conn)
        await writer.before_write(conn, rows)
        async with conn.transaction():
            inserted, _ = await writer.write(conn, rows)
    finally:
        await conn.close()
    return inserted


async def load_fixture(dsn: str) -> None:
    """The events, and the active sessions the stream would have made of them (the pages list users from
    the sessions)."""
    events = alice_events() + bob_events()
    assert await write_events(dsn, events) == len(events)
    await seed_sessions(
        dsn,
        [
            make_session(
                ALICE, "active", z(2026, 3, 28, 21, 30), z(2026, 3, 28, 23, 35), ["PC-ALICE"], tz=BERLIN
            ),
            make_session(
                ALICE, "active", z(2026, 3, 29, 7, 0), z(2026, 3, 29, 7, 10), ["PC-ALICE"], tz=BERLIN
            ),
            make_session(BOB, "active", z(2026, 3, 29, 1, 0), z(2026, 3, 29, 1, 25), ["PC-BOB"], tz=NEW_YORK),
        ],
    )
