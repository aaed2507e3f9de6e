"""Benchmark of the pure sessionizer core (run by hand: ``.venv/bin/python bench/bench_sessionizer.py``).

Prints events/s of ``Sessionizer.apply`` on realistic in-order multi-user streams (batched like the Faust
worker: a batch of the merged stream, grouped per user, state decoded and encoded around every call, as the
changelog-backed table does) and on shuffled streams with duplicates, beside a baseline measured in the same
run (msgspec decode of the same events from msgpack bytes), with the ratio; the encoded state size; and the
peak RSS of 10,000 users' decoded state in a fresh process.
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proto.codec import decode_events, encode_event
from proto.events import EVENT_TYPES, Envelope, InputClass
from stream.core import Sessionizer, UserState, decode_state, encode_state

DAY = datetime(2024, 5, 6, tzinfo=UTC)


def user_day(u: int, rng: random.Random, day: int = 0) -> list[Envelope]:
    """About 2000 events: heartbeats every 60 s all day (the session stays logged on, locked at night),
    throttled HID (<= 1/min/class) and UI events while working 08:00-17:00 with breaks."""
    evs: list[Envelope] = []
    seq = day * 100_000
    host = f"pc{u}"
    base = DAY + timedelta(days=day)

    def add(type_: str, ts: datetime, input_: InputClass = "none", **kw: Any) -> None:
        nonlocal seq
        seq += 1
        evs.append(
            EVENT_TYPES[type_](
                agent_id=f"agent-{u}",
                seq=seq,
                ts=ts,
                input=input_,
                user=f"user{u}",
                domain="corp",
                host=host,
                tz="Europe/Paris",
                **kw,
            )
        )

    working: list[tuple[datetime, datetime]] = []
    t = base + timedelta(hours=8, minutes=rng.randint(0, 30))
    end = base + timedelta(hours=17, minutes=rng.randint(0, 30))
    while t < end:
        stretch = timedelta(minutes=rng.randint(20, 90))
        working.append((t, min(t + stretch, end)))
        t += stretch + timedelta(minutes=rng.randint(2, 40))
    last_input: datetime | None = None
    inputs: list[datetime] = []
    for a, b in working:
        x = a
        while x < b:
            inputs.append(x)
            x += timedelta(seconds=rng.randint(5, 70))
    inputs.sort()
    last_written = {
        "HardwareKeyboardEvent": DAY - timedelta(days=1),
        "HardwareMouseClick": DAY - timedelta(days=1),
    }
    ii = 0
    hb = base
    ui_every = 0
    while hb < base + timedelta(days=1):
        while ii < len(inputs) and inputs[ii] < hb:
            x = inputs[ii]
            cls = rng.choice(list(last_written))
            if x - last_written[cls] >= timedelta(seconds=60):
                add(cls, x, "hardware")
                last_written[cls] = x
            ui_every += 1
            if ui_every % 3 == 0:
                add(rng.choice(["WindowSwitch", "WindowUpdate"]), x + timedelta(milliseconds=300), "hardware")
            last_input = x
            ii += 1
        add("Heartbeat", hb, last_input_ts=last_input)
        hb += timedelta(seconds=60)
    for (_, b), (a2, _) in pairwise(working):
        if a2 - b > timedelta(minutes=15):
            add("Lock", b + timedelta(minutes=1))
            add("Unlock", a2 - timedelta(seconds=1), "hardware")
    add("Lock", end + timedelta(minutes=2))
    evs.sort(key=lambda e: e.ts)
    return evs


def batches_in_order(users: dict[str, list[Envelope]], batch: int) -> list[dict[str, list[Envelope]]]:
    merged = sorted(((e.ts, k, e) for k, evs in users.items() for e in evs), key=lambda x: x[0])
    out = []
    for i in range(0, len(merged), batch):
        group: dict[str, list[Envelope]] = defaultdict(list)
        for _, k, e in merged[i : i + batch]:
            group[k].append(e)
        out.append(group)
    return out


def batches_shuffled(
    users: dict[str, list[Envelope]], batch: int, rng: random.Random
) -> list[dict[str, list[Envelope]]]:
    items = [(k, e) for k, evs in users.items() for e in evs]
    items += rng.sample(items, len(items) // 20)  # 5% duplicates
    rng.shuffle(items)
    out = []
    for i in range(0, len(items), batch):
        group: dict[str, list[Envelope]] = defaultdict(list)
        for k, e in items[i : i + batch]:
            group[k].append(e)
        out.append(group)
    return out


def run_core(
    core: Sessionizer, batches: list[dict[str, list[Envelope]]], codec: bool
) -> tuple[float, dict[str, bytes | UserState]]:
    states: dict[str, bytes | UserState] = {}
    t0 = time.perf_counter()
    for group in batches:
        for k, evs in group.items():
            old = states.get(k)
            st = (decode_state(old) if isinstance(old, bytes) else old) if old is not None else None
            new, _ = core.apply(k, st, evs)
            states[k] = encode_state(new) if codec else new
    for k, s in list(states.items()):
        st = decode_state(s) if isinstance(s, bytes) else s
        new, _ = core.close(k, st)
        states[k] = encode_state(new) if codec else new
    return time.perf_counter() - t0, states


def baseline(events: list[Envelope]) -> float:
    blobs = [encode_event(e) for e in events]
    t0 = time.perf_counter()
    for _ in decode_events(blobs):
        pass
    return time.perf_counter() - t0


def rss_child(path: str, n: int) -> None:
    blobs = Path(path).read_bytes().split(b"\n--\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    held = [decode_state(blobs[i % len(blobs)]) for i in range(n)]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{(after - before) / 1024:.1f} {len(held)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--batch", type=int, default=1000, help="events per worker batch (merged stream)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rss-child", nargs=2, metavar=("FILE", "N"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.rss_child:
        rss_child(a.rss_child[0], int(a.rss_child[1]))
        return
    rng = random.Random(a.seed)
    users = {f"corp\\user{u}": user_day(u, rng) for u in range(a.users)}
    events = [e for evs in users.values() for e in evs]
    n = len(events)
    print(f"{a.users} users, {n} events ({n / a.users:.0f} per user-day), batch {a.batch}")
    base = baseline(events)
    print(f"baseline msgspec decode:        {n / base:12,.0f} events/s")
    core = Sessionizer()
    ordered = batches_in_order(users, a.batch)
    for codec in (False, True):
        dt, states = run_core(core, ordered, codec)
        label = "in-order" + (" + state codec" if codec else "")
        print(f"core {label:26s} {n / dt:12,.0f} events/s   ratio to baseline {base / dt:8.4f}")
    sizes = [len(encode_state(s if isinstance(s, UserState) else decode_state(s))) for s in states.values()]
    print(
        f"encoded state per user after one day: mean {sum(sizes) / len(sizes):,.0f} B, max {max(sizes):,} B"
    )
    shuffled = batches_shuffled(users, a.batch, rng)
    m = sum(len(v) for g in shuffled for v in g.values())
    dt, _ = run_core(core, shuffled, False)
    print(
        f"core shuffled + 5% duplicates   {m / dt:12,.0f} events/s   "
        f"ratio to baseline {base / dt * m / n:8.4f}"
    )
    # Peak RSS of 10,000 users' state, in a fresh process.
    blob_file = Path("/tmp/desktrace-bench-states.bin")
    blob_file.write_bytes(
        b"\n--\n".join(
            encode_state(s if isinstance(s, UserState) else decode_state(s)) for s in states.values()
        )
    )
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(blob_file), "10000"],
        capture_output=True,
        text=True,
        check=True,
    )
    mib = float(out.stdout.split()[0])
    print(f"peak RSS of 10,000 users' decoded state (one day each): {mib:,.1f} MiB")
    blob_file.unlink()


if __name__ == "__main__":
    main()
