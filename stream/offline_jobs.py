"""``desktrace-sessionize --jobs N``: the same work in N processes, each owning a share of the users.

A user's sessions depend on that user's events only, so the users are split by a stable hash of their user
key (``proto.keys.user_key``: CRC-32 of the lower-cased ``domain\\user``, the same in every process and
every run). Every job reads every input file; for each line it decodes only ``domain`` and ``user`` (about a
quarter of a whole decode) to find the line's owner, and decodes and processes its own lines in full with
the same :class:`stream.offline.Feeder` as the single-process run. A line whose owner cannot be told
(blank, not JSON, no identity) belongs to job 0, which rejects it as the single-process run would.

Each job writes its final sessions, sorted by user key, start and kind, to a temporary file, and its
messages (rejected and late lines, with their numbers) to another; the parent merges the sorted files (a
user is in one job only, so the merge is the global order) and prints the messages, rejected lines first,
then late ones, each in input order. The output is the single-process run's: what is late is decided by
each user's input order (:meth:`stream.offline._Run.add`), which a split by user does not change; each
job's memory is bounded as the single-process run's is, by its own users.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, BinaryIO, Final, NamedTuple, TypeVar

import msgspec

from common.collector import tune_for_throughput
from proto.codec import jsonl_lines
from proto.keys import user_key
from stream.core import Sessionizer, SessionizerConfig
from stream.framed import read_records, session_records, write_records

PROGRESS_EVERY: Final = 100_000
MAX_JOBS: Final = 8  #: ``--jobs 0`` uses the CPUs this process may run on, at most this many


T = TypeVar("T")


class _Who(msgspec.Struct):
    """The two fields a line's owner is decided by (every other field is skipped, not decoded)."""

    domain: str
    user: str


_who: Final = msgspec.json.Decoder(_Who)


def default_jobs() -> int:
    """The CPUs this process may run on (its affinity where the platform has one), at most
    :data:`MAX_JOBS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_JOBS, cpus))


def owner_of_key(key: str, jobs: int) -> int:
    """The job that owns the user ``key`` (a ``proto.keys.user_key``): ``crc32(key) % jobs``."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % jobs


def owner_of(line: bytes, jobs: int, known: dict[tuple[str, str], int] | None = None) -> int:
    """The job that owns ``line``: that of its user key; 0 when the line has no readable identity.
    ``known``: owners by ``(domain, user)`` as written, filled as lines are read (users repeat)."""
    try:
        who = _who.decode(line)
    except (msgspec.DecodeError, ValueError):
        return 0
    if known is None:
        return owner_of_key(user_key(who.domain, who.user), jobs)
    ident = (who.domain, who.user)
    job = known.get(ident)
    if job is None:
        job = known[ident] = owner_of_key(user_key(who.domain, who.user), jobs)
    return job


def owned_lines(lines: Iterable[bytes], index: int, jobs: int, progress: bool = False) -> Iterator[bytes]:
    """``lines`` with every line that another job owns replaced by an empty one (so line numbers stay);
    ``progress``: print the count of lines read every ``PROGRESS_EVERY`` lines."""
    known: dict[tuple[str, str], int] = {}
    for n, line in enumerate(jsonl_lines(lines), 1):
        yield line if owner_of(line, jobs, known) == index else b""
        if len(known) > 100_000:  # bounded: a file of ever new identities
            known.clear()
        if progress and n % PROGRESS_EVERY == 0:
            print(f"... {n} lines read", file=sys.stderr)


class _Files(NamedTuple):
    sessions: str
    messages: str
    summary: str


_message_dec: Final = msgspec.msgpack.Decoder(tuple[int, int, str])
_summary_dec: Final = msgspec.msgpack.Decoder(tuple[int, int])


def _read_file(path: str, decoder: msgspec.msgpack.Decoder[T]) -> Iterator[T]:
    with open(path, "rb") as f:
        yield from read_records(f, decoder)


def _job(index: int, jobs: int, names: Sequence[str], config: SessionizerConfig, files: _Files) -> None:
    """One job, in its own process: the lines it owns through a :class:`stream.offline.Feeder`."""
    from stream.offline import Feeder  # the module that starts the jobs imports this one

    tune_for_throughput()
    progress = index == 0 and sys.stderr.isatty()
    with open(files.messages, "wb", buffering=1 << 16) as messages:

        def rejected(where: int, text: str) -> None:
            write_records(messages, ((0, where, text),))

        feeder = Feeder(Sessionizer(config), names, rejected)
        with ExitStack() as stack:
            for file_index, name in enumerate(names):
                stream = stack.enter_context(open(name, "rb"))
                feeder.feed(file_index, owned_lines(stream, index, jobs, progress))
        feeder.finish()
        write_records(messages, ((1, where, text) for where, text in feeder.late_messages()))
    with open(files.sessions, "wb", buffering=1 << 16) as sessions:
        write_records(sessions, feeder.run.records())
    with open(files.summary, "wb") as summary:
        write_records(summary, ((feeder.total, feeder.rejected),))


def run_jobs(
    jobs: int,
    names: Sequence[str],
    config: SessionizerConfig,
    out: BinaryIO,
    err: BinaryIO | None = None,
    start_method: str | None = None,
) -> tuple[int, int, int]:
    """Run ``jobs`` processes over the files ``names``; write the merged sessions to ``out`` and the
    messages to ``err`` (stderr by default). Returns ``(lines, rejected, sessions)``; raises
    ``RuntimeError`` naming the job when one fails. ``start_method``: ``fork`` where the platform has it
    (the jobs start at once with what this process imported; no threads run here), else ``spawn``."""
    if start_method is None:
        start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(start_method)
    with tempfile.TemporaryDirectory(prefix="desktrace-sessionize-") as tmp:
        files = [
            _Files(*(os.path.join(tmp, f"{i}.{what}") for what in ("sessions", "messages", "summary")))
            for i in range(jobs)
        ]
        procs = [ctx.Process(target=_job, args=(i, jobs, list(names), config, files[i])) for i in range(jobs)]
        for p in procs:
            p.start()
        for i, p in enumerate(procs):
            p.join()
            if p.exitcode != 0:
                for other in procs:
                    if other.is_alive():
                        other.terminate()
                raise RuntimeError(
                    f"job {i} of {jobs} failed (exit status {p.exitcode}; its error is above); --jobs 1 runs "
                    "everything in this process"
                )
        stderr = err if err is not None else sys.stderr.buffer
        for _kind, _where, text in heapq.merge(*(_read_file(f.messages, _message_dec) for f in files)):
            stderr.write(text.encode("utf-8", "replace") + b"\n")
        stderr.flush()
        count = 0
        merged = heapq.merge(*(_read_file(f.sessions, session_records) for f in files))
        for _key, _start, _kind2, line in merged:
            out.write(line)
            out.write(b"\n")
            count += 1
        out.flush()
        lines = rejected = 0
        for f in files:
            n, r = next(_read_file(f.summary, _summary_dec))
            lines, rejected = lines + n, rejected + r
    return lines, rejected, count
