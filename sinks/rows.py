"""Pure conversions from decoded records to table rows. No I/O, no clock.

- :func:`raw_row`: one raw event -> one ``raw_events`` row (:data:`RAW_COLUMNS` order): the envelope as
  columns, a few UI columns (``app``, ``url_domain``), the type-specific rest as a JSON text for ``details``.
- :func:`reduce_sessions`: session-topic messages in topic order -> the final upserts and deletes, last
  write per ``session_id`` winning (a retraction after an upsert deletes; an upsert after a retraction
  re-creates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any, Final, NamedTuple

import msgspec
from msgspec.structs import astuple

from common.urls import url_host
from proto.events import Envelope
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


#: The fields every event starts with (:class:`proto.events.Envelope`'s, in declaration order): the first
#: values of ``msgspec.structs.astuple(event)`` for every type, which :func:`row_plan` checks.
#: :func:`raw_row` reads them by position (``tests/test_sinks_units.py`` checks every column by name).
_ENVELOPE_FIELDS: Final = tuple(f.name for f in msgspec.structs.fields(Envelope))


class RowPlan(NamedTuple):
    """How :func:`raw_row` turns one event type's values (``msgspec.structs.astuple`` order) into a row.

    ``details`` is a positional Struct of the non-column fields (their types, defaults and order), which
    encodes exactly as the event encodes those fields (defaults left out); ``pick_details`` takes their
    values out of the tuple. ``app``, ``url`` and ``last_input_ts`` are the positions of those fields, or
    None when the type has none."""

    type_name: str
    category: str
    details: type[msgspec.Struct]
    pick_details: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    app: int | None
    url: int | None
    last_input_ts: int | None


def _picker(positions: list[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A function returning the values at ``positions`` as a tuple (``itemgetter`` returns a bare value
    for one position)."""
    if len(positions) == 1:
        (only,) = positions
        return lambda values: (values[only],)
    if not positions:
        return lambda values: ()
    return itemgetter(*positions)


@cache
def row_plan(cls: type[Envelope]) -> RowPlan:
    """The :class:`RowPlan` of an event type, made once per type. Raises ``TypeError`` if ``cls`` does not
    start with the envelope's fields (a subclass that redeclared one would move it)."""
    fields = msgspec.structs.fields(cls)
    names = [f.name for f in fields]
    if tuple(names[: len(_ENVELOPE_FIELDS)]) != _ENVELOPE_FIELDS:
        raise TypeError(f"{cls.__name__} does not start with the envelope's fields")
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    positions: list[int] = []
    for i, f in enumerate(fields):
        if f.name in _COLUMN_FIELDS:
            continue
        positions.append(i)
        if f.default is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, f.type))
    details = msgspec.defstruct(
        f"{cls.__name__}Details", spec, omit_defaults=True, gc=False, module=__name__
    )

    def position(name: str) -> int | None:
        return names.index(name) if name in names else None

    return RowPlan(
        cls.__name__,
        cls.category,
        details,
        _picker(positions),
        position("app"),
        position("url"),
        position("last_input_ts"),
    )


def raw_row(event: Envelope) -> RawRow:
    """The ``raw_events`` row of ``event`` in :data:`RAW_COLUMNS` order.

    The event's values are read in one call (``astuple``) and ``details`` is encoded from a Struct of
    the non-column fields: about half the cost of reading each attribute and converting the event
    (``docs/stream-performance.md``)."""
    plan = row_plan(type(event))
    v = astuple(event)
    app = plan.app
    url = plan.url
    last = plan.last_input_ts
    return (
        v[0],  # agent_id
        v[1],  # seq
        v[2],  # ts
        plan.type_name,
        plan.category,
        v[3],  # input
        user_key(v[5], v[4]),
        v[4],  # user
        v[5],  # domain
        v[6],  # host
        v[7],  # host_domain
        v[8],  # tz
        v[9],  # utc_offset_min
        v[10],  # agent_version
        None if app is None else (v[app] or None),
        None if url is None else url_domain(v[url]),
        None if last is None else v[last],
        _json.encode(plan.details(*plan.pick_details(v))).decode("utf-8"),
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
