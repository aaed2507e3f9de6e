"""``desktrace-sessionize``: JSON Lines raw events in, the final session records out (JSON Lines).

The same core as the stream (:mod:`stream.core`): events are fed per user in batches, every correction and
retraction is applied, and every session is closed at the end of the input. Output is sorted by
``user_key`` then ``start``. Invalid lines are reported on stderr by line number (never their content) and
counted; the exit status is 1 when any line was rejected.
"""

from __future__ import annotations

import argparse
import heapq
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from operator import itemgetter
from typing import BinaryIO, Final

import msgspec

from common.collector import tune_for_throughput
from common.settings import SettingsError, add_arguments, load
from proto.clock import epoch_ms
from proto.codec import EventDecodeError, encode_session, read_jsonl
from proto.events import Envelope
from proto.keys import event_user_key
from proto.sessions import Session, apply_session_messages
from stream.core import Sessionizer, Update, UserState
from stream.core.state import NO_TIME
from stream.settings import SECTION, SESSIONIZER_HELP, SessionizerSettings

BATCH = 2000  #: events buffered per user before they are fed to the core
MAX_BUFFERED = 50_000  #: events buffered over all users before every buffer is fed to the core
SPILL_AT = 20_000  #: final sessions kept in memory before a sorted run is written to a temporary file
_LINE_BITS = 40  #: an event's position is ``file_index << _LINE_BITS | line_number``
PROGRESS_EVERY = 100_000


class _Run:
    """Feeds events to the core per user, in bounded batches, and keeps the sessions a consumer would hold.

    Memory is bounded by the users, not by the input: at most ``max_buffered`` decoded events wait in the
    per-user buffers (all buffers are fed to the core when it is reached), each user's state is bounded by
    the retention horizon, and a session the core can no longer change (it starts before the user's pruned
    floor) leaves memory for a sorted spill file (:class:`_Spill`) as the JSON line it will be written as.
    """

    def __init__(self, core: Sessionizer, max_buffered: int = MAX_BUFFERED, spill_at: int = SPILL_AT) -> None:
        self.core = core
        self.states: dict[str, UserState | None] = {}
        self.floors: dict[str, int] = {}
        #: per user: the buffered events as ``(epoch ms, position, event)``
        self.buffers: dict[str, list[tuple[int, int, Envelope]]] = {}
        self.buffered = 0
        self.max_buffered = max_buffered
        # per user: session_id -> (start ms, kind, JSON line) of the sessions the core may still change
        self.sessions: dict[str, dict[str, tuple[int, str, bytes]]] = {}
        self.spill = _Spill(spill_at)
        self.late = 0
        self.late_where: list[int] = []
        self._keys: dict[tuple[str, str], str] = {}  #: (domain, user) -> user key

    def add(self, where: int, event: Envelope) -> None:
        """Buffer ``event`` (``where``: its position, see :func:`main`) for its user."""
        key = self._keys.get((event.domain, event.user))
        if key is None:
            key = self._keys[(event.domain, event.user)] = event_user_key(event)
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = []
        buf.append((epoch_ms(event.ts), where, event))
        self.buffered += 1
        if len(buf) >= BATCH:
            self.flush(key)
        elif self.buffered >= self.max_buffered:
            self.flush_all()

    def flush_all(self) -> None:
        for key in list(self.buffers):
            self.flush(key)

    def flush(self, key: str) -> None:
        buf = self.buffers.pop(key, None)
        if not buf:
            return
        self.buffered -= len(buf)
        buf.sort(key=_time_and_position)
        events = [e for _, _, e in buf]
        state, update = self.core.apply(key, self.states.get(key), events, [t for t, _, _ in buf])
        self.states[key] = state
        if update.late:
            where_of = {id(e): w for _, w, e in buf}
            for e in update.late:
                self.late += 1
                self.late_where.append(where_of[id(e)])
        self._apply(key, update)
        if state.floor != self.floors.get(key, NO_TIME):
            self.floors[key] = state.floor
            self._finalise(key, state.floor)

    def finish(self) -> None:
        self.flush_all()
        for key, state in self.states.items():
            if state is not None:
                self.states[key], update = self.core.close(key, state)
                self._apply(key, update)

    def _apply(self, key: str, update: Update) -> None:
        if not update.retractions and not update.upserts:
            return
        apply_session_messages(
            self.sessions.setdefault(key, {}), [*update.retractions, *update.upserts], _held_line
        )

    def _finalise(self, key: str, floor: int) -> None:
        """Spill the sessions of ``key`` that start before the core's floor: they can no longer change."""
        held = self.sessions.get(key)
        if not held:
            return
        for sid in [sid for sid, (start, _, _) in held.items() if start < floor]:
            start, kind, line = held.pop(sid)
            self.spill.add((key, start, kind, line))

    def results(self) -> Iterator[bytes]:
        """The JSON lines of the final sessions, sorted by user key, start and kind."""
        for key, held in self.sessions.items():
            for start, kind, line in held.values():
                self.spill.add((key, start, kind, line))
        self.sessions.clear()
        for _key, _start, _kind, line in self.spill.merged():
            yield line


