"""The lateness horizon shared by every service that accepts events (one setting, one set of defaults).

- ``retention`` (seconds, ``DESKTRACE_RETENTION``): the stream keeps this much event time per user,
  measured back from the user's *latest event*; older events are dead-lettered as ``late``.
- ``raw_retention_days`` (``DESKTRACE_RAW_RETENTION_DAYS``): the raw sink drops events older than this
  many days before *today* (0 keeps everything).
- :data:`MAX_FUTURE`: the gateway refuses a legacy report further ahead of its clock than this.

:func:`accepted_since` is the oldest ``ts`` the gateway may acknowledge so that neither the stream nor the
raw sink drops the event: a user's latest event can be up to :data:`MAX_FUTURE` ahead of the gateway's
clock, so the stream's horizon can lie ``retention - MAX_FUTURE`` before now. Pure (callers pass ``now``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

DEFAULT_RETENTION_S: Final = 3 * 86400.0
DEFAULT_RAW_RETENTION_DAYS: Final = 400
MAX_FUTURE: Final = timedelta(days=1)


def accepted_since(now: datetime, retention_s: float, raw_retention_days: int) -> datetime:
    """The oldest event time that both the stream (``retention_s`` back from a user's latest event, which
    is at most :data:`MAX_FUTURE` ahead of ``now``) and the raw sink (``raw_retention_days`` before today,
    0 = forever) still keep."""
    oldest = now + MAX_FUTURE - timedelta(seconds=retention_s)
    if raw_retention_days > 0:
        today = now.astimezone(UTC).date()
        raw_oldest = datetime.combine(today - timedelta(days=raw_retention_days), datetime.min.time(), UTC)
        oldest = max(oldest, raw_oldest)
    return oldest
