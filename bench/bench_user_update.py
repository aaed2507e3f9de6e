"""The worker's fixed cost per user and batch, in process (run by hand:
``.venv/bin/python bench/bench_user_update.py [--users 2000] [--hours 8] [--rounds 10]
[--state-formats 2 4]``).

Builds the state of ``--users`` users with ``--hours`` of events each (``tests.support.events``, 10% out
of order) through ``stream.processor.Processor`` with the worker's ``LiveStates``, then times rounds of
one heartbeat per user (a minute later each round, with input 30 s before it): what a batch costs per
user when each user has one new event, i.e. the cost paid once per user and batch whatever its number of
events; then what writing the changed users' table values costs (``LiveStates.flush``, which the worker
does once per commit). The baseline, measured in the same run on the same states, is the cost per event of
a batch of ``--per-user`` (20) events per user: the ratio says how many of those events one user's update
costs. With several ``--state-formats``, each round runs the one-heartbeat batch and its write once per
format, on the same users one after the other (the ``state_format`` setting; the first is the baseline of
the writes' ratios). Last, for each format, ``encode_state`` of every user alone, with the caches a write
leaves (the published keys' msgpack reused, ``UserState.pub_raw``) against the same with the published
keys encoded again (the baseline: what a write cost before that reuse), the processor's caches evicted
before each pass as between two commits. With ``--split``, more rounds of one heartbeat per user with a
timer around each step of the update (:data:`SPLIT_STEPS`; the timers add a fraction of a microsecond per
call): where a user's fixed cost goes.
Prints the minimum and median over rounds (this machine's speed varies by the minute).
"""

from __future__ import annotations

import argparse
import functools
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from bench_offline import disorder
from prometheus_client import CollectorRegistry

import stream.core.sessionizer as sessionizer_module
from proto.events import Envelope, Heartbeat
from proto.topics import Topics
from stream import fleet
from stream.core import Sessionizer, encode_state
from stream.live import LiveStates
from stream.metrics import StreamMetrics
from stream.processor import Incoming, Processor
from tests.support.events import generate_events
from tests.support.kafka import event_records

TOPICS = Topics("")

#: The steps of one user's update that ``--split`` times: (where the name is looked up, name, label);
#: indented labels are parts of the step above them. Functions and instance methods only: a static method
#: wrapped this way would be called with the instance as its first argument.
SPLIT_STEPS: tuple[tuple[object, str, str], ...] = (
    (Processor, "_take_user", "take the user's events"),
    (Processor, "_settle_user", "settle the user"),
    (Sessionizer, "_recompute", "  recompute its sessions"),
    (sessionizer_module, "compute", "    compute (rules 1-5, from a checkpoint or a cut)"),
    (sessionizer_module, "_older_checkpoints", "    keep the older checkpoints"),
    (Sessionizer, "_checkpoint_for", "    choose the checkpoint to start from"),
    (Sessionizer, "_prune", "  prune past the horizon"),
    (fleet, "prune", "  prune the fleet view"),
    (Processor, "_emit", "  the output"),
)


def records(events: list[Envelope], first_offset: int) -> list[Incoming]:
    """The events as the worker receives them (``tests.support.kafka.event_records``: raw topic, user key,
    msgpack bytes), at offsets from ``first_offset`` (one partition: the processor does not mind)."""
    return [Incoming(topic, 0, first_offset + i, key, value, 0)
            for i, (topic, key, value) in enumerate(event_records(TOPICS, events))]


