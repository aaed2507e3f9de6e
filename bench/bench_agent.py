"""Agent benchmarks, run by hand: ``.venv/bin/python bench/bench_agent.py [--seconds 60] [--users 20]``.

1. CPU and memory (RSS) of the real agent pipeline (recorder + throttle + privacy + spool + shipper to the
   broker at DESKTRACE_KAFKA_BOOTSTRAP, default the shared 127.0.0.1:19092) in a child process fed 20
   inputs/s (keys, clicks, scrolls, a window change every few seconds) for ``--seconds``; baseline in the
   same run: the same child with a source that emits nothing (an idle agent). Goal < 1% of a core, < 60 MB.
2. Bytes on the wire per simulated user per working day in basic mode: the simulator's events for
   ``--users`` users over a working week, packed into Kafka record batches (aiokafka's own batch builder)
   the way the shipper forms them — per observation (the shipper's batches when it keeps up) and with the
   configured ``linger_s`` — uncompressed (baseline) and compressed with each codec aiokafka supports
   without extra packages. Goal < 5 MB per user per month (~230 KB per working day).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import asyncio, json, os, resource, sys, time, random
from datetime import UTC, datetime
from agent.observations import InputObservation, WindowSnapshot
from agent.runner import AgentRuntime
from agent.settings import load_agent_settings

rate, seconds, state = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]

class Source:
    def __init__(self): self._stop = asyncio.Event(); self.n = 0
    async def run(self, emit):
        rng = random.Random(1)
        if rate <= 0:
            await self._stop.wait(); return
        t0 = time.monotonic(); i = 0
        while not self._stop.is_set():
            i += 1
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay); return
                except TimeoutError:
                    pass
            now = datetime.now(UTC)
            r = rng.random()
            kind = "key" if r < 0.7 else "click" if r < 0.85 else "scroll"
            emit(InputObservation(ts=now, kind=kind, injected=False))
            if i % 60 == 0:  # a window change every ~3 s
                w = rng.randrange(5)
                emit(WindowSnapshot(ts=now, window_id=f"w{w}", app="firefox",
                                    title=f"Page {rng.randrange(50)}",
                                    url=f"https://example.test/{rng.randrange(50)}", input="hardware"))
            self.n += 1
    def stop(self): self._stop.set()
    def idle_ms(self): return 0

async def main():
    s = load_agent_settings(env={**os.environ, "DESKTRACE_STATE_DIR": state})
    src = Source()
    rt = AgentRuntime(s, src, drain_s=5)
    task = asyncio.create_task(rt.run())
    await asyncio.sleep(3)  # warm-up: imports, connection
    ru0 = resource.getrusage(resource.RUSAGE_SELF); w0 = time.monotonic(); n0 = src.n
    await asyncio.sleep(seconds)
    ru1 = resource.getrusage(resource.RUSAGE_SELF); w1 = time.monotonic()
    rss_now = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    rt.stop(); await task
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    print(json.dumps({"cpu_s": cpu, "wall_s": w1 - w0, "inputs": src.n - n0, "rss_bytes": rss_now,
                      "maxrss_bytes": ru1.ru_maxrss * 1024, "events": rt.recorder.seq,
                      "sent": rt.shipper.stats.sent_events}))

asyncio.run(main())
"""


def run_child(rate: float, seconds: float, bootstrap: str) -> dict[str, float]:
    with TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap,
                "DESKTRACE_TOPIC_PREFIX": "bench.",
                "DESKTRACE_LINGER_S": "5",  # ship during the run, not only at the stop
                "DESKTRACE_LOG_LEVEL": "WARNING",
            }
        )
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(rate), str(seconds), tmp],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 120,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_bench_topics(bootstrap: str) -> bool:
    from devstack.topics import ensure_topics
    from proto.topics import Topics

    try:
        asyncio.run(asyncio.wait_for(ensure_topics(bootstrap, Topics("bench.")), 20))
        return True
    except Exception as exc:
        print(f"  (broker {bootstrap} not usable: {type(exc).__name__}; events stay in the spool)")
        return False


def cpu_and_memory(seconds: float) -> None:
    bootstrap = os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    print(f"== 1. agent CPU and RSS, 20 inputs/s for {seconds:.0f} s, shipping to {bootstrap}")
    ensure_bench_topics(bootstrap)
    idle = run_child(0, seconds, bootstrap)
    busy = run_child(20, seconds, bootstrap)
    for name, r in (("baseline: idle agent", idle), ("20 inputs/s", busy)):
        print(
            f"  {name:22s} cpu {100 * r['cpu_s'] / r['wall_s']:6.3f}% of a core   "
            f"rss {r['rss_bytes'] / 2**20:6.1f} MB (max {r['maxrss_bytes'] / 2**20:.1f} MB)   "
            f"inputs {r['inputs']:6.0f}  events {r['events']:5.0f}  sent {r['sent']:5.0f}"
        )
    extra = busy["cpu_s"] - idle["cpu_s"]
    print(
        f"  load costs {100 * extra / busy['wall_s']:.3f}% of a core over the idle agent; "
        f"{1e6 * extra / max(1, busy['inputs']):.1f} us CPU per input; RSS ratio "
        f"{busy['rss_bytes'] / idle['rss_bytes']:.2f}x the idle agent"
    )
    ok = 100 * busy["cpu_s"] / busy["wall_s"] < 1 and busy["rss_bytes"] < 60 * 2**20
    print(f"  goal (< 1% of a core, < 60 MB): {'met' if ok else 'NOT met'}")


