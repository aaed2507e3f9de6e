"""Retry delays: one exponential backoff for every service that retries (pure, no clock, no I/O)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff: the n-th delay since :meth:`reset` is ``initial * 2**n`` capped at ``maximum``.

    With ``jitter`` each delay is drawn uniformly between ``initial / 2`` and that ceiling instead, so that
    many clients retrying the same outage (a fleet of agents) do not come back in step. ``initial`` is at
    least 10 ms and ``maximum`` at least ``initial``."""

    def __init__(
        self, initial: float, maximum: float, *, jitter: bool = False, rng: random.Random | None = None
    ) -> None:
        self.initial = max(initial, 0.01)
        self.maximum = max(maximum, self.initial)
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.maximum, self.initial * 2 ** min(self.attempt, 60))
        self.attempt += 1
        return self.rng.uniform(self.initial / 2, ceiling) if self.jitter else ceiling

    def reset(self) -> None:
        """After a success: the next delay is ``initial`` again."""
        self.attempt = 0
