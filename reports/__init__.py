"""desktrace reports: working-time figures per user and local day from the PostgreSQL tables.

The row types are re-exported here; the database API is :class:`reports.service.ReportService` (imported
from its module so that the pure core, ``reports.compute``, never pulls in a database driver).
"""

from reports.model import AppUsage, DayRow, PeriodRow, TimelineItem

__all__ = ["AppUsage", "DayRow", "PeriodRow", "TimelineItem"]