def heartbeats(last: dict[str, Heartbeat], seqs: dict[str, int], minutes: int) -> list[Envelope]:
    """One heartbeat per agent, ``minutes`` after its last one, with input 30 s before it."""
    return [
        msgspec.structs.replace(h, seq=seqs[a] + minutes, ts=h.ts + timedelta(minutes=minutes),
                                last_input_ts=h.ts + timedelta(minutes=minutes, seconds=-30))
        for a, h in last.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=8.0, help="hours of events per user before the rounds")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of one heartbeat per user")
    parser.add_argument("--per-user", type=int, default=20, help="events per user in the baseline's batches")
    parser.add_argument("--state-formats", type=int, nargs="+", default=[2], choices=(2, 3, 4),
                        help="state formats the writes are timed in (the first is the baseline)")
    parser.add_argument("--split", action="store_true",
                        help="then time each step of a one-event update (more rounds, with timers)")
    args = parser.parse_args()
    formats: list[int] = args.state_formats

    events = disorder(generate_events(seed=1, users=args.users, hours=args.hours + 1), random.Random(2))
    cut = max(e.ts for e in events) - timedelta(hours=1.2)  # mid-day: before the logoffs at the end
    events = [e for e in events if e.ts < cut]
    proc = Processor(TOPICS, Sessionizer(), StreamMetrics(CollectorRegistry()), close_timeout_s=1e9)
    live = LiveStates({}, max_users=10 * args.users, state_format=formats[0])
    recs = records(events, 0)
    print(f"building the state of {args.users:,} users from {len(recs):,} events ...", flush=True)
    for i in range(0, len(recs), 50_000):
        proc.handle_batch(recs[i : i + 50_000], live, 1000.0)
        live.flush()  # as the worker's commits do: the encoders' caches as they are in a running worker
    last: dict[str, Heartbeat] = {}
    seqs: dict[str, int] = {}
    for e in events:
        seqs[e.agent_id] = max(seqs.get(e.agent_id, 0), e.seq)
        if isinstance(e, Heartbeat) and (e.agent_id not in last or e.seq > last[e.agent_id].seq):
            last[e.agent_id] = e
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)  # the worker's collector settings

    one: list[float] = []
    one_write: dict[int, list[float]] = {f: [] for f in formats}
    many_: list[float] = []
    many_write: list[float] = []
    minute = 0
    for _ in range(args.rounds):
        for f in formats:
            live.state_format = f
            minute += 1
            batch = records(heartbeats(last, seqs, minute), 10_000_000 * minute)
            t = time.perf_counter()
            proc.handle_batch(batch, live, 2000.0 + minute)
            one.append((time.perf_counter() - t) / len(batch) * 1e6)
            t = time.perf_counter()
            live.flush()
            one_write[f].append((time.perf_counter() - t) / len(batch) * 1e6)
        live.state_format = formats[0]
        # the baseline: --per-user heartbeats per user in one batch (as many minutes of each user), per event
        k = args.per_user
        many = [e for m in range(1, k + 1) for e in heartbeats(last, seqs, minute + m)]
        minute += k
        batch = records(many, 10_000_000 * minute)
        t = time.perf_counter()
        proc.handle_batch(batch, live, 2000.0 + minute)
        many_.append((time.perf_counter() - t) / len(batch) * 1e6)
        t = time.perf_counter()
        live.flush()
        many_write.append((time.perf_counter() - t) / len(batch) * 1e6)
    one_min, one_med = min(one), statistics.median(one)
    many_min, many_med = min(many_), statistics.median(many_)
    print(f"one event per user:  {one_min:7.1f} us per user (median {one_med:.1f})")
    print(f"{args.per_user} events per user: {many_min:7.1f} us per event (median {many_med:.1f}), "
          "the baseline")
    print(f"ratio (one user's update in events of the baseline): {one_min / many_min:.1f} "
          f"(medians {one_med / many_med:.1f})")
    print(f"writing the changed users' values (format {formats[0]}): {min(one_write[formats[0]]):.1f} us per "
          f"user after one event each (median {statistics.median(one_write[formats[0]]):.1f}); "
          f"{min(many_write):.1f} us per event after {args.per_user} each (median "
          f"{statistics.median(many_write):.1f})")
    base = statistics.median(one_write[formats[0]])
    for f in formats[1:]:
        med = statistics.median(one_write[f])
        print(f"  in format {f}: {min(one_write[f]):.1f} us per user after one event each "
              f"(median {med:.1f}), ratio {med / base:.2f} of format {formats[0]}'s median")
    encode_alone(live, formats, args.rounds)
    if args.split:
        split(proc, live, last, seqs, minute, args.rounds)


def split(
    proc: Processor, live: LiveStates, last: dict[str, Heartbeat], seqs: dict[str, int], minute: int,
    rounds: int,
) -> None:
    """Prints what each of :data:`SPLIT_STEPS` takes per user over ``rounds`` batches of one heartbeat per
    user (a timer around each; the first of the states' formats)."""
    spent = {name: 0.0 for _, name, _ in SPLIT_STEPS}
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in SPLIT_STEPS]

    def timed(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return run

    for owner, name, f in originals:
        setattr(owner, name, timed(name, f))
    users = 0
    total = 0.0
    try:
        for _ in range(rounds):
            minute += 1
            batch = records(heartbeats(last, seqs, minute), 10_000_000 * minute)
            t = time.perf_counter()
            proc.handle_batch(batch, live, 2000.0 + minute)
            total += time.perf_counter() - t
            live.flush()
            users += len(batch)
    finally:
        for owner, name, f in originals:
            setattr(owner, name, f)
    print(f"one event per user, timed step by step: {total / users * 1e6:.1f} us per user in all")
    for _, name, label in SPLIT_STEPS:
        print(f"  {label:<52} {spent[name] / users * 1e6:6.1f} us")


def encode_alone(live: LiveStates, formats: list[int], rounds: int) -> None:
    """Prints ``encode_state``'s cost per user in each format, reusing the published keys' bytes or not."""
    cores = [u.core for _, u, _ in live.users() if u is not None and u.core is not None]
    took: dict[tuple[int, bool], list[float]] = {}
    for _ in range(rounds):
        for f in formats:
            for reuse in (False, True):
                for core in cores:
                    if reuse:
                        encode_state(core, f)  # what the previous write leaves
                    else:
                        core.pub_raw = None
                bytearray(64 << 20)  # out of the CPU caches, as the batch between two commits leaves them
                t = time.perf_counter()
                for core in cores:
                    encode_state(core, f)
                took.setdefault((f, reuse), []).append((time.perf_counter() - t) / len(cores) * 1e6)
    for f in formats:
        again, reused = (statistics.median(took[f, r]) for r in (False, True))
        print(f"encode_state, format {f}: {reused:.1f} us per user reusing the published keys' bytes, "
              f"{again:.1f} encoding them again (medians): ratio {reused / again:.2f}")


if __name__ == "__main__":
    main()
