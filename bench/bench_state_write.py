"""What writing one changed user's state costs as the state grows (run by hand:
``nice .venv/bin/python bench/bench_state_write.py [--days 3]``).

A worker writes every changed user's table value once per commit (``stream.live.LiveStates.flush``). A
user with events in every commit interval is written every second, so that cost is paid per event once
users are many and their events sparse. This bench builds one user's ``--days`` of realistic events
(``bench_sessionizer.user_day``), applies them in batches of ``--batch`` events, and after each batch times
the table value's encoding (``encode_state`` + ``encode_record``) in the same run: reusing the sealed chunks
of the previous write (what the worker does; the mean since the previous line), and from a copy without
any cache (the whole state encoded: the baseline, what every write cost before version 2 of the state
format). Prints both per state size and their ratio.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sessionizer import user_day
from stream.core import Sessionizer, SessionizerConfig, UserState, encode_state
from stream.state import UserRecord, encode_record


def write_us(state: UserState) -> float:
    """Microseconds to encode the table value of ``state`` once (its cache as it is, and updated)."""
    t = time.perf_counter()
    encode_record(UserRecord(core=encode_state(state), partition=0, last_seen=0.0))
    return (time.perf_counter() - t) * 1e6


def fresh_us(state: UserState, repeat: int = 3) -> float:
    """The same from copies without any cache (the whole state encoded), best of ``repeat``."""
    copies = (msgspec.structs.replace(state, cache=None, edit_ts=0, edit_pts=0) for _ in range(repeat))
    return min(write_us(c) for c in copies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20, help="events per update (default 20)")
    parser.add_argument("--compare-seal", nargs="+", metavar="SEAL:KEEP",
                        help="instead: the mean write cost over the whole run for each chunk setting "
                        "(stream.core.state SEAL_AT:KEEP_OPEN, e.g. 512:128 256:64), 3 rounds, one process")
    parser.add_argument("--compare-formats", nargs="+", type=int, metavar="VERSION",
                        help="instead: the mean write cost over the whole run for each state format (the "
                        "worker's state_format setting, e.g. 2 3), 3 rounds, one process")
    parser.add_argument("--compare-levels", nargs="+", type=int, metavar="LEVEL",
                        help="instead: the same for each zlib level of the parts format 2 rewrites on every "
                        "write (stream.core.state STORED, e.g. 1 0: level 1 is what releases before 0 did)")
    args = parser.parse_args()
    rng = random.Random(1)
    events = [e for day in range(args.days) for e in user_day(1, rng, day)]
    if args.compare_seal:
        compare_seal(events, args.days, args.batch, args.compare_seal)
        return
    if args.compare_formats:
        compare_formats(events, args.days, args.batch, args.compare_formats)
        return
    if args.compare_levels:
        compare_levels(events, args.days, args.batch, args.compare_levels)
        return
    core = Sessionizer(SessionizerConfig(retention_s=86_400.0 * args.days))
    state: UserState | None = None
    print(f"{len(events):,} events of one user over {args.days} days, written after every {args.batch}")
    print(f"{'facts':>8} {'reusing chunks':>15} {'whole state':>12} {'ratio':>6}")
    next_report = 500
    writes: list[float] = []
    for i in range(0, len(events), args.batch):
        state, _ = core.apply("corp\\user1", state, events[i : i + args.batch])
        writes.append(write_us(state))  # the write of this update, as the worker's commit does
        if len(state.ts) >= next_report or i + args.batch >= len(events):
            reuse = sum(writes) / len(writes)
            fresh = fresh_us(state)
            print(f"{len(state.ts):8,} {reuse:12,.0f} us {fresh:9,.0f} us {fresh / reuse:6.1f}")
            next_report *= 2
            writes = []

def mean_write(events: list, days: int, batch: int, version: int = 2) -> tuple[float, int]:
    """Mean CPU microseconds per table value written after every ``batch`` events, in state format
    ``version``, and the final value's size."""
    core = Sessionizer(SessionizerConfig(retention_s=86_400.0 * days))
    state: UserState | None = None
    spent = 0.0
    n = 0
    value = b""
    for i in range(0, len(events), batch):
        state, _ = core.apply("corp\\user1", state, events[i : i + batch])
        t = time.process_time()
        record = UserRecord(core=encode_state(state, version), partition=0, last_seen=0.0)
        value = encode_record(record, version)
        spent += time.process_time() - t
        n += 1
    return spent / n * 1e6, len(value)


Variant = Callable[[], tuple[float, int]]  #: one mean_write run under a setting: (us per write, value size)


def compare(events: list, days: int, batch: int, variants: dict[str, Variant]) -> None:
    """Run each variant (a :func:`mean_write` call under its setting) in 3 interleaved rounds and print its
    best mean CPU per write, final value size and cost ratio; the first variant is the baseline."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    sizes: dict[str, int] = {}
    for _ in range(3):
        for name, run in variants.items():
            us, sizes[name] = run()
            results[name].append(us)
    base = min(next(iter(results.values())))
    print(f"{len(events):,} events of one user over {days} days, written after every {batch}")
    for name, runs in results.items():
        print(f"{name}: {min(runs):6.0f} us CPU per write (best of 3), final value {sizes[name]:,} B, "
              f"cost ratio {min(runs) / base:.2f}")


def compare_seal(events: list, days: int, batch: int, settings: list[str]) -> None:
    """:func:`compare` for each ``SEAL:KEEP`` chunk setting (``stream.core.state``)."""
    from stream.core import state as core_state

    def under(setting: str) -> Variant:
        def run() -> tuple[float, int]:
            seal, keep = (int(x) for x in setting.split(":"))
            core_state.SEAL_AT, core_state.KEEP_OPEN = seal, keep  # type: ignore[misc]
            return mean_write(events, days, batch)
        return run

    compare(events, days, batch, {f"SEAL_AT:KEEP_OPEN {s:>8}": under(s) for s in settings})


def compare_formats(events: list, days: int, batch: int, versions: list[int]) -> None:
    """:func:`compare` for each state format (the ``state_format`` setting)."""
    compare(events, days, batch, {
        f"state format {v}": functools.partial(mean_write, events, days, batch, v) for v in versions
    })


def compare_levels(events: list, days: int, batch: int, levels: list[int]) -> None:
    """:func:`compare` for each zlib level of format 2's rewritten parts (``stream.core.state.STORED``)."""
    from stream.core import state as core_state

    def under(level: int) -> Variant:
        def run() -> tuple[float, int]:
            core_state.STORED = level  # type: ignore[misc]
            return mean_write(events, days, batch)
        return run

    compare(events, days, batch, {f"format 2, zlib level {lvl}": under(lvl) for lvl in levels})


if __name__ == "__main__":
    main()
