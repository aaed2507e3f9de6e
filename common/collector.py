"""Garbage-collector settings for the processes that allocate millions of short-lived objects per second."""

from __future__ import annotations

import gc


def tune_for_throughput() -> None:
    """Freeze what start-up created (later collections skip it) and collect the youngest generation every
    50,000 allocations instead of 700. The stream worker and ``desktrace-sessionize`` allocate records and
    decoded events that are short-lived and acyclic (msgspec structs without GC tracking): the default
    thresholds spent about 7-10% of their CPU in collections (``docs/stream-performance.md``). Cycles are
    still found, less often."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
