"""``desktrace-replay FILE... | -``: publish JSON Lines events to the raw topics, as agents would.

Each valid line is encoded with the agents' codec (msgpack), keyed by its user key and sent to its raw topic
(``Topics(prefix).for_event``). An invalid line is reported on stderr with its file, line number and the
decoder's error (never the line's content), counted, and skipped; the valid lines are still published.

Transient broker trouble (connection lost, timeouts, leader moves) is retried with exponential backoff
for at most ``--max-wait`` seconds after the first failure, each attempt waiting at most that long too;
a permanent refusal of one line (too large, invalid, unauthorized topic:
``common.kafka.produce_error_kind``) rejects that line like an invalid one. If publishing fails for
good, the tool says how many events were published and the line to resume from (``--from-line N``, lines
counted across the inputs in the order given); resuming may publish a few events again, which the pipeline
deduplicates by ``(agent_id, seq)``.

Exit codes: 0 every line was valid and published; 1 some lines were rejected (the valid ones were
published); 2 usage error, unreadable file or Kafka unreachable / publishing failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from common.kafka import (
    MAX_REQUEST_SIZE,
    ProduceErrorKind,
    client_options,
    connection_problem,
    produce_error_kind,
    produce_error_name,
)
from common.logs import setup_logging
from common.settings import KafkaSettings, SettingsError, add_arguments, load
from proto.clock import epoch_ms
from proto.codec import EventDecodeError, encode_event, read_jsonl
from proto.deadletter import ERROR_CLASSES
from proto.keys import event_user_key
from proto.topics import Topics

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2
#: Events sent before their acknowledgements are awaited (one chunk).
CHUNK = 1000
#: How long one send may stay unacknowledged (aiokafka retries inside it) before the replay's own retry.
REQUEST_TIMEOUT_MS = 15000
#: The shortest wait for acknowledgements of one attempt, however little of ``--max-wait`` is left.
MIN_ATTEMPT_S = 1.0


class PublishFailed(Exception):
    """Publishing stopped for good; ``resume_line`` is the first line not known to be published."""

    def __init__(self, message: str, resume_line: int, stats: ReplayStats) -> None:
        super().__init__(message)
        self.resume_line = resume_line
        self.stats = stats

    def progress(self) -> str:
        return (f"{self.stats.published} events were published and {self.stats.rejected} lines rejected; "
                f"every line before line {self.resume_line} is done")


@dataclass
class ReplayStats:
    """Counts of one replay run."""

    published: int = 0
    rejected: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    line: int = 0  # the last line read (counted across the inputs)
    retries: int = 0
    position_label: ClassVar[str] = "line"  #: what ``line`` counts, in the progress lines

    def summary(self) -> str:
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items())) or "none"
        return f"published {self.published} events, rejected {self.rejected} lines ({topics})"

    def counts(self) -> str:
        """The progress line's counts so far."""
        return f"{self.published} published, {self.rejected} rejected"


