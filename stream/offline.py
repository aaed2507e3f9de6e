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
from typing import BinaryIO

from common.collector import tune_for_throughput
from common.settings import SettingsError, add_arguments, load
from proto.clock import epoch_ms
from proto.codec import EventDecodeError, encode_session, read_jsonl
from proto.events import Envelope
from proto.keys import event_user_key
from proto.sessions import Session, apply_session_messages
from stream.core import Intake, Sessionizer, Update, UserState
from stream.core.state import NO_TIME
from stream.framed import SessionRecord, read_records, session_records, write_records
from stream.offline_jobs import default_jobs, run_jobs
from stream.settings import OFFLINE_HELP, SECTION, OfflineSettings

BATCH = 2000  #: events of one user taken before that user is settled
MAX_BUFFERED = 200_000  #: events taken over all users before every user is settled, if ...
SETTLE_PER_USER = 400  #: ... that makes at least this many per user with events waiting, on average
SPILL_AT = 20_000  #: final sessions kept in memory before a sorted run is written to a temporary file
_LINE_BITS = 40  #: an event's position is ``file_index << _LINE_BITS | line_number``
PROGRESS_EVERY = 100_000


class _User:
    """One user's part of a :class:`_Run`: the core's state, the events taken into it and not yet settled
    (see :class:`stream.core.Intake`), and the sessions the core may still change."""

    __slots__ = ("floor", "held", "intake", "key", "state", "taken")

    def __init__(self, key: str) -> None:
        self.key = key
        self.state: UserState | None = None
        self.intake: Intake | None = None  #: events taken since the last settle, or None
        self.taken = 0  #: how many
        self.floor = NO_TIME  #: the core's pruned floor when last looked at
        #: session_id -> (start ms, kind, JSON line) of the sessions the core may still change
        self.held: dict[str, tuple[int, str, bytes]] = {}


class _Run:
    """Feeds events to the core per user and keeps the sessions a consumer would hold.

    Each event is taken into its user's facts as it is read (:meth:`stream.core.Sessionizer.take`), in
    input order, as a consumer of the topic would see them; the sessions are recomputed (settled) per user
    every ``BATCH`` events of that user, and for every user once ``max_buffered`` events wait, if that
    makes at least ``per_user`` for each user with events waiting, on average. (Settling every user at once
    is about 15% cheaper than settling each one on its own, and a few hundred events per user and
    settlement are cheaper than a few: ``docs/stream-performance.md``.) The result is the core's, which
    depends neither on the order nor on the batching.

    Memory is bounded by the users, not by the input: no event is kept once taken, each user's state is
    bounded by the retention horizon, and a session the core can no longer change (it starts before the
    user's pruned floor) leaves memory for a sorted spill file (:class:`_Spill`) as the JSON line it will be
    written as.
    """

    def __init__(
        self,
        core: Sessionizer,
        max_buffered: int = MAX_BUFFERED,
        spill_at: int = SPILL_AT,
        per_user: int = SETTLE_PER_USER,
    ) -> None:
        self.core = core
        self.users: dict[str, _User] = {}  #: user key -> that user's part
        #: domain -> user -> the part of its user key, as spelled in the events: a small dict that stays in
        #: the CPU's caches, then one string to look up (a tuple key costs more misses with many users)
        self.by_domain: dict[str, dict[str, _User]] = {}
        self.pending: list[_User] = []  #: the users with events taken and not settled
        self.buffered = 0  #: events taken and not settled
        self.max_buffered = max_buffered
        self.per_user = per_user
        self.spill = _Spill(spill_at)
        self.late = 0
        self.late_where: list[int] = []
        self._take_one = core.take_one  # bound once: it runs for every event

    def add(self, where: int, event: Envelope) -> None:
        """Take ``event`` (``where``: its position, see :func:`main`) into its user's facts, or count it
        late: older than the retention horizon behind an event of the same user earlier in the input (or
        than what the core has pruned, which is older). So what is late depends on the input order only,
        never on how the events are batched (nor on ``--jobs``)."""
        names = self.by_domain.get(event.domain)
        user = names.get(event.user) if names is not None else None
        if user is None:
            user = self._user(event)
        intake = user.intake
        if intake is None:
            intake = user.intake = self.core.intake(user.state)
            self.pending.append(user)
        if not self._take_one(intake, epoch_ms(event.ts), event):
            self.late += 1
            self.late_where.append(where)
            return
        user.taken += 1
        self.buffered += 1
        if user.taken >= BATCH:
            self.settle(user)
        elif self.buffered >= self.max_buffered and self.buffered >= self.per_user * len(self.pending):
            self.settle_all()

    def _user(self, event: Envelope) -> _User:
        """The part of ``event``'s user key, for the first event of this spelling of it."""
        key = event_user_key(event)
        user = self.users.get(key)
        if user is None:
            user = self.users[key] = _User(key)
        self.by_domain.setdefault(event.domain, {})[event.user] = user
        return user

    def settle_all(self) -> None:
        pending, self.pending = self.pending, []
        for user in pending:
            self.settle(user)

    def settle(self, user: _User) -> None:
        intake = user.intake
        if intake is None:
            return
        user.intake = None
        self.buffered -= user.taken
        user.taken = 0
        state, update = self.core.settle(user.key, intake)
        user.state = state
        self._apply(user, update)
        if state.floor != user.floor:
            user.floor = state.floor
            self._finalise(user)

    def finish(self) -> None:
        self.settle_all()
        for user in self.users.values():
            if user.state is not None:
                user.state, update = self.core.close(user.key, user.state)
                self._apply(user, update)

    @staticmethod
    def _apply(user: _User, update: Update) -> None:
        if update.retractions or update.upserts:
            apply_session_messages(user.held, [*update.retractions, *update.upserts], _held_line)

    def _finalise(self, user: _User) -> None:
        """Spill the sessions of ``user`` that start before the core's floor: they can no longer change."""
        held, floor = user.held, user.floor
        for sid in [sid for sid, (start, _, _) in held.items() if start < floor]:
            start, kind, line = held.pop(sid)
            self.spill.add((user.key, start, kind, line))

    def records(self) -> Iterator[SessionRecord]:
        """``(user key, start ms, kind, JSON line)`` of every final session, in that order."""
        for user in self.users.values():
            for start, kind, line in user.held.values():
                self.spill.add((user.key, start, kind, line))
            user.held = {}
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
            label = self.labels[where >> _LINE_BITS]
            yield where, f"{label}:{where & line_mask}: rejected (late): older than the retention horizon"


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
