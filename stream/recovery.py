"""A table recovery that stopped making progress (pure: the caller gives the clock and what Faust reports).

Faust's recovery waits until every assigned changelog partition has been read to the highwater it noted at
the start; it has no deadline. Should the records of a partition never arrive (a bug: see
``docs/stream-performance.md``, "Why at-least-once still holds", item 6), the worker would stay
assigned and never process those partitions, only logging "No event received for active tp ..." every
five seconds. :class:`RecoveryWatch` tells the worker when to give up instead: it exits, its supervisor
restarts it, and the rebalance that follows starts a fresh recovery (here or on another member).
"""

from __future__ import annotations


class RecoveryWatch:
    """Says a recovery is stalled once it has read nothing for ``stall_s`` seconds while it still has
    records to read.

    Guarantees: never stalled while not recovering or with ``stall_s`` 0; any change of ``progress`` (the
    sum of the offsets read so far) or of ``generation`` (the consumer group's generation: a rebalance)
    restarts the count; a new recovery (not recovering in between) starts it afresh. A long recovery that
    keeps reading is never stalled, however long it takes, nor is a worker in a rebalance storm (every
    rebalance restarts its recovery; exiting would only add one more)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._seen: tuple[int, int] | None = None
        self._since = 0.0

    def stalled(self, now: float, recovering: bool, progress: int, generation: int = 0) -> bool:
        """Whether the recovery observed at ``now`` (seconds, any monotonic clock) is stalled."""
        if not recovering or self.stall_s <= 0:
            self._seen = None
            return False
        if (generation, progress) != self._seen:
            self._seen, self._since = (generation, progress), now
            return False
        return now - self._since >= self.stall_s

    def stalled_for(self, now: float) -> float:
        """Seconds since the recovery last read something (0 when not recovering)."""
        return 0.0 if self._seen is None else now - self._since
