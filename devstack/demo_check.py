"""The demo's check of its own result: counts from every stage and what they say went wrong (pure).

The stages, in order: events the simulated fleet produced into its spool, events Kafka acknowledged to the
fleet's shipper (``sent``), messages in the raw topics, raw rows in PostgreSQL, sessions, and report rows
with active time per simulated user. The first stage that holds less than the one before is named, with
every count, so an empty fleet is never reported as a problem of the sessions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageCounts:
    """What each stage of one demo run holds. ``None`` = not measured (e.g. Kafka could not be asked)."""

    users: int
    produced: int = 0
    sent: int = 0
    in_kafka: int | None = None
    deadlettered: int | None = None
    raw_rows: int = 0
    sessions: int = 0
    users_with_activity: int | None = None

    def line(self) -> str:
        """One line with every count, e.g. for the demo's summary."""
        kafka = "?" if self.in_kafka is None else str(self.in_kafka)
        parts = [
            f"events produced by the fleet {self.produced}",
            f"sent to Kafka {self.sent}",
            f"in the raw topics {kafka}",
        ]
        if self.deadlettered:
            parts.append(f"dead-lettered {self.deadlettered}")
        parts += [f"raw rows in PostgreSQL {self.raw_rows}", f"sessions {self.sessions}"]
        if self.users_with_activity is not None:
            parts.append(f"users with active time {self.users_with_activity} of {self.users}")
        return ", ".join(parts)


def problem(c: StageCounts) -> str | None:
    """What is wrong with a finished run (None when every stage holds what the one before passed on)."""
    if c.produced == 0:
        return (
            f"the simulated fleet produced no events ({c.users} users): nothing could reach the pipeline; "
            "check --date and --zones"
        )
    if c.sent < c.produced:
        return (
            f"the fleet sent only {c.sent} of the {c.produced} events it produced to Kafka "
            "(the rest stayed in its spool: is Kafka reachable?)"
        )
    if c.in_kafka is not None and c.in_kafka < c.sent:
        return f"the raw topics hold only {c.in_kafka} of the {c.sent} events the fleet sent"
    if c.raw_rows < c.sent:
        lost = c.sent - c.raw_rows
        where = f"; {c.deadlettered} went to the dead-letter topic" if c.deadlettered else ""
        return (
            f"PostgreSQL stored {c.raw_rows} raw rows of the {c.sent} events the fleet sent "
            f"({lost} missing{where}): see the raw sink's log"
        )
    if c.sessions == 0:
        return (
            f"the stream made no sessions from {c.raw_rows} raw events: "
            "see the stream's and the sessions sink's logs"
        )
    if c.users_with_activity is not None and c.users_with_activity < c.users:
        return (
            f"the report shows active time for only {c.users_with_activity} of the {c.users} simulated users"
        )
    return None
