"""Event logs for process mining: UI raw events -> traces -> IEEE XES or OCEL 2.0 JSON. No pm4py here.

One **trace** is one user key's UI events (``WindowOpen``, ``WindowSwitch``, ``WindowUpdate``,
``DocumentOpen``, ``DocumentSave``, ``SheetOpen``) of one local date, in time order (ties: agent id, seq).
The local date of an event is taken in the IANA zone the event itself carries (as the reports do, see
:mod:`reports.compute`); a trace's date never goes backwards within a user, so when a user's zone changes
westwards around midnight the few events whose local date would be earlier stay in the current trace (trace
names stay unique). Events are read with a server-side cursor ordered by ``(user_key, ts)``, one trace at a
time, so memory does not grow with the number of events (OCEL keeps the distinct objects: users,
applications, documents).

Privacy: the same settings as the reports. The full URL is read from the database only with
``show_urls`` (``reports_show_urls``); otherwise only its domain (``url_domain``) is exported. A document is
exported as its file name, never its directory. Every string is cleaned of characters XML 1.0 forbids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TextIO
from zoneinfo import ZoneInfo

import msgspec

from reports.apps import UI_EVENT_TYPES
from reports.compute import day_start, local_date, utc_window, zone

FORMATS = ("xes", "ocel")
UNKNOWN_APP = "(unknown)"

# One query, ordered as the traces are built; the full URL is selected only when it may be shown.
EVENTS_SQL = """
SELECT user_key, ts, type, tz, coalesce(app, '') AS app, coalesce(url_domain, '') AS url_domain,
       coalesce(details->>'title', '') AS title, coalesce(details->>'file_path', '') AS file_path,
       coalesce(details->>'sheet', '') AS sheet, {url} AS url, host, agent_id, seq
FROM raw_events
WHERE type = ANY($3::text[]) AND ts >= $1 AND ts < $2 AND ($4::text[] IS NULL OR user_key = ANY($4::text[]))
ORDER BY user_key, ts, agent_id, seq
"""

COUNT_SQL = """
SELECT count(*) FROM raw_events
WHERE type = ANY($3::text[]) AND ts >= $1 AND ts < $2 AND ($4::text[] IS NULL OR user_key = ANY($4::text[]))
"""


def events_sql(show_urls: bool) -> str:
    """The event query; the URL column is NULL (never read) unless ``show_urls``."""
    return EVENTS_SQL.format(url="details->>'url'" if show_urls else "NULL::text")


@dataclass(slots=True)
class MiningEvent:
    """One UI event as exported: ``app`` is never empty (``(unknown)``), ``url`` is None unless full URLs
    may be shown, ``document`` is a file name without its directory."""

    user_key: str
    ts: datetime
    type: str
    app: str
    title: str
    url_domain: str
    url: str | None
    document: str
    sheet: str
    host: str
    event_id: str


@dataclass(slots=True)
class Trace:
    """One user's UI events of one local date, in time order (``name`` = ``<user key>/<YYYY-MM-DD>``)."""

    user_key: str
    day: date
    events: list[MiningEvent] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.user_key}/{self.day.isoformat()}"


_DIR = re.compile(r"^.*[\\/]")


@functools.lru_cache(maxsize=16384)
def file_name(path: str) -> str:
    """The last component of a Windows or POSIX path (``C:\\a\\b.docx`` -> ``b.docx``)."""
    return _DIR.sub("", path) if path else ""