class Progress:
    """On a terminal, overwrites one status line at most every 0.2 s; otherwise prints a plain line at most
    every ``every_s`` seconds (a log or a pipe shows the work is going on, without terminal controls)."""

    def __init__(self, stream: IO[str], enabled: bool, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = enabled
        self.every_s = every_s
        self.last = time.monotonic()

    def update(self, stats: ReplayStats, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty and (force or now - self.last >= 0.2):
            self.last = now
            self.stream.write(f"\rdesktrace-replay: {stats.counts()}")
            self.stream.flush()
        elif not self.tty and not force and now - self.last >= self.every_s:
            self.last = now
            self.stream.write(f"desktrace-replay: {stats.counts()}, {stats.position_label} {stats.line}\n")
            self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _lines(path: str, stdin: IO[bytes]) -> Iterator[bytes]:
    if path == "-":
        yield from stdin
    else:
        with open(path, "rb") as f:
            yield from f


async def replay(
    sources: Iterable[tuple[str, Iterable[bytes]]],
    producer: Any,
    topics: Topics,
    err: IO[str] = sys.stderr,
    progress: Progress | None = None,
    *,
    from_line: int = 1,
    max_wait_s: float = 60.0,
    retry_initial_s: float = 0.5,
    retry_max_s: float = 10.0,
) -> ReplayStats:
    """Publish the valid events of each ``(name, lines)`` source with ``producer`` (started, aiokafka-like)
    from line ``from_line`` on (counted across the sources); report each invalid line on ``err``. Returns
    the counts once every send is acknowledged; raises :class:`PublishFailed` when transient failures last
    longer than ``max_wait_s`` in all (or a send fails otherwise), with the line to resume from."""
    stats = ReplayStats()
    chunk: list[tuple[int, str, bytes, bytes]] = []
    budget = RetryBudget(max_wait_s, retry_initial_s, retry_max_s)
    for name, lines in sources:
        for lineno, item in read_jsonl(lines):
            stats.line += 1
            if stats.line < from_line:
                continue
            if isinstance(item, EventDecodeError):
                stats.rejected += 1
                err.write(f"{name}:{lineno}: rejected ({item.error_class}): {item}\n")
                continue
            topic = topics.for_event(item)
            chunk.append((stats.line, topic, event_user_key(item).encode("utf-8"), encode_event(item)))
            if len(chunk) >= CHUNK:
                await publish_chunk(chunk, producer, stats, err, budget)
                chunk = []
                if progress:
                    progress.update(stats)
    await publish_chunk(chunk, producer, stats, err, budget)
    if progress:
        progress.update(stats, force=True)
    return stats


class RetryBudget:
    """Backoff delays within a bounded total wait, counted from the first failure; :meth:`reset` after a
    success.

    Guarantees, when each attempt waits at most :meth:`wait_bound` for its acknowledgements: an attempt
    fails within ``max_wait_s`` (and the caller's cap) of its start, and once one has failed, the retries
    and their delays end within ``max_wait_s`` of that failure (each retry waits at least
    ``MIN_ATTEMPT_S``). So the tool gives up at most about twice ``max_wait_s`` after Kafka stopped
    acknowledging, with at least one retry."""

    def __init__(
        self, max_wait_s: float, initial_s: float, maximum_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_wait_s, self.initial_s, self.maximum_s = max_wait_s, initial_s, maximum_s
        self.clock = clock
        self.since: float | None = None
        self.delay = initial_s

    def reset(self) -> None:
        self.since, self.delay = None, self.initial_s

    def wait_bound(self, cap: float) -> float:
        """How long an attempt starting now may wait: ``cap``, but no longer than ``max_wait_s`` or, after a
        failure, than what is left of it (at least ``MIN_ATTEMPT_S``)."""
        left = self.max_wait_s if self.since is None else self.max_wait_s - (self.clock() - self.since)
        return min(cap, max(MIN_ATTEMPT_S, left))

    def next_delay(self) -> float | None:
        """The next delay, or ``None`` when the total wait since the first failure is spent."""
        now = self.clock()
        if self.since is None:
            self.since = now
        left = self.max_wait_s - (now - self.since)
        if left <= 0:
            return None
        delay, self.delay = min(self.delay, left), min(self.delay * 2, self.maximum_s)
        return delay

    @property
    def waited_s(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since


def _line(n: int) -> str:
    return f"line {n}"


async def publish_chunk(
    chunk: list[tuple[int, str, bytes, bytes]], producer: Any, stats: ReplayStats, err: IO[str],
    budget: RetryBudget, describe: Callable[[int], str] = _line,
) -> None:
    """Send every event of ``chunk`` (``(position, topic, key, value)``), await them together, re-send the
    transient failures with backoff. A permanent refusal is reported on ``err`` with ``describe(position)``
    and counted; :class:`PublishFailed` names the first position not published when retrying is over."""
    todo = chunk
    while todo:
        futures: list[Any] = []
        # aiokafka does not always fail a batch its broker never took: the attempt has its own bound, within
        # what is left of --max-wait once an attempt has failed.
        deadline = time.monotonic() + budget.wait_bound(REQUEST_TIMEOUT_MS / 1000 + 5)
        refused: BaseException | None = None
        for _, topic, key, value in todo:
            if refused is not None:  # the producer cannot take more now: the rest waits for the retry
                futures.append(refused)
                continue
            try:
                left = max(0.01, deadline - time.monotonic())
                futures.append(await asyncio.wait_for(producer.send(topic, value, key=key), left))
            except Exception as exc:
                futures.append(exc)
                if produce_error_kind(exc) is ProduceErrorKind.TRANSIENT:
                    refused = exc
        waiting = [f for f in futures if not isinstance(f, BaseException)]
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.01, deadline - time.monotonic()))
        results = [_result(f) for f in futures]
        again: list[tuple[int, str, bytes, bytes]] = []
        last_error: BaseException | None = None
        for item, result in zip(todo, results, strict=True):
            if result is None:
                stats.published += 1
                stats.per_topic[item[1]] = stats.per_topic.get(item[1], 0) + 1
            elif produce_error_kind(result) is ProduceErrorKind.PERMANENT:
                stats.rejected += 1
                err.write(f"{describe(item[0])}: rejected by Kafka ({produce_error_name(result)})\n")
            else:
                again.append(item)
                last_error = result
        todo = again
        if not todo:
            budget.reset()
            return
        delay = budget.next_delay()
        resume = min(line for line, *_ in todo)
        if delay is None:
            raise PublishFailed(
                f"Kafka still failing after {budget.waited_s:.0f}s of retries "
                f"({produce_error_name(last_error or Exception())})",
                resume,
                stats,
            )
        stats.retries += 1
        err.write(
            f"desktrace-replay: {len(todo)} events not acknowledged "
            f"({produce_error_name(last_error or Exception())}); retrying in {delay:.1f}s\n"
        )
        await asyncio.sleep(delay)


def _result(fut: Any) -> BaseException | None:
    """``None`` when acknowledged, else the failure (a timeout when still unacknowledged)."""
    if isinstance(fut, BaseException):
        return fut
    if not fut.done():
        from aiokafka.errors import KafkaTimeoutError

        return KafkaTimeoutError("not acknowledged in time")
    if fut.cancelled():
        return asyncio.CancelledError()
    exc: BaseException | None = fut.exception()
    return exc


def _instant(text: str) -> int:
    """An RFC 3339 time with its UTC offset as epoch milliseconds (argparse type)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time: {text!r} (e.g. 2026-11-30T08:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add Z or +01:00")
    return epoch_ms(when)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktrace-replay",
        description="Publish JSON Lines events (one event per line, RFC 3339 times) to the raw Kafka topics "
        "with the agents' encoding and keys. With --dead-letters instead of files: publish dead letters "
        "again, bytes and key unchanged, to the raw topic each came from, once their cause is fixed "
        "(events the pipeline already has are dropped as duplicates, so running it twice is harmless). "
        "Exit 0: all lines valid (all selected dead letters published); 1: some lines rejected (reported on "
        "stderr with file:line; the valid ones were published); 2: usage or connection error.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="JSON Lines files; - reads standard input")
    redrive = parser.add_argument_group(
        "dead letters", "publish the dead-letter topic's events again (its end as of the start of the run)"
    )
    redrive.add_argument(
        "--dead-letters", action="store_true",
        help="read the dead-letter topic instead of files: every whole dead letter of a raw topic whose "
        "error class is selected goes back to that raw topic",
    )
    redrive.add_argument(
        "--error-class", action="append", choices=ERROR_CLASSES, metavar="CLASS",
        help="an error class to publish again (repeat for several; default: other, the class of a "
        "sessionizer failure; the classes of a bad record would fail the same way again). One of: "
        + ", ".join(ERROR_CLASSES),
    )
    redrive.add_argument(
        "--service", action="append", metavar="NAME",
        help="only the dead letters of this service (the desktrace-service header: stream or sink-raw; "
        "repeat for several; default: any)",
    )
    redrive.add_argument(
        "--since", type=_instant, metavar="TIME",
        help="only dead letters written at or after TIME (RFC 3339 with its UTC offset, e.g. "
        "2026-11-30T08:00:00Z)",
    )
    redrive.add_argument(
        "--until", type=_instant, metavar="TIME", help="only dead letters written at or before TIME"
    )
    redrive.add_argument(
        "--dry-run", action="store_true", help="read and count what would be published; publish nothing"
    )
    parser.add_argument("--linger-ms", type=int, default=20, help="producer batching delay (default 20)")
    parser.add_argument(
        "--from-line", type=int, default=1, metavar="N",
        help="skip the lines before line N (counted across the inputs in order): resume a failed replay",
    )
    parser.add_argument(
        "--max-wait", type=float, default=60.0, metavar="SECONDS",
        help="how long Kafka may go without acknowledging: each attempt waits at most this long, and "
        "retries stop this long after the first failure (default 60)",
    )
    add_arguments(parser, KafkaSettings)
    return parser


async def _run(args: argparse.Namespace, settings: KafkaSettings) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    topics = Topics(settings.topic_prefix)
    def new_producer() -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_options(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=args.linger_ms,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_request_size=MAX_REQUEST_SIZE,
        )

    producer = new_producer()
    budget = RetryBudget(args.max_wait, 0.5, 10.0)
    while True:
        try:
            await asyncio.wait_for(producer.start(), 30)
            break
        except (KafkaError, OSError, TimeoutError) as exc:
            await producer.stop()
            reason = await connection_problem(settings)  # names e.g. a failed authentication
            delay = None if "authentication failed" in reason else budget.next_delay()
            if delay is None:
                print(
                    f"desktrace-replay: error: cannot reach Kafka at {settings.kafka_bootstrap}: "
                    f"{reason or f'{type(exc).__name__}: {exc}'}; nothing published",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            print(f"desktrace-replay: Kafka not reachable yet ({reason or type(exc).__name__}); "
                  f"retrying in {delay:.1f}s", file=sys.stderr)
            await asyncio.sleep(delay)
            producer = new_producer()
    try:
        metadata = await asyncio.wait_for(producer.client.fetch_all_metadata(), 30)
    except (KafkaError, OSError, TimeoutError) as exc:
        await producer.stop()
        print(
            f"desktrace-replay: error: no metadata from Kafka: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return EXIT_ERROR
    needed = [*topics.raw, topics.deadletter] if args.dead_letters else list(topics.raw)
    missing = [t for t in needed if t not in metadata.topics()]
    if missing:
        await producer.stop()
        if missing == [topics.deadletter]:  # Kafka lists only the topics a user may describe
            problem = (
                f"{topics.deadletter} is not visible on {settings.kafka_bootstrap}: dead letters hold user "
                "data and only operators read them, so run --dead-letters as a user allowed to (the admin of "
                "docs/security.md); if it does not exist, create the topics"
            )
        else:
            problem = f"topic(s) {', '.join(missing)} do not exist on {settings.kafka_bootstrap}: create them"
        print(
            f"desktrace-replay: error: {problem} (desktrace-local up, with the same DESKTRACE_TOPIC_PREFIX)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    progress = Progress(sys.stderr, sys.stderr.isatty())
    if args.dead_letters:
        partitions = metadata.partitions_for_topic(topics.deadletter) or set()
        return await _redrive(args, settings, topics, partitions, producer, progress)
    t0 = time.monotonic()
    stats = ReplayStats()
    try:
        sources = [(name, _lines(name, sys.stdin.buffer)) for name in args.files]
        stats = await replay(
            sources, producer, topics, sys.stderr, progress, from_line=args.from_line,
            max_wait_s=args.max_wait,
        )
    except OSError as exc:
        print(f"desktrace-replay: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    except PublishFailed as exc:
        progress.done()
        return await _publish_failed(
            exc, settings, f"{exc.progress()}; resume with --from-line {exc.resume_line}"
        )
    finally:
        progress.done()
        await _stop_quietly(producer)
    print(f"desktrace-replay: {stats.summary()} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return EXIT_REJECTED if stats.rejected else EXIT_OK


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with how files and the dead-letter options are combined, if anything."""
    only_redrive = [name for name, value in (
        ("--error-class", args.error_class), ("--service", args.service), ("--since", args.since),
        ("--until", args.until), ("--dry-run", args.dry_run)) if value]
    if args.dead_letters:
        if args.files:
            return "give FILE arguments or --dead-letters, not both"
        if args.from_line != 1:
            return ("--from-line is for files; run a redrive again instead: the pipeline drops the events it "
                    "already has")
        return None
    if only_redrive:
        return f"{', '.join(only_redrive)} only go with --dead-letters"
    if not args.files:
        return "give one or more JSON Lines FILE arguments (- for standard input), or --dead-letters"
    return None


async def _publish_failed(exc: PublishFailed, settings: KafkaSettings, advice: str) -> int:
    """Say that publishing failed for good, why when the broker tells (a refused login...), and ``advice``."""
    reason = await connection_problem(settings, wait_s=5.0)
    print(f"desktrace-replay: error: publishing failed: {exc}{f' ({reason})' if reason else ''}. {advice}",
          file=sys.stderr)
    return EXIT_ERROR


async def _stop_quietly(*clients: Any) -> None:
    """Stop Kafka clients, each given at most 10 s; their errors are not ours to report any more."""
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.stop(), 10)


async def _redrive(
    args: argparse.Namespace, settings: KafkaSettings, topics: Topics, partitions: Iterable[int],
    producer: Any, progress: Progress,
) -> int:
    """``--dead-letters``: :func:`stream.redrive.redrive` with the producer :func:`_run` started."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

    from stream.redrive import DeadLetterSelection, ReadStalled, redrive

    selection = DeadLetterSelection(
        raw_topics=frozenset(topics.raw),
        classes=frozenset(args.error_class or ("other",)),
        services=frozenset(args.service) if args.service else None,
        until_ms=args.until,
    )
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(consumer.start(), 30)
        stats = await redrive(
            consumer, None if args.dry_run else producer, topics.deadletter, partitions, selection,
            sys.stderr, progress, since_ms=args.since, max_wait_s=args.max_wait,
        )
    except (ReadStalled, KafkaError, OSError, TimeoutError) as exc:  # the dead-letter topic cannot be read
        progress.done()
        advice = "is the broker up? Run the same command again (the pipeline drops the events it already has)"
        if isinstance(exc, TopicAuthorizationFailedError):
            advice = ("dead letters hold user data and only operators read them: run this as a user allowed "
                      "to (the admin of docs/security.md)")
        why = str(exc) if isinstance(exc, ReadStalled) else produce_error_name(exc)
        print(f"desktrace-replay: error: cannot read {topics.deadletter}: {why}; {advice}", file=sys.stderr)
        return EXIT_ERROR
    except PublishFailed as exc:
        progress.done()
        return await _publish_failed(
            exc, settings, f"{exc.stats.published} dead letters were published again; run the same command "
            "again once Kafka is back (the pipeline drops the events it already has)",
        )
    finally:
        progress.done()
        await _stop_quietly(consumer, producer)
    print(f"desktrace-replay: {stats.summary()} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return EXIT_REJECTED if stats.rejected else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load(KafkaSettings, args, section="replay")
    except SettingsError as exc:
        print(f"desktrace-replay: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    setup_logging("replay", settings.log_level, settings.log_format)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its errors are reported as ours, once
    problem = _usage_problem(args)
    if problem:
        parser.print_usage(sys.stderr)
        print(f"desktrace-replay: error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    missing = [f for f in args.files if f != "-" and not Path(f).is_file()]
    if missing:
        print(f"desktrace-replay: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
