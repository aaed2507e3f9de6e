"""The legacy client's report -> a :class:`proto.events.StateChange`. Pure: the caller passes ``now``.

Identity of an event (``(agent_id, seq)``, ``shared/spec/events.md``) is made deterministic so that a client
retrying a report creates no duplicate, on any number of gateway replicas:

- ``agent_id`` = uuid5(:data:`LEGACY_AGENT_NAMESPACE`, user key): one virtual "agent" per legacy user;
- ``seq`` = the report's ``ts`` in milliseconds since the epoch.

Limits (documented in ``docs/gateway.md``): two different reports of one user in the same millisecond share
an id (the second is dropped downstream as a duplicate); ``seq`` is not contiguous (consumers only use it to
deduplicate); a report *without* ``ts`` gets the server time, so its retries differ: :class:`RetryMemory`
treats the same user and state again within a short window as the same report.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from common.horizon import MAX_FUTURE
from proto.clock import epoch_ms, from_epoch_ms
from proto.events import StateChange, to_utc_ms
from proto.keys import user_key

#: Namespace of the legacy users' agent ids (uuid5 of the user key).
LEGACY_AGENT_NAMESPACE: Final = uuid.UUID("0e9c1d64-7d52-4b4c-93f1-2b8f0b6c4a17")
AGENT_VERSION: Final = "desktrace-gateway/0.1.0"
#: Reports older than this or further in the future than :data:`MAX_FUTURE` are refused.
MIN_TS: Final = datetime(2000, 1, 1, tzinfo=UTC)
#: How Windows PowerShell 5.1's ConvertTo-Json writes a [DateTime]: "\/Date(1732780800000)\/" (UTC ms).
_MS_DATE = re.compile(r"^/Date\((-?\d{1,15})(?:[+-]\d{4})?\)/$")
_LOGIN = re.compile(r"^[^\x00-\x1f\x7f-\x9f\\/]{1,256}$")
_DOMAIN = re.compile(r"^[^\x00-\x1f\x7f-\x9f\\/]{1,256}$")

#: Rejection reasons (the bounded label set of ``desktrace_gateway_rejected_total``).
REJECT_REASONS: Final = (
    "malformed_json",
    "invalid_encoding",
    "body_too_large",
    "incomplete_body",
    "invalid_body",
    "invalid_user",
    "invalid_ts",
    "ts_out_of_range",
    "ts_too_old",
    "forbidden_network",
    "forbidden_user",
    "unauthorized",
)


class LegacyReport(msgspec.Struct, forbid_unknown_fields=False):
    """The body of the seed's ``POST /api/report``. Unknown fields are ignored (older clients may send
    more)."""

    user: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=513,
            description="Windows login, or DOMAIN\\login (the domain then replaces the configured one)",
            examples=["jdoe", "CORP\\jdoe"],
        ),
    ]
    state: Annotated[
        Literal["working", "stopped"], msgspec.Meta(description="'working' or 'stopped' (5-minute idle rule)")
    ]
    ts: Annotated[
        str | None,
        msgspec.Meta(
            description="ISO 8601 time of the change; without an offset it is read in the gateway's "
            "legacy_tz; absent: the server's time",
            examples=["2023-07-08T12:30:45Z"],
        ),
    ] = None


class LegacyAck(msgspec.Struct):
    """What the seed's client expects on success."""

    success: bool = True


class LegacyError(msgspec.Struct):
    """A refused report: ``success`` false and a message saying what to fix."""

    success: bool
    error: str
    reason: str


