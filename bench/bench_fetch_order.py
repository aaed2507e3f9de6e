"""What the order of a backlog's records costs the sessions worker, in process (no Kafka).

The same events as ``bench_stream.py`` (``generate_events`` users, about 10% out of order), split into the
three raw topics x 6 partitions, go through ``Processor.handle_batch`` in three orders, each measured in
the same run:

- **time order**: as published (the baseline);
- **fetch order**: as a consumer catching up gets them, one fetch of at most ``--fetch-bytes`` per
  partition at a time, every partition in turn: the small topic's whole backlog comes first;
- **aligned**: the same fetches through ``stream.gather.BatchGather`` with ``align_wait_s`` 1, as the
  worker does, a partition with records waiting not fetched again until they are in a batch.

Batches are cut every ``--batch`` records (time and fetch order) or at the first poll that reaches it
(aligned; the gather's limit is the worker's ``batch_size``, 50,000: the worker cuts its batches when the
commit is due, 30,000-42,000 records in ``bench_stream.py``). Prints us per event and the ratios to time
order.

    nice .venv/bin/python bench/bench_fetch_order.py [--users 433 2000] [--events 260000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from bench.bench_offline import disorder
from proto.codec import encode_event
from proto.keys import event_user_key
from proto.topics import Topics
from stream.core import Sessionizer
from stream.gather import BatchGather
from stream.live import LiveStates
from stream.metrics import StreamMetrics
from stream.processor import Processor
from tests.support.events import generate_events

PARTITIONS = 6
BATCH_SIZE = 50_000  #: the worker's default batch_size: the gather's limit
T0_MS = 1_700_000_000_000


class Record(NamedTuple):
    """An aiokafka record's fields that the worker reads."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int


class _TP(NamedTuple):
    topic: str
    partition: int


def records(users: int, events: int) -> list[Record]:
    """The bench's events as raw records in publishing order, timestamped 1 ms apart."""
    hours = max(1.2, events / users / 108)
    evs = disorder(generate_events(seed=1, users=users, hours=hours), random.Random(2))
    topics = Topics("")
    offsets: dict[_TP, int] = defaultdict(int)
    out = []
    for i, e in enumerate(evs):
        key = event_user_key(e).encode()
        tp = _TP(topics.for_event(e), zlib.crc32(key) % PARTITIONS)
        out.append(Record(tp.topic, tp.partition, offsets[tp], key, encode_event(e), T0_MS + i))
        offsets[tp] += 1
    return out


class _Partitions:
    """The records as the broker's partitions hold them, fetched ``fetch_bytes`` at most per partition and
    fetch (aiokafka's ``max_partition_fetch_bytes``)."""

    def __init__(self, recs: list[Record], fetch_bytes: int) -> None:
        self.logs: dict[_TP, list[Record]] = defaultdict(list)
        for r in recs:
            self.logs[_TP(r.topic, r.partition)].append(r)
        self.pos = dict.fromkeys(self.logs, 0)
        self.fetch_bytes = fetch_bytes

    def pending(self) -> bool:
        return any(self.pos[tp] < len(log) for tp, log in self.logs.items())

    def fetch(self, tp: _TP) -> list[Record]:
        log = self.logs[tp]
        i = start = self.pos[tp]
        size = 0
        while i < len(log) and size < self.fetch_bytes:
            size += len(log[i].value)
            i += 1
        self.pos[tp] = i
        return log[start:i]


def fetch_order(recs: list[Record], fetch_bytes: int) -> list[Record]:
    """The records as a consumer catching up gets them: each partition's next fetch in every poll."""
    parts = _Partitions(recs, fetch_bytes)
    out: list[Record] = []
    while parts.pending():
        for tp in parts.logs:
            out.extend(parts.fetch(tp))
    return out


def aligned_batches(recs: list[Record], fetch_bytes: int, batch: int) -> list[list[Record]]:
    """The batches ``BatchGather`` (alignment on) makes of the same fetches, a held partition not fetched."""
    parts = _Partitions(recs, fetch_bytes)
    gather = BatchGather(limit=BATCH_SIZE, align_wait_s=1.0)
    now_ms = T0_MS + len(recs)  # the wall clock: every record was sent before
    out = []
    now = 0.0
    while parts.pending() or gather.held:
        now += 0.01
        holding = gather.holding()
        for tp in parts.logs:
            if tp not in holding:
                gather.add(tp, parts.fetch(tp), 1, now, now_ms)
        gather.release(list(parts.logs), lambda tp: len(parts.logs[tp]), now, now_ms)  # offsets 0 .. len-1
        if len(gather.batch) >= batch or not parts.pending():
            out.append(gather.take()[0])
    return [b for b in out if b]


def run(batches: list[list[Record]]) -> float:
    """Seconds ``Processor.handle_batch`` (and a state flush after each batch) takes for ``batches``."""
    proc = Processor(Topics(""), Sessionizer(), StreamMetrics(CollectorRegistry()), close_timeout_s=600)
    live = LiveStates({}, 5000)
    started = time.perf_counter()
    for b in batches:
        proc.handle_batch(b, live, 1e9)  # type: ignore[arg-type]  # the fields handle_batch reads
        live.flush(lambda f: None)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[433, 2000])
    parser.add_argument("--events", type=int, default=260_000)
    parser.add_argument("--batch", type=int, default=30_000, help="records per batch (the worker's: 30-42k)")
    parser.add_argument("--fetch-bytes", type=int, default=1_048_576, help="max_partition_fetch_bytes")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for users in args.users:
        recs = records(users, args.events)
        by_fetch = fetch_order(recs, args.fetch_bytes)
        orders = {
            "time order": [recs[i:i + args.batch] for i in range(0, len(recs), args.batch)],
            "fetch order": [by_fetch[i:i + args.batch] for i in range(0, len(by_fetch), args.batch)],
            "aligned": aligned_batches(recs, args.fetch_bytes, args.batch),
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, batches in orders.items():
                best[name] = min(best.get(name, float("inf")), run(batches))
        print(f"{users} users, {len(recs):,} events:")
        for name, seconds in best.items():
            print(f"  {name:12s} {seconds / len(recs) * 1e6:6.1f} us/event   "
                  f"ratio to time order {seconds / best['time order']:.2f}", flush=True)


if __name__ == "__main__":
    main()
