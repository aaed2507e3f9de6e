"""Event to session published latency of one ``desktrace-stream`` worker under a steady offered load.

    nice .venv/bin/python bench/bench_latency.py [--rate 20000] [--seconds 40] [--users 2000]
        [--start-late 10] [--state-format 4]

Publishes generated events (``tests.support.events.generate_events``, about 10% out of order, 5%
duplicates) to fresh raw topics (6 partitions) at ``--rate`` events/s, paced by the wall clock, while one
worker consumes them. The latency is the worker's own ``desktrace_stream_publish_latency_seconds``
histogram: the wall clock when a session record was acknowledged minus the Kafka timestamp of the
earliest record of its user among those settled together (an upper bound of the time from the event that
closed the session). The first ``--warmup`` seconds are left out (bucket counts are differenced). Prints
the offered and achieved rates, the worker's CPU use and final lag, and p50/p90/p99 as the upper bounds
of the histogram buckets that hold them. Needs a broker (``DESKTRACE_KAFKA_BOOTSTRAP``); creates and
deletes its own topics.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_offline import disorder
from bench.bench_stream import WORKER_TOTALS, worker_totals
from bench.procstat import cpu_seconds
from devstack.topics import delete_topics, ensure_topics
from proto.topics import Topics
from tests.support.events import generate_events
from tests.support.kafka import Record, event_records
from tests.support.metrics import metric_sum
from tests.support.process import ServiceHandle, worker_process
from tests.support.stream import worker_env

METRIC = "desktrace_stream_publish_latency_seconds"
BUCKETS = (
    "0.05", "0.1", "0.25", "0.5", "0.75", "1.0", "1.25", "1.5", "1.75", "2.0", "2.5", "3.0", "5.0", "10.0",
    "30.0", "60.0", "+Inf",
)


async def scrape(worker: ServiceHandle) -> str:
    """The worker's metrics page, fetched once and in a thread: this process's event loop also runs the
    producer, and blocking it (a request per sample, as before) stalled the offered events for a second
    around each scrape, which then showed up as the worker's latency."""
    status, text = await asyncio.to_thread(worker.get, "/metrics")
    if status != 200:
        raise RuntimeError(f"the worker's metrics answered HTTP {status}")
    return text


def buckets(text: str) -> dict[str, float]:
    """Cumulative bucket counts of the latency histogram."""
    return {le: metric_sum(text, f"{METRIC}_bucket", le=le) for le in BUCKETS}


def quantile(before: dict[str, float], after: dict[str, float], q: float) -> str:
    """The upper bound of the bucket holding quantile ``q`` of the observations between two scrapes."""
    total = after["+Inf"] - before["+Inf"]
    if total <= 0:
        return "n/a"
    for le in BUCKETS:
        if after[le] - before[le] >= q * total:
            return f"<= {le} s"
    return "> 60 s"