class ReportRejected(ValueError):
    """A report that cannot become an event; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def split_user(user: str, default_domain: str) -> tuple[str, str]:
    """``(domain, login)`` of ``user`` (``login`` or ``DOMAIN\\login``), in Unicode NFC (a decomposed "é" from
    one client and a precomposed one from another are the same user); raises :class:`ReportRejected`."""
    text = unicodedata.normalize("NFC", user.strip())
    domain, sep, login = text.rpartition("\\")
    if not sep:
        domain = default_domain
    if not _LOGIN.match(login) or not _DOMAIN.match(domain) or "\\" in domain:
        raise ReportRejected(
            "user must be a login or DOMAIN\\login: 1-256 characters each, no control characters, "
            "slashes or extra backslashes",
            "invalid_user",
        )
    return domain, login


def parse_ts(text: str, zone: ZoneInfo) -> datetime:
    """An ISO 8601 time (a naive one is read in ``zone``), or ``/Date(ms)/`` as Windows PowerShell 5.1's
    ``ConvertTo-Json`` writes a ``[DateTime]`` (milliseconds since the epoch, UTC). Raises
    :class:`ReportRejected`."""
    raw = text.strip()
    ms_date = _MS_DATE.match(raw)
    if ms_date:
        try:
            return to_utc_ms(from_epoch_ms(int(ms_date.group(1))))
        except (OverflowError, ValueError):
            raise ReportRejected("ts is outside the supported range", "ts_out_of_range") from None
    if raw.endswith(("z", "Z")):
        raw = raw[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise ReportRejected(
            "ts must be an ISO 8601 date and time, e.g. 2023-07-08T12:30:45Z", "invalid_ts"
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=zone)
    try:
        return to_utc_ms(ts)
    except (OverflowError, ValueError):
        raise ReportRejected("ts is outside the supported range", "ts_out_of_range") from None


def legacy_agent_id(key: str) -> str:
    """The deterministic agent id of a legacy user key."""
    return str(uuid.uuid5(LEGACY_AGENT_NAMESPACE, key))


def to_event(
    report: LegacyReport,
    *,
    now: datetime,
    default_domain: str,
    zone: ZoneInfo,
    host: str,
    oldest: datetime = MIN_TS,
) -> StateChange:
    """The :class:`StateChange` of ``report``; raises :class:`ReportRejected` with a clear message. A ``ts``
    before ``oldest`` (the lateness horizon, :func:`common.horizon.accepted_since`) is ``ts_too_old``."""
    domain, login = split_user(report.user, default_domain)
    ts = to_utc_ms(now) if report.ts is None else parse_ts(report.ts, zone)
    if ts < MIN_TS or ts > now + MAX_FUTURE:
        raise ReportRejected(
            f"ts must lie between {MIN_TS:%Y-%m-%d} and one day after the server's time", "ts_out_of_range"
        )
    if ts < oldest:
        raise ReportRejected(
            f"ts is older than {oldest:%Y-%m-%dT%H:%M:%SZ}, the oldest time the pipeline still counts "
            "(retention): this report would not count, so it is not stored",
            "ts_too_old",
        )
    key = user_key(domain, login)
    offset = ts.astimezone(zone).utcoffset()
    return StateChange(
        agent_id=legacy_agent_id(key),
        seq=epoch_ms(ts),
        ts=ts,
        input="none",
        user=login,
        domain=domain,
        host=host or "legacy",
        tz=zone.key,
        utc_offset_min=int(offset.total_seconds() // 60) if offset is not None else 0,
        agent_version=AGENT_VERSION,
        state=report.state,
    )


class RetryMemory:
    """Recognises retries, so that they are acknowledged without publishing the event again.

    A report *with* ``ts`` has a deterministic ``(agent_id, seq)``: the ids this process published are
    remembered. A report *without* ``ts`` gets the server time, so it is recognised by user key and state:
    the same again within ``window`` is the same report. Both memories are bounded (``max_entries``, least
    recently used dropped first) and per process; across processes and restarts, consumers still
    deduplicate by ``(agent_id, seq)``. Clock-free (callers pass ``now``)."""

    def __init__(self, window: timedelta, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[str, tuple[datetime, StateChange]] = OrderedDict()
        self._ids: OrderedDict[tuple[str, int], None] = OrderedDict()

    def published(self, event: StateChange) -> bool:
        """Whether this process already published an event with ``event``'s ``(agent_id, seq)``: a retry
        of a report with the same ``ts``, answered without publishing it again."""
        key = (event.agent_id, event.seq)
        if key in self._ids:
            self._ids.move_to_end(key)
            return True
        return False

    def mark_published(self, event: StateChange) -> None:
        self._ids[(event.agent_id, event.seq)] = None
        while len(self._ids) > self.max_entries:
            self._ids.popitem(last=False)

    def recall(self, key: str, state: str, now: datetime) -> StateChange | None:
        """The event accepted for ``key`` within the window if it had the same ``state``."""
        hit = self._seen.get(key)
        if hit is None:
            return None
        at, event = hit
        if now - at > self.window or event.state != state:
            return None
        return event

    def remember(self, key: str, event: StateChange, now: datetime) -> None:
        """Record ``event`` (published) as the latest ts-less report of ``key``."""
        self._seen[key] = (now, event)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)

    def forget(self, key: str) -> None:
        """Drop ``key`` (a report with an explicit ts arrived: later ts-less reports are new)."""
        self._seen.pop(key, None)
