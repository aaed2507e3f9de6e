"""The core's CPU per event when events trickle in (run by hand: ``nice .venv/bin/python
bench/bench_trickle.py [--days 3]``).

A worker at ordinary load gathers about one event per user per commit, so ``Sessionizer.apply`` runs once
per event, with a user's whole history behind it. Its three raw topics are consumed at slightly different
paces, so an event often lands a little before the latest fact already taken (here: each presence event,
heartbeats included, arrives up to ``--lag`` seconds after the others of its time). The cost of such an
event depends on the checkpoint the core resumes from: without one at or before the event, the core
recomputes from the start of the presence period, which for a desk that stays logged on (locked at night,
heartbeats all day) is the whole retention horizon.

Most such events need no computation at all: they only lengthen what is open, the activity chain of a
desk in use or the idle or locked rest of a desk left logged on (``Sessionizer._extend``, the fast paths).

For one user with ``--days`` of realistic events (``bench_sessionizer.user_day``; all but the last day applied
in batches first), prints the CPU per trickled event of the last day, the computations and the facts they
scanned: the current core (older checkpoints kept, ``stream.core.sessionizer._older_checkpoints``, and the
fast paths), the same with a computation at every settle (``Sessionizer(extend_fast=False)``), and as the
baseline in the same run neither (only the checkpoints of the latest computation, as before session 8),
with their ratios to it. Best of ``--repeat`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from bisect import bisect_left
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sessionizer import user_day
from proto.events import Envelope
from stream.core import Sessionizer, SessionizerConfig, UserState
from stream.core import compute as compute_module
from stream.core import sessionizer as core_module


def trickled(days: int, lag_s: float, seed: int) -> tuple[list[Envelope], list[Envelope]]:
    """The history (every day but the last, in time order) and the last day as it arrives: presence
    events up to ``lag_s`` late."""
    rng = random.Random(seed)
    history = [e for day in range(days - 1) for e in user_day(1, rng, day)]
    last = user_day(1, rng, days - 1)
    keyed = [
        (e.ts + timedelta(seconds=rng.uniform(0, lag_s) if type(e).category == "presence" else 0), i, e)
        for i, e in enumerate(last)
    ]
    return history, [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]


def run(
    history: list[Envelope], last: list[Envelope], days: int, extend_fast: bool = True
) -> tuple[float, int, int, int]:
    """CPU seconds of trickling ``last`` one event per call, facts scanned, computations without a
    checkpoint, computations."""
    core = Sessionizer(SessionizerConfig(retention_s=86_400.0 * (days + 1)), extend_fast=extend_fast)
    st: UserState | None = None
    for i in range(0, len(history), 200):
        st, _ = core.apply("corp\\user1", st, history[i : i + 200])
    scanned = [0, 0, 0]
    real = compute_module.compute

    def counting(state: UserState, c: int, *args: object, **kwargs: object) -> compute_module.Result:
        scanned[0] += len(state.ts) - bisect_left(state.ts, c)
        if args[3] is None:  # no checkpoint to resume from
            scanned[1] += 1
        scanned[2] += 1
        return real(state, c, *args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(core_module, "compute", counting):
        t = time.process_time()
        for e in last:
            st, _ = core.apply("corp\\user1", st, [e])
        spent = time.process_time() - t
    return spent, scanned[0], scanned[1], scanned[2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=3, help="days of history, the last one trickled")
    parser.add_argument("--lag", type=float, default=20.0, help="presence events arrive up to this late (s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    history, last = trickled(args.days, args.lag, args.seed)
    def older(keep: bool) -> Any:
        return mock.patch.object(
            core_module, "_older_checkpoints", core_module._older_checkpoints if keep else lambda *a: []
        )

    variants: dict[str, tuple[bool, bool]] = {  # name: (older checkpoints kept, fast paths)
        "latest checkpoints only, every settle computes (baseline)": (False, False),
        "older checkpoints kept, every settle computes": (True, False),
        "older checkpoints kept, fast paths (current)": (True, True),
    }
    best: dict[str, tuple[float, int, int, int]] = {}
    for _ in range(args.repeat):
        for name, (keep, fast) in variants.items():
            with older(keep):
                result = run(history, last, args.days, fast)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    print(f"{len(history):,} events of history, {len(last):,} trickled one per call "
          f"(presence up to {args.lag:g} s late); best of {args.repeat}")
    base = next(iter(best.values()))[0]
    for name, (spent, facts, hard, computed) in best.items():
        print(f"{name:58s} {spent / len(last) * 1e6:7.1f} us/event  {computed:5d} computations, "
              f"{facts / len(last):6.1f} facts scanned/event, {hard:4d} from a cut  ratio {spent / base:.2f}")


if __name__ == "__main__":
    main()
