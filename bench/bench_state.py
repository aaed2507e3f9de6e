"""Resident memory of one worker's state for many users' day (run by hand:
``nice .venv/bin/python bench/bench_state.py [--users 100000] [--cache 5000]``).

Builds ``--distinct`` realistic user-days with the real core (``bench_sessionizer.user_day``: heartbeats
every minute all day, throttled input and UI events 08:00-17:00, about 2,000 events per user) and the
worker's record around each (published session ids, fleet info), then, in a fresh process, holds the state
of ``--users`` users the way the worker does (``stream.live.LiveStates``): every user's compressed table
value in the store (the in-memory table; each value its own bytes object, the distinct days repeated), and
``--cache`` of them decoded (the bound of the decoded cache; they were loaded, changed and flushed as a
batch would). Prints the peak RSS beside a baseline measured in the same run: the same process holding
nothing (interpreter and imports).
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sessionizer import user_day

from stream.core import Sessionizer, encode_state
from stream.fleet import AgentSeen
from stream.state import UserRecord, encode_record


def _child(path: str, users: int, cache: int) -> None:
    from stream.live import LiveStates

    blobs = Path(path).read_bytes().split(b"\n--SPLIT--\n") if users else []
    store: dict[bytes, bytes] = {}
    for i in range(users):
        store[f"corp\\user{i}".encode()] = bytes(bytearray(blobs[i % len(blobs)]))  # a copy per user
    states = LiveStates(store, max_users=cache)
    t = time.perf_counter()
    for i in range(min(cache, users)):
        key = f"corp\\user{i}".encode()
        live = states.get(key)
        assert live is not None
        live.record.last_seen += 1
        states.put(key, live)
    loaded = time.perf_counter() - t
    states.flush()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(len(v) for v in store.values()) / (1 << 20)
    print(f"{rss:.1f} {size:.1f} {len(states)} {loaded:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--cache", type=int, default=5_000, help="decoded users (state_cache_users)")
    p.add_argument("--distinct", type=int, default=64, help="distinct user-days generated")
    p.add_argument("--state-format", type=int, default=2, choices=(2, 3, 4),
                   help="format of the table values (the worker's state_format setting)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(a.child[0], int(a.child[1]), int(a.child[2]))
        return
    rng = random.Random(1)
    core = Sessionizer()
    values = []
    for u in range(a.distinct):
        key = f"corp\\user{u}"
        state, _ = core.apply(key, None, user_day(u, rng))
        state, _ = core.close(key, state)
        record = UserRecord(
            core=encode_state(state, a.state_format), partition=u % 6, last_seen=1.0,
            agents={f"agent-{u}": AgentSeen(last_ms=1, version="1.5.0", hb_ms=1, spool_dropped=0)},
        )
        values.append(encode_record(record, a.state_format))
    path = Path("/tmp/desktrace-bench-state.bin")
    path.write_bytes(b"\n--SPLIT--\n".join(values))
    mean = sum(len(v) for v in values) / len(values)
    print(f"{a.distinct} distinct user-days, table value (format {a.state_format}) mean {mean:,.0f} B")
    try:
        runs = {}
        for label, users, cache in (("baseline (nothing held)", 0, 0), ("worker state", a.users, a.cache)):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), str(users), str(cache)],
                capture_output=True, text=True, check=True,
            )
            rss, size, cached, loaded = out.stdout.split()
            runs[label] = float(rss)
            print(f"{label:24s} {users:7,d} users, {int(cached):6,d} decoded: peak RSS {float(rss):8.1f} MiB "
                  f"(table values {float(size):.1f} MiB, decoding the cache took {float(loaded):.2f}s)")
        held = runs["worker state"] - runs["baseline (nothing held)"]
        print(f"state of {a.users:,} users' day: {held:.1f} MiB above the baseline process")
    finally:
        path.unlink()


if __name__ == "__main__":
    main()