class _Spill:
    """An external sort of final session lines: sorted runs of ``spill_at`` records in temporary files,
    merged at the end (memory: one run, plus one record per run while merging)."""

    def __init__(self, spill_at: int) -> None:
        self.spill_at = spill_at
        self.records: list[tuple[str, int, str, bytes]] = []
        self.runs: list[BinaryIO] = []
        self.written = 0  #: runs written so far

    def add(self, record: tuple[str, int, str, bytes]) -> None:
        self.records.append(record)
        if len(self.records) >= self.spill_at:
            self._write_run()

    def _write_run(self) -> None:
        self.records.sort()
        run = tempfile.TemporaryFile(prefix="desktrace-sessionize-")
        enc = _run_encoder.encode
        for record in self.records:
            data = enc(record)
            run.write(len(data).to_bytes(4, "little"))
            run.write(data)
        run.seek(0)
        self.runs.append(run)
        self.written += 1
        self.records = []

    @staticmethod
    def _read_run(run: BinaryIO) -> Iterator[tuple[str, int, str, bytes]]:
        dec = _run_decoder.decode
        while head := run.read(4):  # a TemporaryFile is buffered
            yield dec(run.read(int.from_bytes(head, "little")))

    def merged(self) -> Iterator[tuple[str, int, str, bytes]]:
        self.records.sort()
        try:
            yield from heapq.merge(self.records, *(self._read_run(run) for run in self.runs))
        finally:
            for run in self.runs:
                run.close()
            self.runs = []
            self.records = []


_run_encoder: Final = msgspec.msgpack.Encoder()
_run_decoder: Final = msgspec.msgpack.Decoder(tuple[str, int, str, bytes])


def _held_line(s: Session) -> tuple[int, str, bytes]:
    """What the run holds of a session: its start (ms), kind and the JSON line it will be written as."""
    return epoch_ms(s.start), s.kind, encode_session(s)


#: Buffered events in time order, ties in input order (as a stable sort by time).
_time_and_position: Final = itemgetter(0, 1)


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
    add_arguments(parser, SessionizerSettings, SESSIONIZER_HELP)
    args = parser.parse_args(argv)
    try:
        settings = load(SessionizerSettings, args, section=SECTION)
    except SettingsError as exc:
        parser.error(str(exc))
    core = Sessionizer(settings.to_config())
    run = _Run(core)
    tune_for_throughput()
    progress = sys.stderr.isatty()
    rejected = 0
    total = 0
    names = args.files or ["-"]
    labels: list[str] = []
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
            base = len(labels) << _LINE_BITS
            labels.append(label)
            add = run.add
            for n, item in read_jsonl(stream):
                total += 1
                if isinstance(item, EventDecodeError):
                    rejected += 1
                    print(f"{label}:{n}: rejected ({item.error_class}): {item}", file=sys.stderr)
                    continue
                add(base | n, item)
                if progress and total % PROGRESS_EVERY == 0:
                    print(f"... {total} lines, {rejected} rejected", file=sys.stderr)
    run.finish()
    line_mask = (1 << _LINE_BITS) - 1
    for where in run.late_where:
        print(
            f"{labels[where >> _LINE_BITS]}:{where & line_mask}: rejected (late): older than the retention "
            "horizon",
            file=sys.stderr,
        )
    rejected += run.late
    out = sys.stdout.buffer
    count = 0
    for line in run.results():
        out.write(line)
        out.write(b"\n")
        count += 1
    out.flush()
    if rejected or progress:
        print(f"desktrace-sessionize: {total} lines, {rejected} rejected, {count} sessions", file=sys.stderr)
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