class TraceBuilder:
    """Cuts rows ordered by ``(user_key, ts)`` into :class:`Trace` objects of local dates ``start``..``end``.

    Pure and incremental: :meth:`add` returns the trace that a row closed (or None); :meth:`finish` the last
    one. Holds one trace at a time.
    """

    def __init__(self, start: date, end: date) -> None:
        self.start, self.end = start, end
        self._cur: Trace | None = None
        # Day cache of the current user: the zone name and the UTC bounds of the current local date.
        self._tz = ""
        self._zone: ZoneInfo | None = None
        self._lo = self._hi = datetime.min.replace(tzinfo=UTC)
        self._day = date.min

    def _local_day(self, ts: datetime, tz: str) -> date:
        if tz == self._tz and self._lo <= ts < self._hi:
            return self._day
        z = zone(tz)
        d = local_date(ts, z)
        self._tz, self._zone, self._day = tz, z, d
        self._lo, self._hi = day_start(d, z), day_start(d + timedelta(days=1), z)
        return d

    def add(self, user_key: str, tz: str, ev: MiningEvent) -> Trace | None:
        d = self._local_day(ev.ts, tz)
        cur = self._cur
        if cur is not None and cur.user_key == user_key and d < cur.day:
            d = cur.day  # a zone change moved the local date back: stay in the current trace
        if not self.start <= d <= self.end:
            return None
        if cur is not None and cur.user_key == user_key and cur.day == d:
            cur.events.append(ev)
            return None
        self._cur = Trace(user_key, d, [ev])
        return cur

    def finish(self) -> Trace | None:
        cur, self._cur = self._cur, None
        return cur


def row_event(r: Any) -> MiningEvent:
    """A :class:`MiningEvent` from one row of :data:`EVENTS_SQL` (an asyncpg Record or a mapping)."""
    return MiningEvent(
        user_key=r["user_key"],
        ts=r["ts"],
        type=r["type"],
        app=r["app"] or UNKNOWN_APP,
        title=r["title"],
        url_domain=r["url_domain"],
        url=r["url"],
        document=file_name(r["file_path"]),
        sheet=r["sheet"],
        host=r["host"],
        event_id=f"{r['agent_id']}:{r['seq']}",
    )


def traces_of(rows: Iterable[Any], start: date, end: date) -> Iterator[Trace]:
    """The traces of rows already ordered by ``(user_key, ts)`` (pure twin of :func:`stream_traces`)."""
    b = TraceBuilder(start, end)
    for r in rows:
        done = b.add(r["user_key"], r["tz"], row_event(r))
        if done is not None:
            yield done
    last = b.finish()
    if last is not None:
        yield last


