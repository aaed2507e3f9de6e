"""``desktrace-replay FILE... | -``: publish JSON Lines events to the raw topics, as agents would.

Each valid line is encoded with the agents' codec (msgpack), keyed by its user key and sent to its raw topic
(``Topics(prefix).for_event``). An invalid line is reported on stderr with its file, line number and the
decoder's error (never the line's content), counted, and skipped; the valid lines are still published.

Exit codes: 0 every line was valid and published; 1 some lines were rejected (the valid ones were
published); 2 usage error, unreadable file or Kafka unreachable / publishing failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from common.kafka import client_options, connection_problem
from common.logs import setup_logging
from common.settings import CommonSettings, SettingsError, add_arguments, load
from proto.codec import EventDecodeError, encode_event, read_jsonl
from proto.keys import event_user_key
from proto.topics import Topics

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_ERROR = 2


@dataclass
class ReplayStats:
    """Counts of one replay run."""

    published: int = 0
    rejected: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items())) or "none"
        return f"published {self.published} events, rejected {self.rejected} lines ({topics})"


class Progress:
    """Overwrites one status line on a terminal at most every 0.2 s; silent otherwise."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.last = 0.0

    def update(self, stats: ReplayStats, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self.last >= 0.2:
            self.last = now
            self.stream.write(f"\rdesktrace-replay: {stats.published} published, {stats.rejected} rejected")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
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
) -> ReplayStats:
    """Publish the valid events of each ``(name, lines)`` source with ``producer`` (started, aiokafka-like);
    report each invalid line on ``err``. Returns the counts once every send is acknowledged."""
    stats = ReplayStats()
    pending: list[asyncio.Future[Any]] = []
    for name, lines in sources:
        for lineno, item in read_jsonl(lines):
            if isinstance(item, EventDecodeError):
                stats.rejected += 1
                err.write(f"{name}:{lineno}: rejected ({item.error_class}): {item}\n")
                continue
            topic = topics.for_event(item)
            pending.append(
                await producer.send(topic, encode_event(item), key=event_user_key(item).encode("utf-8"))
            )
            stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                stats.published += len(pending)
                pending.clear()
                if progress:
                    progress.update(stats)
    await asyncio.gather(*pending)
    stats.published += len(pending)
    if progress:
        progress.update(stats, force=True)
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktrace-replay",
        description="Publish JSON Lines events (one event per line, RFC 3339 times) to the raw Kafka topics "
        "with the agents' encoding and keys. Exit 0: all lines valid; 1: some lines rejected (reported on "
        "stderr with file:line; the valid ones were published); 2: usage or connection error.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSON Lines files; - reads standard input")
    parser.add_argument("--linger-ms", type=int, default=20, help="producer batching delay (default 20)")
    add_arguments(parser, CommonSettings)
    return parser


async def _run(args: argparse.Namespace, settings: CommonSettings) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=args.linger_ms,
        request_timeout_ms=30000,
    )
    try:
        await asyncio.wait_for(producer.start(), 30)
    except (KafkaError, OSError, TimeoutError) as exc:
        await producer.stop()
        reason = await connection_problem(settings)  # names e.g. a failed authentication
        print(
            f"desktrace-replay: error: cannot reach Kafka at {settings.kafka_bootstrap}: "
            f"{reason or f'{type(exc).__name__}: {exc}'}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        metadata = await asyncio.wait_for(producer.client.fetch_all_metadata(), 30)
    except (KafkaError, OSError, TimeoutError) as exc:
        await producer.stop()
        print(
            f"desktrace-replay: error: no metadata from Kafka: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return EXIT_ERROR
    missing = [t for t in topics.raw if t not in metadata.topics()]
    if missing:
        await producer.stop()
        print(
            f"desktrace-replay: error: topic(s) {', '.join(missing)} do not exist on "
            f"{settings.kafka_bootstrap}: create them (desktrace-local up, with the same "
            "DESKTRACE_TOPIC_PREFIX)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    progress = Progress(sys.stderr, sys.stderr.isatty())
    t0 = time.monotonic()
    try:
        sources = [(name, _lines(name, sys.stdin.buffer)) for name in args.files]
        stats = await replay(sources, producer, topics, sys.stderr, progress)
    except OSError as exc:
        print(f"desktrace-replay: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    except KafkaError as exc:
        print(f"desktrace-replay: error: publishing failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        progress.done()
        await producer.stop()
    print(f"desktrace-replay: {stats.summary()} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return EXIT_REJECTED if stats.rejected else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load(CommonSettings, args, section="replay")
    except SettingsError as exc:
        print(f"desktrace-replay: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    setup_logging("replay", settings.log_level, settings.log_format)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its errors are reported as ours, once
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
