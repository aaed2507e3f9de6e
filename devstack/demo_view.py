"""The demo's progress display: progress bars on a terminal (``rich``), plain lines otherwise.

Two pieces of long work are shown: the simulated fleet (its simulated clock within the day and the events
it sent) and the pipeline's writing (raw rows in PostgreSQL against the events sent, and sessions). On a
terminal they are live bars on stderr; otherwise (a pipe, a CI log) a line at most every few seconds and
whenever the work finishes, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

Mode = Literal["auto", "bar", "plain"]

#: Seconds between two plain progress lines of the same kind.
PLAIN_EVERY_S = 5.0


def say(text: str) -> None:
    """One line of the demo's narration on stderr."""
    print(f"desktrace-demo: {text}", file=sys.stderr, flush=True)


class DemoView:
    """Shows the fleet's and the pipeline's progress; use as a context manager around the long work.

    ``mode``: ``bar`` (live bars), ``plain`` (lines), ``auto`` (bars when stderr is a terminal)."""

    def __init__(self, mode: Mode = "auto") -> None:
        self.console = Console(stderr=True)
        self.bars = mode == "bar" or (mode == "auto" and self.console.is_terminal)
        self._progress: Progress | None = None
        self._fleet: TaskID | None = None
        self._stored: TaskID | None = None
        self._last_plain: dict[str, float] = {}
        self._last_text: dict[str, str] = {}

    def __enter__(self) -> DemoView:
        if self.bars:
            self._progress = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._fleet = self._progress.add_task("fleet", total=1, detail="starting")
            self._stored = self._progress.add_task("written", total=1, detail="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _plain(self, kind: str, text: str, force: bool) -> None:
        now = time.monotonic()
        if text == self._last_text.get(kind):
            return
        if force or now - self._last_plain.get(kind, -PLAIN_EVERY_S) >= PLAIN_EVERY_S:
            self._last_plain[kind] = now
            self._last_text[kind] = text
            say(text)

    def fleet(
        self, sim_now: datetime, start: datetime, end: datetime, produced: int, sent: int, done: bool = False
    ) -> None:
        """The fleet's simulated clock is at ``sim_now`` of ``start``..``end``; events produced and sent."""
        total = max(1.0, (end - start).total_seconds())
        at = min(total, max(0.0, (sim_now - start).total_seconds()))
        detail = f"simulated clock {sim_now:%Y-%m-%d %H:%M} UTC, events sent {sent} of {produced}"
        if self._progress is not None and self._fleet is not None:
            self._progress.update(self._fleet, total=total, completed=at, detail=detail)
        else:
            self._plain("fleet", f"fleet: {100 * at / total:.0f}% of the day, {detail}", done)

    def stored(self, raw_rows: int, expected: int, sessions: int, done: bool = False) -> None:
        """PostgreSQL holds ``raw_rows`` of the ``expected`` events and ``sessions`` sessions."""
        detail = f"raw rows {raw_rows} of {expected} events sent, sessions {sessions}"
        if self._progress is not None and self._stored is not None:
            self._progress.update(
                self._stored, total=max(1, expected, raw_rows), completed=raw_rows, detail=detail
            )
        else:
            self._plain("stored", f"written: {detail}", done)
