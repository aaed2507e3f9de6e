"""Application and website use: focus time per application and URL domain. Pure, no I/O.

A focus interval runs from one UI event (``WindowSwitch``, ``WindowOpen``, ...) of a user to that user's next
UI event (any host), capped at the end of the active session the first event lies in. A UI event that lies
in no active session (idle, locked or absent time) starts no focus interval, so focus time is counted only
inside active sessions. Intervals are then clipped to the requested local dates in the session's zone.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import date, timedelta

from reports.compute import day_start, zone
from reports.model import AppUsage, SessionSpan, UiFocusEvent

_MS = timedelta(milliseconds=1)

#: The raw event types that move the focus (``shared/spec/events.md``, UI events).
UI_EVENT_TYPES: tuple[str, ...] = (
    "WindowOpen",
    "DocumentOpen",
    "DocumentSave",
    "SheetOpen",
    "WindowSwitch",
    "WindowUpdate",
)

_Key = tuple[str | None, str, str, str | None]


def focus_usage(
    events: Iterable[UiFocusEvent],
    sessions: Iterable[SessionSpan],
    start: date,
    end: date,
    show_urls: bool = False,
    per_user: bool = True,
) -> list[AppUsage]:
    """Focus time per (user, application, domain[, url]) over local dates ``start``..``end`` (inclusive).

    ``sessions`` may contain inactive sessions; only active ones are used. With ``per_user=False`` the
    figures of every user are added up under ``user_key=None``. With ``show_urls=False`` the ``url`` of the
    events is ignored and every row has ``url=None``. Rows are sorted by focus time, largest first.
    """
    active: dict[str, list[SessionSpan]] = {}
    for s in sessions:
        if s.kind == "active":
            active.setdefault(s.user_key, []).append(s)
    for user_spans in active.values():
        user_spans.sort(key=lambda s: s.start)
    by_user: dict[str, list[UiFocusEvent]] = {}
    for ev in events:
        by_user.setdefault(ev.user_key, []).append(ev)

    totals: dict[_Key, int] = {}
    for user, evs in by_user.items():
        spans = active.get(user)
        if not spans:
            continue
        starts = [s.start for s in spans]
        evs.sort(key=lambda e: e.ts)  # stable: the caller's order breaks ties
        for i, ev in enumerate(evs):
            k = bisect.bisect_right(starts, ev.ts) - 1
            if k < 0 or ev.ts > spans[k].end:
                continue
            span = spans[k]
            stop = span.end if i + 1 == len(evs) else min(span.end, evs[i + 1].ts)
            z = zone(span.tz)
            lo = max(ev.ts, day_start(start, z))
            hi = min(stop, day_start(end + timedelta(days=1), z))
            if hi <= lo:
                continue
            key: _Key = (
                user if per_user else None,
                ev.app,
                ev.domain,
                ev.url if show_urls else None,
            )
            totals[key] = totals.get(key, 0) + (hi - lo) // _MS
    rows = [
        AppUsage(user_key=u, app=app, domain=dom, url=url, focus_s=ms / 1000)
        for (u, app, dom, url), ms in totals.items()
    ]
    rows.sort(key=lambda r: (-r.focus_s, r.user_key or "", r.app, r.domain, r.url or ""))
    return rows
