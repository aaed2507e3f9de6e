"""``desktrace-sessionize``: JSON Lines raw events in, the final session records out (JSON Lines).

The same core as the stream (:mod:`stream.core`): events are fed per user in batches, every correction and
retraction is applied, and every session is closed at the end of the input. Output is sorted by
``user_key`` then ``start``. Invalid lines are reported on stderr by line number (never their content) and
counted; the exit status is 1 when any line was rejected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import BinaryIO

import msgspec

from common.horizon import DEFAULT_RETENTION_S
from common.settings import HELP, SettingsError, add_arguments, load
from proto.codec import EventDecodeError, encode_session, read_jsonl
from proto.events import Envelope
from proto.keys import event_user_key
from proto.sessions import Session, SessionRetraction
from stream.core import Sessionizer, SessionizerConfig, Update, UserState

SECTION = "stream"
BATCH = 2000  #: events buffered per user before they are fed to the core
PROGRESS_EVERY = 100_000


class OfflineSettings(msgspec.Struct, kw_only=True):
    """The sessionizer settings, with the same names as ``desktrace-stream``'s."""

    gap: float = 300.0
    presence_timeout: float = 180.0
    retention: float = DEFAULT_RETENTION_S
    legacy_max_span: float = 14400.0

    def __post_init__(self) -> None:
        for name in ("gap", "presence_timeout", "retention", "legacy_max_span"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


OFFLINE_HELP = {
    **HELP,
    "gap": "G, the idle gap in seconds that splits active sessions",
    "presence_timeout": "P, seconds without any event after which a presence period ends",
    "retention": "horizon in seconds back from a user's latest event; older events are rejected as late",
    "legacy_max_span": "L, seconds a legacy POST /api/report state holds at most when no next report "
    "ends it sooner (G when the next report repeats the state)",
}


class _Run:
    """Feeds events to the core per user and keeps the sessions a consumer would hold."""

    def __init__(self, core: Sessionizer) -> None:
        self.core = core
        self.states: dict[str, UserState | None] = {}
        self.buffers: dict[str, list[tuple[str, Envelope]]] = {}
        self.sessions: dict[str, dict[str, Session]] = {}
        self.late = 0
        self.late_where: list[str] = []

    def add(self, where: str, event: Envelope) -> None:
        key = event_user_key(event)
        buf = self.buffers.setdefault(key, [])
        buf.append((where, event))
        if len(buf) >= BATCH:
            self.flush(key)

    def flush(self, key: str) -> None:
        buf = self.buffers.pop(key, [])
        if not buf:
            return
        buf.sort(key=lambda we: we[1].ts)
        where_of = {id(e): w for w, e in buf}
        state, update = self.core.apply(key, self.states.get(key), [e for _, e in buf])
        self.states[key] = state
        for e in update.late:
            self.late += 1
            self.late_where.append(where_of[id(e)])
        self._apply(key, update)

    def finish(self) -> None:
        for key in list(self.buffers):
            self.flush(key)
        for key, state in self.states.items():
            if state is not None:
                self.states[key], update = self.core.close(key, state)
                self._apply(key, update)

    def _apply(self, key: str, update: Update) -> None:
        held = self.sessions.setdefault(key, {})
        for r in update.retractions:
            held.pop(r.session_id, None)
        for s in update.upserts:
            held[s.session_id] = s

    def results(self) -> Iterator[Session | SessionRetraction]:
        for key in sorted(self.sessions):
            yield from sorted(self.sessions[key].values(), key=lambda s: (s.start, s.kind))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="desktrace-sessionize",
        description="Compute activity and inactivity sessions (shared/spec/sessions.md) from JSON Lines raw "
        "events. Reads FILEs (or stdin) and writes the final session records as JSON Lines on stdout, "
        "sorted by user_key then start.",
    )
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="JSON Lines event files; '-' or none = stdin"
    )
    add_arguments(parser, OfflineSettings, OFFLINE_HELP)
    args = parser.parse_args(argv)
    try:
        settings = load(OfflineSettings, args, section=SECTION)
    except (SettingsError, ValueError) as exc:
        parser.error(str(exc))
    core = Sessionizer(
        SessionizerConfig(
            gap_s=settings.gap,
            presence_timeout_s=settings.presence_timeout,
            retention_s=settings.retention,
            legacy_max_span_s=settings.legacy_max_span,
        )
    )
    run = _Run(core)
    progress = sys.stderr.isatty()
    rejected = 0
    total = 0
    names = args.files or ["-"]
    with ExitStack() as stack:
        for name in names:
            if name == "-":
                stream: BinaryIO = sys.stdin.buffer
                label = "stdin"
            else:
                try:
                    stream = stack.enter_context(open(name, "rb"))
                except OSError as exc:
                    print(f"desktrace-sessionize: cannot read {name}: {exc.strerror}", file=sys.stderr)
                    return 2
                label = name
            for n, item in read_jsonl(stream):
                total += 1
                where = f"{label}:{n}"
                if isinstance(item, EventDecodeError):
                    rejected += 1
                    print(f"{where}: rejected ({item.error_class}): {item}", file=sys.stderr)
                    continue
                run.add(where, item)
                if progress and total % PROGRESS_EVERY == 0:
                    print(f"... {total} lines, {rejected} rejected", file=sys.stderr)
    run.finish()
    for where in run.late_where:
        print(f"{where}: rejected (late): older than the retention horizon", file=sys.stderr)
    rejected += run.late
    out = sys.stdout.buffer
    count = 0
    for record in run.results():
        out.write(encode_session(record))
        out.write(b"\n")
        count += 1
    out.flush()
    if rejected or progress:
        print(f"desktrace-sessionize: {total} lines, {rejected} rejected, {count} sessions", file=sys.stderr)
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
