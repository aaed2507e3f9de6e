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
import random
import sys
import time
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
    args = parser.parse_args()
    rng = random.Random(1)
    events = [e for day in range(args.days) for e in user_day(1, rng, day)]
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

if __name__ == "__main__":
    main()
