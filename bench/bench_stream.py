"""Throughput of one ``desktrace-stream`` worker end to end through a real broker, beside a baseline
measured in the same run on the same topics: a bare aiokafka consumer that only decodes (msgspec batch
decode). Prints both rates and their ratio.

    .venv/bin/python bench/bench_stream.py [--users 60] [--hours 8] [--bootstrap HOST:PORT]

Needs a broker (``eval "$(.venv/bin/desktrace-local up)"``); creates and deletes its own topics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from devstack.topics import delete_topics, ensure_topics
from proto.codec import decode_events
from proto.topics import Topics
from stream.testing import (
    WorkerProcess,
    app_id_for,
    delete_internal_topics,
    generate_events,
    publish,
    shuffled_with_duplicates,
    worker_env,
)


async def baseline(bootstrap: str, topics: Topics, n: int) -> float:
    """Events/s of consume + decode only (timed from the first record to the n-th)."""
    consumer = AIOKafkaConsumer(*topics.raw, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    seen, decoded, first = 0, 0, 0.0
    try:
        while seen < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in got.values():
                if not first:
                    first = time.perf_counter()
                decoded += sum(1 for _ in decode_events([r.value for r in records]))
                seen += len(records)
    finally:
        await consumer.stop()
    assert decoded == n
    return n / (time.perf_counter() - first)


def worker_rate(
    bootstrap: str, topics: Topics, n: int, workdir: Path, batch_size: int
) -> tuple[float, float]:
    """Events/s of one worker (timed from its first counted event to the n-th), and its start-up time."""
    env = worker_env(bootstrap, topics, workdir / "data", DESKTRACE_BATCH_SIZE=str(batch_size),
                     DESKTRACE_CLOSE_TIMEOUT="600")
    worker = WorkerProcess(env, workdir / "worker.log")
    t0 = time.perf_counter()
    try:
        worker.start()
        ready = time.perf_counter() - t0
        first = 0.0
        count = 0.0
        deadline = time.monotonic() + 600
        while count < n and time.monotonic() < deadline:
            count = worker.metric("desktrace_stream_events_total")
            if count and not first:
                first, first_count = time.perf_counter(), count
            time.sleep(0.05)
        if count < n:
            raise RuntimeError(f"worker consumed {count} of {n} events:\n{worker.tail()}")
        return (n - first_count) / (time.perf_counter() - first), ready
    finally:
        worker.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--bootstrap", default=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    args = parser.parse_args()

    topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(args.bootstrap, topics, partitions=3)
    try:
        events = shuffled_with_duplicates(generate_events(seed=1, users=args.users, hours=args.hours), seed=2)
        t = time.perf_counter()
        n = await publish(args.bootstrap, topics, events)
        print(f"published {n} events for {args.users} users in {time.perf_counter() - t:.1f}s")
        base = await baseline(args.bootstrap, topics, n)
        with tempfile.TemporaryDirectory() as tmp:
            rate, ready = worker_rate(args.bootstrap, topics, n, Path(tmp), args.batch_size)
        base2 = await baseline(args.bootstrap, topics, n)  # again, after: the machine is shared
        base = max(base, base2)
        print(f"baseline (aiokafka consume + msgspec decode): {base:,.0f} events/s")
        print(f"desktrace-stream worker (batch {args.batch_size}):     {rate:,.0f} events/s "
              f"(ready after {ready:.1f}s)")
        print(f"ratio worker/baseline: {rate / base:.2f}")
    finally:
        await delete_internal_topics(args.bootstrap, app_id_for(topics))
        await delete_topics(args.bootstrap, topics)


if __name__ == "__main__":
    asyncio.run(main())