def wire_bytes(users: int) -> None:
    from aiokafka.codec import has_lz4, has_snappy, has_zstd
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from agent.simulator import Fleet, make_users
    from proto.codec import encode_event
    from proto.keys import user_key

    start = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday; five working days
    fleet = Fleet(make_users(users, 11), start, timedelta(days=5))
    t0 = time.perf_counter()
    events = list(fleet.events())
    sim_s = time.perf_counter() - t0
    days = defaultdict(set)
    for e in events:
        if e.type == "Logon":
            days[e.agent_id].add(e.ts.date())
    user_days = sum(len(v) for v in days.values())
    print(
        f"\n== 2. bytes on the wire per user per working day ({users} users, 5 days: {user_days} "
        f"user-days, {len(events)} events, simulated in {sim_s:.1f} s)"
    )
    codecs = {"none": 0, "gzip": 1}
    codecs.update(
        {
            k: v
            for k, v, ok in (("snappy", 2, has_snappy()), ("lz4", 3, has_lz4()), ("zstd", 4, has_zstd()))
            if ok
        }
    )
    print(f"  codecs aiokafka 0.14 can use here without extra packages: {', '.join(codecs)}")
    by_type: defaultdict[str, int] = defaultdict(int)
    raw = 0
    for e in events:
        n = len(encode_event(e)) + len(user_key(e.domain, e.user))
        by_type[e.type] += n
        raw += n
    top = sorted(by_type.items(), key=lambda kv: -kv[1])[:4]
    print("  largest shares of the raw bytes: " + ", ".join(f"{k} {100 * v / raw:.0f}%" for k, v in top))

    def batches(linger_s: float) -> list[list[tuple[bytes, bytes]]]:
        # per agent and topic, events spooled within linger_s of the first one go in one batch
        open_: dict[tuple[str, str], tuple[datetime, list[tuple[bytes, bytes]]]] = {}
        out: list[list[tuple[bytes, bytes]]] = []
        for e in events:
            k = (e.agent_id, type(e).category)
            rec = (user_key(e.domain, e.user).encode(), encode_event(e))
            cur = open_.get(k)
            if cur is not None and (e.ts - cur[0]).total_seconds() <= linger_s:
                cur[1].append(rec)
            else:
                if cur is not None:
                    out.append(cur[1])
                open_[k] = (e.ts, [rec])
        out.extend(v[1] for v in open_.values())
        return out

    from agent.settings import AgentSettings

    default_linger = AgentSettings().linger_s
    measured: dict[tuple[float, str], float] = {}
    for linger in sorted({0.0, 5.0, 60.0, default_linger, 900.0}):
        bs = batches(linger)
        line = []
        base = None
        for name, code in codecs.items():
            total = 0
            for batch in bs:
                b = DefaultRecordBatchBuilder(2, code, False, 1, 0, 0, 1 << 20)
                for i, (key, value) in enumerate(batch):
                    b.append(i, 0, key, value, [])
                total += len(b.build())
            per_day = total / user_days
            measured[(linger, name)] = per_day
            base = base or per_day
            line.append(f"{name} {per_day / 1024:6.1f} KB ({per_day / base:.2f}x)")
        print(f"  linger {linger:4.0f} s, {len(bs) / user_days:6.0f} batches/user-day: " + "   ".join(line))
    print("  (record-batch bytes as produced; the produce-request framing adds ~60 bytes per request)")
    print(
        f"  raw msgpack+key: {raw / user_days / 1024:.1f} KB per user-day; with the defaults "
        f"(gzip, linger_s={default_linger:.0f}): {measured[(default_linger, 'gzip')] / 1024:.1f} KB per "
        f"user-day = {21 * measured[(default_linger, 'gzip')] / 1e6:.2f} MB per 21-working-day month "
        f"(goal < 5 MB; {measured[(default_linger, 'gzip')] / measured[(0.0, 'none')]:.2f}x the "
        "per-event uncompressed baseline)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60, help="measurement time per run (default 60)")
    p.add_argument("--users", type=int, default=20, help="simulated users for the bytes measurement")
    p.add_argument("--skip-cpu", action="store_true", help="only the bytes measurement")
    a = p.parse_args()
    if not a.skip_cpu:
        cpu_and_memory(a.seconds)
    wire_bytes(a.users)


if __name__ == "__main__":
    main()
