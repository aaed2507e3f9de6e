"""The redrive's selection and its stall guard, without a broker (the broker path: ``tests/test_replay.py``
and ``tests/test_stream_deadletter.py``)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from proto.deadletter import deadletter_headers, deadletter_record, header_map
from stream.redrive import (
    SKIP_CLASS,
    SKIP_SERVICE,
    SKIP_SOURCE,
    SKIP_TIME,
    SKIP_TRUNCATED,
    DeadLetterSelection,
    ReadStalled,
    redrive,
)

RAW = frozenset({"desktrace.events.ui.v1"})


def headers(error_class: str = "other", service: str = "stream", source: str = "desktrace.events.ui.v1",
            size: int = 10) -> dict[str, str]:
    dl = deadletter_record(b"k", b"x" * size, deadletter_headers("e", error_class, service, source, 0, 1))
    return header_map(dl.headers)


@pytest.mark.parametrize(("letter", "selection", "reason"), [
    (headers(), DeadLetterSelection(RAW), None),
    (headers(size=2_000_000), DeadLetterSelection(RAW), SKIP_TRUNCATED),
    (headers(source="desktrace.sessions.v1"), DeadLetterSelection(RAW), SKIP_SOURCE),
    (headers("invalid"), DeadLetterSelection(RAW), SKIP_CLASS),
    (headers("invalid"), DeadLetterSelection(RAW, frozenset({"invalid"})), None),
    (headers(service="sink-raw"), DeadLetterSelection(RAW, services=frozenset({"stream"})), SKIP_SERVICE),
    (headers(), DeadLetterSelection(RAW, until_ms=999), SKIP_TIME),
])
def test_a_dead_letter_goes_back_only_when_whole_from_a_raw_topic_and_selected(
    letter: dict[str, str], selection: DeadLetterSelection, reason: str | None
) -> None:
    assert selection.skip_reason(letter, 1000) == reason


class _SilentConsumer:
    """A consumer whose partition has records left (end 5, position 0) and never delivers any."""

    def assign(self, tps: Any) -> None:
        self.tps = tps

    async def end_offsets(self, tps: Any) -> dict[Any, int]:
        return {tp: 5 for tp in tps}

    async def seek_to_beginning(self, *tps: Any) -> None:
        return None

    async def position(self, tp: Any) -> int:
        return 0

    async def getmany(self, *tps: Any, timeout_ms: int = 0) -> dict[Any, list[Any]]:
        return {}


def test_a_redrive_that_reads_nothing_gives_up_after_max_wait() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # each look at the clock: one more second without a record
        return now[0]

    with pytest.raises(ReadStalled, match="no dead letter read for 5s"):
        asyncio.run(redrive(_SilentConsumer(), None, "dl", [0], DeadLetterSelection(RAW), io.StringIO(),
                            max_wait_s=5.0, clock=clock))


@pytest.mark.parametrize(("dry_run", "line"), [
    (True, "desktrace-replay: 3 to publish, 1 skipped, dead letters read: 4\n"),
    (False, "desktrace-replay: 3 published, 0 rejected, 1 skipped, dead letters read: 4\n"),
])
def test_a_long_redrive_shows_its_progress_in_dead_letters(dry_run: bool, line: str) -> None:
    """Off a terminal, a plain line every ``every_s``; what a dry run would publish is not "published"."""
    from stream.redrive import RedriveStats
    from stream.replay import Progress

    out = io.StringIO()
    stats = RedriveStats(published=3, line=4, dry_run=dry_run)
    stats.skipped[SKIP_CLASS] += 1
    Progress(out, enabled=False, every_s=0.0).update(stats)
    assert out.getvalue() == line