class Connection(Protocol):
    def transaction(self, *, isolation: str | None = None, readonly: bool = False) -> Any: ...
    def cursor(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


def _query_args(start: date, end: date, users: Sequence[str] | None) -> tuple[Any, ...]:
    lo, hi = utc_window(start, end)
    # None reads everyone; an empty list reads no one (a login whose scope is empty must not see everyone).
    return lo, hi, list(UI_EVENT_TYPES), (None if users is None else list(users))


async def count_events(conn: Connection, start: date, end: date, users: Sequence[str] | None) -> int:
    """How many rows :func:`stream_traces` will read (for a progress bar)."""
    return int(await conn.fetchval(COUNT_SQL, *_query_args(start, end, users)))


async def stream_traces(
    conn: Connection,
    start: date,
    end: date,
    users: Sequence[str] | None = None,
    *,
    show_urls: bool = False,
    on_rows: Callable[[int], None] | None = None,
    prefetch: int = 5000,
) -> AsyncIterator[Trace]:
    """The traces of local dates ``start``..``end`` (of ``users``, or everyone), read through a server-side
    cursor inside a read-only transaction, ``prefetch`` rows a fetch. ``on_rows(n)`` is called after every
    fetch with the rows read so far."""
    b = TraceBuilder(start, end)
    n = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        cur = await conn.cursor(events_sql(show_urls), *_query_args(start, end, users))
        # Double buffering: the next FETCH is sent before this chunk is processed, so PostgreSQL reads
        # while Python writes; at most two chunks are in memory.
        pending = asyncio.ensure_future(cur.fetch(prefetch))
        try:
            while True:
                rows = await pending
                if not rows:
                    break
                pending = asyncio.ensure_future(cur.fetch(prefetch))
                await asyncio.sleep(0)  # let the fetch send its request
                for r in rows:
                    done = b.add(r["user_key"], r["tz"], row_event(r))
                    if done is not None:
                        yield done
                n += len(rows)
                if on_rows is not None:
                    on_rows(n)
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
    last = b.finish()
    if last is not None:
        yield last
    if on_rows is not None:
        on_rows(n)


# ---- XML --------------------------------------------------------------------------------------------------

# Characters XML 1.0 does not allow (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF) -> U+FFFD.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
_SPECIAL = re.compile('[&<>"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')


def _esc(m: re.Match[str]) -> str:
    return _ESCAPES.get(m.group(), "\ufffd")


@functools.lru_cache(maxsize=65536)  # applications, hosts, domains and most titles repeat
def xml_attr(text: str) -> str:
    """``text`` as the value of a double-quoted XML 1.0 attribute: escaped, forbidden characters replaced
    by U+FFFD, whitespace kept (as character references, so parsers do not normalise it away)."""
    return _SPECIAL.sub(_esc, text)


def clean_text(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (replaced by U+FFFD), for the JSON export too."""
    return _ILLEGAL.sub("\ufffd", text)


def xes_time(ts: datetime) -> str:
    """An XES ``date`` value: UTC, milliseconds, ``+00:00`` offset."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")


XES_HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<!-- desktrace UI event log: one trace per user key and local date -->
<log xes.version="1849-2016" xes.features="" xmlns="http://www.xes-standard.org/">
  <extension name="Concept" prefix="concept" uri="http://www.xes-standard.org/concept.xesext"/>
  <extension name="Time" prefix="time" uri="http://www.xes-standard.org/time.xesext"/>
  <extension name="Organizational" prefix="org" uri="http://www.xes-standard.org/org.xesext"/>
  <global scope="trace">
    <string key="concept:name" value="__INVALID__"/>
  </global>
  <global scope="event">
    <string key="concept:name" value="__INVALID__"/>
    <date key="time:timestamp" value="1970-01-01T00:00:00.000+00:00"/>
    <string key="org:resource" value="__INVALID__"/>
    <string key="event_type" value="__INVALID__"/>
  </global>
  <classifier name="Application" keys="concept:name"/>
  <classifier name="Application and event type" keys="concept:name event_type"/>
"""


class XesWriter:
    """Writes an IEEE 1849-2016 XES document to a text stream, one trace at a time.

    Guarantees: well-formed XML 1.0 whatever the titles hold; per event ``concept:name`` (application),
    ``time:timestamp``, ``org:resource`` (user key), ``event_type``, ``host``, and when not empty ``title``,
    ``url_domain``, ``url`` (only if the caller read it), ``document``, ``sheet``.
    """

    def __init__(self, out: TextIO, name: str = "desktrace") -> None:
        self.out = out
        self.name = name

    def begin(self) -> None:
        self.out.write(XES_HEADER)
        self.out.write(f'  <string key="concept:name" value="{xml_attr(self.name)}"/>\n')

    def trace(self, t: Trace) -> None:
        parts = ["  <trace>\n", f'    <string key="concept:name" value="{xml_attr(t.name)}"/>\n']
        res = xml_attr(t.user_key)
        for e in t.events:
            parts.append(
                "    <event>\n"
                f'      <string key="concept:name" value="{xml_attr(e.app)}"/>\n'
                f'      <date key="time:timestamp" value="{xes_time(e.ts)}"/>\n'
                f'      <string key="org:resource" value="{res}"/>\n'
                f'      <string key="event_type" value="{e.type}"/>\n'
                f'      <string key="host" value="{xml_attr(e.host)}"/>\n'
            )
            for key, value in (
                ("title", e.title),
                ("url_domain", e.url_domain),
                ("url", e.url),
                ("document", e.document),
                ("sheet", e.sheet),
            ):
                if value:
                    parts.append(f'      <string key="{key}" value="{xml_attr(value)}"/>\n')
            parts.append("    </event>\n")
        parts.append("  </trace>\n")
        self.out.write("".join(parts))

    def end(self) -> None:
        self.out.write("</log>\n")


# ---- OCEL 2.0 JSON ----------------------------------------------------------------------------------------

_EVENT_ATTRS = ("title", "url_domain", "url", "host", "sheet")


class OcelWriter:
    """Writes an OCEL 2.0 JSON document (``objectTypes``, ``eventTypes``, ``objects``, ``events``) to a text
    stream. Object types: ``user`` (the user key), ``application`` and ``document`` (file name); every
    event relates to its user (qualifier ``performed by``), its application (``in``) and, when it has one,
    its document (``on``). Events are written as they come; the distinct objects are kept until the end.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._first = True
        self.objects: dict[str, tuple[str, str]] = {}  # id -> (type, name)
        self.event_types: set[str] = set()
        encode = msgspec.json.Encoder().encode
        self._dump: Callable[[Any], str] = lambda obj: encode(obj).decode("utf-8")

    def _obj(self, kind: str, name: str) -> str:
        oid = f"{kind}:{name}"
        if oid not in self.objects:
            self.objects[oid] = (kind, name)
        return oid

    def begin(self) -> None:
        self.out.write('{"events":[\n')

    def trace(self, t: Trace) -> None:
        user = self._obj("user", clean_text(t.user_key))
        lines = []
        for e in t.events:
            self.event_types.add(e.type)
            rels = [
                {"objectId": user, "qualifier": "performed by"},
                {"objectId": self._obj("application", clean_text(e.app)), "qualifier": "in"},
            ]
            if e.document:
                rels.append({"objectId": self._obj("document", clean_text(e.document)), "qualifier": "on"})
            attrs = [{"name": k, "value": clean_text(v)} for k in _EVENT_ATTRS if (v := getattr(e, k))]
            attrs.append({"name": "trace", "value": clean_text(t.name)})
            ev = {
                "id": clean_text(e.event_id),
                "type": e.type,
                "time": xes_time(e.ts),
                "attributes": attrs,
                "relationships": rels,
            }
            lines.append(("" if self._first else ",\n") + self._dump(ev))
            self._first = False
        self.out.write("".join(lines))

    def end(self) -> None:
        self.out.write('\n],\n"objects":[\n')
        self.out.write(
            ",\n".join(
                self._dump(
                    {
                        "id": oid,
                        "type": kind,
                        "attributes": [{"name": "name", "time": "1970-01-01T00:00:00Z", "value": name}],
                        "relationships": [],
                    }
                )
                for oid, (kind, name) in self.objects.items()
            )
        )
        string_attr = [{"name": "name", "type": "string"}]
        object_types = [{"name": k, "attributes": string_attr} for k in ("user", "application", "document")]
        event_types = [
            {"name": t, "attributes": [{"name": a, "type": "string"} for a in (*_EVENT_ATTRS, "trace")]}
            for t in sorted(self.event_types)
        ]
        self.out.write(
            f'\n],\n"objectTypes":{self._dump(object_types)},\n"eventTypes":{self._dump(event_types)}\n}}\n'
        )


@dataclass(slots=True)
class ExportStats:
    """What an export wrote."""

    traces: int = 0
    events: int = 0


class LogWriter(Protocol):
    def begin(self) -> None: ...
    def trace(self, t: Trace) -> None: ...
    def end(self) -> None: ...


def make_writer(fmt: str, out: TextIO) -> LogWriter:
    if fmt == "xes":
        return XesWriter(out)
    if fmt == "ocel":
        return OcelWriter(out)
    raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")


async def export_log(
    conn: Connection,
    fmt: str,
    out: TextIO,
    start: date,
    end: date,
    users: Sequence[str] | None = None,
    *,
    show_urls: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> ExportStats:
    """Stream the event log of local dates ``start``..``end`` to ``out`` as ``fmt`` (``xes``/``ocel``)."""
    writer = make_writer(fmt, out)
    stats = ExportStats()
    writer.begin()
    async for t in stream_traces(conn, start, end, users, show_urls=show_urls, on_rows=on_rows):
        writer.trace(t)
        stats.traces += 1
        stats.events += len(t.events)
    writer.end()
    return stats