async def offer(
    bootstrap: str, records: list[Record], rate: float, seconds: float, partitions: int
) -> float:
    """Send ``records`` at ``rate`` per second for at most ``seconds`` (partitioned by key as the agents'
    producer does); returns the achieved rate. Every 5 ms the records due are appended to whole record
    batches per partition (``send_batch``, timestamped as they are appended): a per-record ``send`` costs
    this 2-core machine about half a core at 20,000 records/s, and the producer's own queueing then shows
    up as the worker's latency."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from stream.record_batches import send_in_batches

    partitioner = DefaultPartitioner()
    every = list(range(partitions))
    where = {key: partitioner(key, every, every) for key in {key for _, key, _ in records}}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        limit = min(len(records), int(rate * seconds))
        while sent < limit:
            due = min(limit, int(rate * (time.perf_counter() - started)) + 1)
            groups: dict[tuple[str, int], list[Record]] = {}
            for rec in records[sent:due]:
                groups.setdefault((rec[0], where[rec[1]]), []).append(rec)
            for (topic, partition), recs in groups.items():
                await send_in_batches(producer, topic, partition, recs, lambda r: (r[1], r[2], []))
            sent = due
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return sent / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> None:
    topics = Topics(f"lat{uuid.uuid4().hex[:8]}.")
    await ensure_topics(args.bootstrap, topics, partitions=6)
    try:
        need = int(args.rate * args.seconds * 1.05)
        hours = max(1.2, need / args.users / 108)
        t = time.perf_counter()
        events = disorder(generate_events(seed=1, users=args.users, hours=hours), random.Random(2))
        records = event_records(topics, events)
        del events
        # The records are millions of objects: a full collection over them stalls the producer for a
        # second (and the stall shows up as latency); they live until the end, so out of the collector.
        gc.collect()
        gc.freeze()
        print(f"{len(records):,} events of {args.users} users generated in {time.perf_counter() - t:.0f}s",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            env = worker_env(args.bootstrap, topics, Path(tmp) / "data", DESKTRACE_CLOSE_TIMEOUT="600",
                             # the worker's default scan (a third of the close timeout): the tests' 0.5 s
                             # scan holds the processing lock 60 times as often
                             DESKTRACE_SCAN_INTERVAL=str(args.scan_interval),
                             DESKTRACE_COMMIT_INTERVAL=str(args.commit_interval),
                             DESKTRACE_STATE_FORMAT=str(args.state_format))
            worker = worker_process(env, Path(tmp) / "worker.log")
            sender = None
            if args.start_late:  # a worker (re)started with a backlog while the agents keep sending
                sender = asyncio.create_task(offer(args.bootstrap, records, args.rate, args.seconds, 6))
                await asyncio.sleep(args.start_late)
            await asyncio.to_thread(worker.start, ready_timeout=120)
            assert worker.proc is not None
            pid = worker.proc.pid
            try:
                if sender is None:
                    sender = asyncio.create_task(offer(args.bootstrap, records, args.rate, args.seconds, 6))
                await asyncio.sleep(args.warmup)
                first = await scrape(worker)
                before, cpu0, t0 = buckets(first), cpu_seconds(pid), time.perf_counter()
                achieved = await sender
                last = await scrape(worker)
                t_first, t_last = worker_totals(first), worker_totals(last)
                totals = {n: t_last[n] - t_first[n] for n in WORKER_TOTALS}
                lag = metric_sum(last, "desktrace_stream_consumer_lag")
                cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - t0)
                deadline = time.monotonic() + 120
                while worker.metric("desktrace_stream_consumer_lag") > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - polls another process
                    await asyncio.sleep(0.5)
                await asyncio.sleep(args.commit_interval + 1)
                after = buckets(await scrape(worker))
            finally:
                worker.stop()
        n = after["+Inf"] - before["+Inf"]
        print(f"offered {args.rate:,.0f} events/s for {args.seconds:g}s: sent at {achieved:,.0f} events/s; "
              f"worker CPU {cpu * 100:.0f}% of a core; lag when the producer stopped {lag:,.0f} records")
        print(f"event to session published ({n:,.0f} sessions after the {args.warmup:g}s warm-up): "
              f"p50 {quantile(before, after, 0.5)}, p90 {quantile(before, after, 0.9)}, "
              f"p99 {quantile(before, after, 0.99)}")
        n_b = totals["batch_size_count"]
        if n_b:
            n_r, b_s = totals["batch_size_sum"], totals["batch_processing_seconds_sum"]
            n_c, c_s = totals["commit_seconds_count"], totals["commit_seconds_sum"]
            print(f"while offered: {n_b:,.0f} batches of {n_r / n_b:,.0f} records on average, "
                  f"{b_s / n_b:.3f} s each ({b_s / n_r * 1e6:.1f} us per record); "
                  f"{n_c:,.0f} commits of {c_s / max(1.0, n_c):.3f} s on average, "
                  f"{totals['settle_seconds_sum'] / max(1.0, n_c):.3f} s of it settling")
    finally:
        await delete_topics(args.bootstrap, topics)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20_000, help="offered events/s (default 20,000)")
    parser.add_argument("--seconds", type=float, default=40, help="how long to offer them (default 40)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds left out at the start (default 10)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--start-late", type=float, default=0,
                        help="start the worker this many seconds after the load (a restart with a backlog "
                        "while the agents keep sending; the warm-up counts from the worker's start)")
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--state-format", type=int, default=2, choices=(2, 3, 4),
                        help="the worker's state_format (default 2)")
    parser.add_argument("--scan-interval", type=float, default=0.0,
                        help="the worker's scan_interval (default 0: its own default, a third of the 600 s "
                        "close timeout; before session 15 the benches ran the tests' 0.5 s)")
    parser.add_argument("--bootstrap", default=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
