"""Publishing dead letters back to the raw topics they came from (``desktrace-replay --dead-letters``).

A raw event is dead-lettered with its bytes as received (``proto.deadletter``); the stream dead-letters a
user's events when the sessionizer fails on that user, the sinks the records the database refused. Once
the cause is fixed (a new release), an operator sends those events through the pipeline again: each
selected dead letter is published, its key and bytes unchanged, to the raw topic named in its
``desktrace-source-topic`` header. The consumers drop events they already have (by ``agent_id`` and
``seq``), so a redrive run twice, or one that stopped half-way and is run again, changes nothing more.

What is read: the dead-letter topic from its start (or from ``--since``), up to its end as of the start of
the run, so the dead letters of a cause that is still there come back once, not in a loop. What is skipped
(and counted): error classes not asked for (``other`` by default: the classes of a bad record,
``undecodable``, ``invalid``..., would fail the same way again), dead letters whose source is not a raw
topic of this pipeline (a session record the broker refused), and truncated ones (only their head was
kept).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

from proto.deadletter import (
    HEADER_ERROR_CLASS,
    HEADER_SERVICE,
    HEADER_SOURCE_TOPIC,
    HEADER_TRUNCATED,
    header_map,
)
from stream.replay import (
    CHUNK,
    Progress,
    ReplayStats,
    RetryBudget,
    publish_chunk,
)

#: Why a dead letter was not published again (the counts' keys).
SKIP_CLASS = "error class not selected"
SKIP_SERVICE = "service not selected"
SKIP_SOURCE = "not from a raw topic"
SKIP_TRUNCATED = "truncated (only its head was kept)"
SKIP_TIME = "dead-lettered after --until"


class ReadStalled(Exception):
    """The dead-letter topic delivered nothing for ``max_wait_s`` before its end was reached."""


@dataclass(frozen=True)
class DeadLetterSelection:
    """Which dead letters go back to their raw topic.

    Guarantees: a dead letter is selected only when it is whole (not truncated), its source topic is one of
    ``raw_topics``, its error class is in ``classes``, its service in ``services`` (when given) and its
    record timestamp (when it was dead-lettered) at or before ``until_ms`` (when given); otherwise
    :meth:`skip_reason` says which of these it failed, in that order."""

    raw_topics: frozenset[str]
    classes: frozenset[str] = frozenset({"other"})
    services: frozenset[str] | None = None
    until_ms: int | None = None

    def skip_reason(self, headers: Mapping[str, str], timestamp_ms: int | None) -> str | None:
        if HEADER_TRUNCATED in headers:
            return SKIP_TRUNCATED
        if headers.get(HEADER_SOURCE_TOPIC) not in self.raw_topics:
            return SKIP_SOURCE
        if headers.get(HEADER_ERROR_CLASS) not in self.classes:
            return SKIP_CLASS
        if self.services is not None and headers.get(HEADER_SERVICE) not in self.services:
            return SKIP_SERVICE
        if self.until_ms is not None and timestamp_ms is not None and timestamp_ms > self.until_ms:
            return SKIP_TIME
        return None


@dataclass
class RedriveStats(ReplayStats):
    """Counts of one redrive: ``line`` is the number of dead letters read; ``published`` and ``rejected``
    (by Kafka) count the selected ones."""

    skipped: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False  #: nothing was published: ``published`` counts what would have been
    position_label: ClassVar[str] = "dead letters read:"

    def counts(self) -> str:
        if self.dry_run:
            return f"{self.published} to publish, {sum(self.skipped.values())} skipped"
        return f"{self.published} published, {self.rejected} rejected, {sum(self.skipped.values())} skipped"

    def summary(self) -> str:
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items())) or "none"
        skipped = "; ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items())) or "none"
        verb = "would publish" if self.dry_run else "published"
        return (f"read {self.line} dead letters: {verb} {self.published} events again ({topics}), "
                f"rejected {self.rejected}; skipped {sum(self.skipped.values())} ({skipped})")


async def redrive(
    consumer: Any,
    producer: Any | None,
    deadletter_topic: str,
    partitions: Iterable[int],
    selection: DeadLetterSelection,
    err: IO[str],
    progress: Progress | None = None,
    *,
    since_ms: int | None = None,
    max_wait_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> RedriveStats:
    """Read ``deadletter_topic`` (its ``partitions``) with ``consumer`` (started, aiokafka-like, no group,
    no subscription) from its start, or from the first dead letter at ``since_ms`` or later, up to its end
    offsets as of now, and publish the dead letters ``selection`` selects with ``producer`` (None: count
    only, publish nothing). Raises :class:`stream.replay.PublishFailed` like the replay of a file, and
    :class:`ReadStalled` when nothing can be read for ``max_wait_s`` before the end."""
    from aiokafka import TopicPartition

    stats = RedriveStats(dry_run=producer is None)
    tps = [TopicPartition(deadletter_topic, p) for p in sorted(partitions)]
    if not tps:
        return stats
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    await consumer.seek_to_beginning(*tps)
    if since_ms is not None:
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        for tp in tps:
            at = found.get(tp)
            if at is None:  # nothing dead-lettered since then in this partition
                consumer.seek(tp, ends[tp])
            else:
                consumer.seek(tp, at.offset)
    budget = RetryBudget(max_wait_s, 0.5, 10.0)
    where: dict[int, tuple[int, int]] = {}  #: the chunk's dead letters: position -> (partition, offset)
    chunk: list[tuple[int, str, bytes, bytes]] = []

    def describe(n: int) -> str:
        partition, offset = where[n]
        return f"dead letter at partition {partition} offset {offset}"

    pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
    last_read = clock()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=1000)
        if batch:
            last_read = clock()
        elif clock() - last_read > max_wait_s:
            raise ReadStalled(f"no dead letter read for {max_wait_s:.0f}s with {len(pending)} partition(s) "
                              "still to read")
        for tp, records in batch.items():
            for rec in records:
                if rec.offset >= ends[tp]:
                    break
                stats.line += 1
                headers = header_map(rec.headers)
                reason = selection.skip_reason(headers, rec.timestamp)
                if reason is not None:
                    stats.skipped[reason] += 1
                    continue
                if producer is None:
                    stats.published += 1
                    topic = headers[HEADER_SOURCE_TOPIC]
                    stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1
                    continue
                where[stats.line] = (tp.partition, rec.offset)
                chunk.append((stats.line, headers[HEADER_SOURCE_TOPIC], rec.key, rec.value))
                if len(chunk) >= CHUNK:
                    await publish_chunk(chunk, producer, stats, err, budget, describe)
                    chunk, where = [], {}
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
        if progress:
            progress.update(stats)
    if chunk:
        await publish_chunk(chunk, producer, stats, err, budget, describe)
    if progress:
        progress.update(stats, force=True)
    return stats
