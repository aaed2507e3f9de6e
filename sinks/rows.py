"""Pure conversions from decoded records to table rows. No I/O, no clock.

- :func:`raw_row`: one raw event -> one ``raw_events`` row (:data:`RAW_COLUMNS` order): the envelope as
  columns, a few UI columns (``app``, ``url_domain``), the type-specific rest as a JSON text for ``details``.
- :func:`reduce_sessions`: session-topic messages in topic order -> the final upserts and deletes, last
  write per ``session_id`` winning (a retraction after an upsert deletes; an upsert after a retraction
  re-creates).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from functools import cache, lru_cache
from typing import Any, Final

import msgspec

from common.urls import url_host
from proto.events import Envelope, Heartbeat
from proto.keys import user_key
from proto.sessions import Session, SessionMessage, fold_sessions

RAW_COLUMNS: Final = (
    "agent_id",
    "seq",
    "ts",
    "type",
    "category",
    "input",
    "user_key",
    "user",
    "domain",
    "host",
    "host_domain",
    "tz",
    "utc_offset_min",
    "agent_version",
    "app",
    "url_domain",
    "last_input_ts",
    "details",
)

#: Fields stored as columns, hence left out of ``details``: every column but those computed by
#: :func:`raw_row` (which no event has as a field).
_COLUMN_FIELDS: Final = frozenset(RAW_COLUMNS) - {"category", "user_key", "url_domain", "details"}

_json = msgspec.json.Encoder()

RawRow = tuple[Any, ...]

#: URLs longer than this are not kept in :func:`url_domain`'s cache (which then holds at most about
#: 4096 x 2 KiB); they are read each time.
_CACHED_URL_CHARS: Final = 2048


@lru_cache(maxsize=4096)
def _cached_host(url: str) -> str | None:
    return url_host(url) or None


def url_domain(url: str) -> str | None:
    """The host of ``url`` as the agent reads it (:func:`common.urls.url_host`: lower case, a URL without a
    scheme read as ``http://`` the way address bars show it), or None when there is none (empty, opaque
    scheme, ``file:``, malformed). A workstation sends the URL of its window with each of its events, so
    the answers of recent URLs are kept (a third of the sink's row building otherwise)."""
    if len(url) > _CACHED_URL_CHARS:
        return url_host(url) or None
    return _cached_host(url)


@cache
def details_type(cls: type[Envelope]) -> type[msgspec.Struct]:
    """A Struct with the fields of ``cls`` that are not columns (their types, defaults and order), encoded
    as ``cls`` encodes them (defaults left out): what ``details`` holds. Made once per event type.
    Converting an event to it and encoding that is the same JSON as dropping the columns from
    ``msgspec.to_builtins(event)``, at about two thirds of the cost (``tests/test_sinks_units.py``
    checks the equality on generated events of every type)."""
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(cls):
        if f.name in _COLUMN_FIELDS:
            continue
        if f.default is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, f.type))
    return msgspec.defstruct(
        f"{cls.__name__}Details", spec, kw_only=True, omit_defaults=True, gc=False, module=__name__
    )


def raw_row(event: Envelope) -> RawRow:
    """The ``raw_events`` row of ``event`` in :data:`RAW_COLUMNS` order."""
    details = msgspec.convert(event, details_type(type(event)), from_attributes=True)
    app = getattr(event, "app", "") or None
    url = getattr(event, "url", "")
    last_input = event.last_input_ts if isinstance(event, Heartbeat) else None
    return (
        event.agent_id,
        event.seq,
        event.ts,
        event.type,
        type(event).category,
        event.input,
        user_key(event.domain, event.user),
        event.user,
        event.domain,
        event.host,
        event.host_domain,
        event.tz,
        event.utc_offset_min,
        event.agent_version,
        app,
        url_domain(url),
        last_input,
        _json.encode(details).decode("utf-8"),
    )


def days_of(rows: Iterable[RawRow]) -> set[date]:
    """The distinct UTC days (partitions) a batch of raw rows needs."""
    return {row[2].date() for row in rows}


SESSION_COLUMNS: Final = (
    "session_id",
    "user_key",
    "kind",
    "reason",
    "started_at",
    "ended_at",
    "duration_s",
    "hosts",
    "tz",
)

SessionRow = tuple[Any, ...]


def session_row(s: Session) -> SessionRow:
    """The ``sessions`` row of a session record in :data:`SESSION_COLUMNS` order."""
    return (s.session_id, s.user_key, s.kind, s.reason, s.start, s.end, s.duration_s, list(s.hosts), s.tz)


def reduce_sessions(messages: Iterable[SessionMessage]) -> tuple[list[Session], list[str]]:
    """``(upserts, deletes)`` equivalent to applying ``messages`` one by one in order: the last message
    of each ``session_id`` decides whether it ends present (its record) or absent (deleted)."""
    ordered = list(messages)
    written: dict[str, None] = {}  # every id, in the order of its last write
    for msg in ordered:
        written.pop(msg.session_id, None)
        written[msg.session_id] = None
    present = fold_sessions(ordered)
    return list(present.values()), [sid for sid in written if sid not in present]
