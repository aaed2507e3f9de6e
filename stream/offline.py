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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from operator import itemgetter
from typing import BinaryIO, Final

from common.collector import tune_for_throughput
from common.settings import SettingsError, add_arguments, load
from proto.clock import epoch_ms
from proto.codec import EventDecodeError, encode_session, read_jsonl
from proto.events import Envelope
from proto.keys import event_user_key
from proto.sessions import Session, apply_session_messages
from stream.core import Sessionizer, Update, UserState
from stream.core.state import NO_TIME
from stream.framed import SessionRecord, read_records, session_records, write_records
from stream.offline_jobs import default_jobs, run_jobs
from stream.settings import OFFLINE_HELP, SECTION, OfflineSettings

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
        self.newest: dict[str, int] = {}  #: per user: the newest event time read so far (ms)
        self.retention = core.config.retention_ms

    def add(self, where: int, event: Envelope) -> None:
        """Buffer ``event`` (``where``: its position, see :func:`main`) for its user, or count it late: older
        than the retention horizon behind an event of the same user earlier in the input. So what is late
        depends on the input order only, never on how the events are batched (nor on ``--jobs``)."""
        key = self._keys.get((event.domain, event.user))
        if key is None:
            key = self._keys[(event.domain, event.user)] = event_user_key(event)
        t = epoch_ms(event.ts)
        newest = self.newest.get(key)
        if newest is None or t > newest:
            self.newest[key] = t
        elif t < newest - self.retention:
            self.late += 1
            self.late_where.append(where)
            return
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = []
        buf.append((t, where, event))
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
        # In time order: the core then finds none of them late (add() has decided that, by input order).
        buf.sort(key=_time_and_position)
        events = [e for _, _, e in buf]
        state, update = self.core.apply(key, self.states.get(key), events, [t for t, _, _ in buf])
        self.states[key] = state
        if update.late:  # not expected (see above): counted all the same
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

    def records(self) -> Iterator[SessionRecord]:
        """``(user key, start ms, kind, JSON line)`` of every final session, in that order."""
        for key, held in self.sessions.items():
            for start, kind, line in held.values():
                self.spill.add((key, start, kind, line))
        self.sessions.clear()
        yield from self.spill.merged()

    def results(self) -> Iterator[bytes]:
        """The JSON lines of the final sessions, sorted by user key, start and kind."""
        for _key, _start, _kind, line in self.records():
            yield line


class Feeder:
    """Reads JSON Lines into a :class:`_Run`: counts the lines, reports each rejected one through
    ``rejected(position, message)`` (its file and number, never its content), and gives the late ones'
    messages at the end. One per process (``--jobs``: one per job, on the lines it owns)."""

    def __init__(
        self,
        core: Sessionizer,
        labels: Sequence[str],
        rejected: Callable[[int, str], None],
        progress: bool = False,
    ) -> None:
        self.run = _Run(core)
        self.labels = labels
        self._rejected = rejected
        self.progress = progress
        self.total = 0  #: non-blank lines read
        self.rejected = 0  #: lines rejected, late ones included once :meth:`finish` has run

    def feed(self, file_index: int, lines: Iterable[bytes]) -> None:
        """Every line of the file ``labels[file_index]``."""
        base = file_index << _LINE_BITS
        label = self.labels[file_index]
        add = self.run.add
        progress = self.progress
        for n, item in read_jsonl(lines):
            self.total += 1
            if isinstance(item, EventDecodeError):
                self.rejected += 1
                self._rejected(base | n, f"{label}:{n}: rejected ({item.error_class}): {item}")
                continue
            add(base | n, item)
            if progress and self.total % PROGRESS_EVERY == 0:
                print(f"... {self.total} lines, {self.rejected} rejected", file=sys.stderr)

    def finish(self) -> None:
        self.run.finish()
        self.rejected += self.run.late

    def late_messages(self) -> Iterator[tuple[int, str]]:
        """``(position, message)`` of each late line, in input order."""
        line_mask = (1 << _LINE_BITS) - 1
        for where in sorted(self.run.late_where):
            yield where, (
                f"{self.labels[where >> _LINE_BITS]}:{where & line_mask}: rejected (late): older than the "
                "retention horizon"
            )


class _Spill:
    """An external sort of final session lines: sorted runs of ``spill_at`` records in temporary files,
    merged at the end (memory: one run, plus one record per run while merging)."""

    def __init__(self, spill_at: int) -> None:
        self.spill_at = spill_at
        self.records: list[SessionRecord] = []
        self.runs: list[BinaryIO] = []
        self.written = 0  #: runs written so far

    def add(self, record: SessionRecord) -> None:
        self.records.append(record)
        if len(self.records) >= self.spill_at:
            self._write_run()

    def _write_run(self) -> None:
        self.records.sort()
        run = tempfile.TemporaryFile(prefix="desktrace-sessionize-")
        write_records(run, self.records)
        run.seek(0)
        self.runs.append(run)
        self.written += 1
        self.records = []

    def merged(self) -> Iterator[SessionRecord]:
        self.records.sort()
        try:
            yield from heapq.merge(self.records, *(read_records(run, session_records) for run in self.runs))
        finally:
            for run in self.runs:
                run.close()
            self.runs = []
            self.records = []


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
    add_arguments(parser, OfflineSettings, OFFLINE_HELP)
    args = parser.parse_args(argv)
    try:
        settings = load(OfflineSettings, args, section=SECTION)
    except SettingsError as exc:
        parser.error(str(exc))
    config = settings.to_config()
    names = args.files or ["-"]
    for name in names:  # every file readable before any work starts
        if name != "-":
            try:
                open(name, "rb").close()
            except OSError as exc:
                print(f"desktrace-sessionize: cannot read {name}: {exc.strerror}", file=sys.stderr)
                return 2
    jobs = settings.jobs or default_jobs()
    progress = sys.stderr.isatty()
    out = sys.stdout.buffer
    if jobs > 1 and "-" not in names:
        try:
            total, rejected, count = run_jobs(jobs, names, config, out)
        except RuntimeError as exc:
            print(f"desktrace-sessionize: {exc}", file=sys.stderr)
            return 2
    else:  # one process (stdin cannot be read by several)
        tune_for_throughput()
        labels = ["stdin" if n == "-" else n for n in names]
        feeder = Feeder(Sessionizer(config), labels, _print_rejected, progress)
        with ExitStack() as stack:
            for file_index, name in enumerate(names):
                stream = sys.stdin.buffer if name == "-" else stack.enter_context(open(name, "rb"))
                feeder.feed(file_index, stream)
        feeder.finish()
        for _where, text in feeder.late_messages():
            print(text, file=sys.stderr)
        total, rejected = feeder.total, feeder.rejected
        count = 0
        for line in feeder.run.results():
            out.write(line)
            out.write(b"\n")
            count += 1
        out.flush()
    if rejected or progress:
        print(f"desktrace-sessionize: {total} lines, {rejected} rejected, {count} sessions", file=sys.stderr)
    return 1 if rejected else 0


def _print_rejected(_where: int, text: str) -> None:
    print(text, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
