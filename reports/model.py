"""The records reports are built from and the rows they return (msgspec Structs, no I/O).

Input records (:class:`SessionSpan`, :class:`LogonAt`, :class:`UiFocusEvent`) are what the queries read from
PostgreSQL; output rows (:class:`DayRow`, :class:`PeriodRow`, :class:`TimelineItem`, :class:`AppUsage`) are
what :class:`reports.service.ReportService` returns and the CLI prints. All datetimes are timezone-aware.
"""

from __future__ import annotations

from datetime import date, datetime

from msgspec import Struct


class SessionSpan(Struct, frozen=True, kw_only=True):
    """One row of ``sessions``: ``kind`` is ``active`` or ``inactive``; ``reason`` ``idle``/``locked``/None;
    ``tz`` the user's IANA zone (an unknown zone name is read as UTC)."""

    user_key: str
    kind: str
    reason: str | None
    start: datetime
    end: datetime
    tz: str = "UTC"


class LogonAt(Struct, frozen=True, kw_only=True):
    """One ``Logon`` raw event, or a legacy client's ``StateChange`` report (that client starts at logon):
    when, and the IANA zone the event carries."""

    user_key: str
    ts: datetime
    tz: str = "UTC"


class UiFocusEvent(Struct, frozen=True, kw_only=True):
    """One UI raw event (``WindowSwitch`` etc.): the window that got the focus at ``ts``.

    ``url`` is only filled when the caller asked for full URLs; otherwise it is None and never read.
    """

    user_key: str
    ts: datetime
    app: str = ""
    domain: str = ""
    url: str | None = None


class DayRow(Struct, kw_only=True):
    """One user's local day.

    Guarantees: ``active_s + idle_s + locked_s == presence_s`` (whole seconds: presence is the day's total
    rounded, the three parts are apportioned to add up to it); ``date`` is the user's local date
    (``YYYY-MM-DD``) in ``tz``; ``first_activity``/``last_activity`` are the start of the day's first and
    the end of its last active piece, ``first_logon`` the first ``Logon`` event or legacy report of that
    local date (a legacy client's first report of a day is its first logon); all
    three are in ``tz`` or None.
    """

    user_key: str
    date: str
    tz: str
    active_s: int
    idle_s: int
    locked_s: int
    presence_s: int
    first_activity: datetime | None
    first_logon: datetime | None
    last_activity: datetime | None


class PeriodRow(Struct, kw_only=True):
    """One user's ISO week (``2026-W47``) or month (``2026-11``), ``start``..``end`` inclusive.

    Guarantees: every sum equals the sum of the same field over ``days`` (the days with data, in date order),
    and ``active_s + idle_s + locked_s == presence_s``.
    """

    user_key: str
    period: str
    start: date
    end: date
    active_s: int
    idle_s: int
    locked_s: int
    presence_s: int
    days: list[DayRow]


class TimelineItem(Struct, kw_only=True):
    """One session clipped to a user's local day: ``kind`` ``active``/``inactive``, ``reason`` None for
    active, else ``idle``/``locked``; ``start``/``end`` in the user's zone; ``duration_s`` = end - start."""

    kind: str
    reason: str | None
    start: datetime
    end: datetime
    duration_s: float


class AppUsage(Struct, kw_only=True):
    """Focus time of one application (and URL domain) inside active sessions.

    ``user_key`` is None when the figures are for everyone; ``url`` is None unless full URLs were asked for.
    """

    user_key: str | None
    app: str
    domain: str
    url: str | None
    focus_s: float
