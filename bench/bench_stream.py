"""Throughput of one ``desktrace-stream`` worker end to end through a real broker, beside its peers measured
in the same run on the same topics (``bench/stream_peers.py``): quixstreams' 300 s session window (needs the
optional ``bench`` extra), a Faust agent that only decodes (Faust's floor) and a bare aiokafka consumer that
only decodes (the consumer's floor). Prints events/s and CPU microseconds per event of each, and the ratios.

    nice .venv/bin/python bench/bench_stream.py [--users 433 2000] [--events 260000] [--rounds 2]
        [--commit-intervals 1] [--catchup-intervals 1 5] [--fetch-waits 0.1 1.5] [--state-formats 2 3]
        [--partitions 6] [--log-append-time] [--hours 5]

For each user count, the same ~``--events`` events (or ``--hours`` of events per user;
``tests.support.events.generate_events`` users, about 10% of them out of order, 5% duplicates) are
published once to fresh raw topics (``--partitions``, 6); then every subject consumes them all from the
start, in rounds (each round runs every subject once, alternating, so that all see the same machine load);
the best round of each is kept. Every subject is its own process with its own consumer group, timed from
its first consumed event to the last (the worker: from the end of its first batch to the commit of its
last, when every raw partition's offsets are committed to their end: until then its last sessions are not
published; counting the events it takes in that window: all of them, since the first batch's records
wait for the next settle); for the worker, the time split (handling, committing, the rest) and its main
thread's CPU are printed too. Needs a broker
(``DESKTRACE_KAFKA_BOOTSTRAP``); creates and deletes its own topics. """

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_offline import disorder
from bench.procstat import cpu_seconds
from devstack.topics import delete_topics, ensure_topics
from proto.topics import Topics
from tests.support.events import generate_events
from tests.support.kafka import publish_events, wait_committed
from tests.support.metrics import metric_sum
from tests.support.process import ServiceHandle, worker_process
from tests.support.stream import worker_env

PEERS = Path(__file__).resolve().parent / "stream_peers.py"


def _main_thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (the event loop; the rest is Faust's consumer thread and
    the client libraries' threads)."""
    return cpu_seconds(pid, pid)


def peer_rate(peer: str, bootstrap: str, prefix: str, n: int, batch: int) -> tuple[float, float]:
    """Events/s and CPU us/event (whole process, start-up included) of one peer run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, str(PEERS), peer, "--prefix", prefix, "--events", str(n), "--batch", str(batch),
         "--bootstrap", bootstrap],
        capture_output=True, text=True, timeout=900, check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line[line.index("{"):] for line in out.stdout.splitlines() if '{"events"' in line]
    if not lines:
        raise RuntimeError(f"{peer} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    got = json.loads(lines[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return got["events"] / got["seconds"], cpu / got["events"] * 1e6


def worker_rate(
    bootstrap: str, topics: Topics, app_id: str, n: int, workdir: Path, batch_size: int, commit_s: float,
    fetch_wait_s: float, state_format: int = 2, align_wait_s: float = 1.0, catchup_s: float = 5.0,
    scan_s: float = 0.0,
) -> tuple[float, float]:
    """Events/s of one worker (from its first counted event to the commit of the n-th) and its CPU us/event
    meanwhile."""
    env = worker_env(bootstrap, topics, workdir / "data", DESKTRACE_BATCH_SIZE=str(batch_size),
                     DESKTRACE_CLOSE_TIMEOUT="600", DESKTRACE_STREAM_APP_ID=app_id,
                     DESKTRACE_SCAN_INTERVAL=str(scan_s),  # 0: the default, a third of the close timeout
                     DESKTRACE_COMMIT_INTERVAL=str(commit_s), DESKTRACE_FETCH_MAX_WAIT_S=str(fetch_wait_s),
                     DESKTRACE_STATE_FORMAT=str(state_format), DESKTRACE_ALIGN_WAIT_S=str(align_wait_s),
                     DESKTRACE_CATCHUP_COMMIT_INTERVAL_S=str(catchup_s))
    worker = worker_process(env, workdir / "worker.log")
    # Watched from its metrics endpoint's start, not from /readyz: the worker handles records before its
    # group watch reports it ready (every 2 s), and a run of a few seconds would be measured from its middle.
    worker.ready_path = "/metrics"
    try:
        worker.start(ready_timeout=120)
        assert worker.proc is not None
        pid = worker.proc.pid
        first = cpu0 = 0.0
        count = first_count = 0.0
        deadline = time.monotonic() + 900
        committed = _CommitWatch(bootstrap, app_id, topics.raw, 900)
        while count < n and time.monotonic() < deadline:
            # The window opens once the first batch has been handled; the events taken (counted) before
            # that are left out of it. The worker takes a batch's events at the next settle, not when it
            # handles the batch: those of its first batch are then taken, and counted, in the window.
            count = worker.metric("desktrace_stream_events_total")
            if not first and worker.metric("desktrace_stream_batch_processing_seconds_count"):
                first, first_count, cpu0 = time.perf_counter(), count, cpu_seconds(pid)
                split0 = _time_split(worker)
                main0 = _main_thread_cpu(pid)
            time.sleep(0.2)
        if count < n:
            raise RuntimeError(f"worker consumed {count} of {n} events:\n{worker.tail()}")
        if first_count >= n:
            raise RuntimeError(f"the worker handled all {n:,} events in its first batch, which is not timed: "
                               "raise --events (or lower --batch-size)")
        # The events are processed once their commit is done (their sessions published, their users' state
        # written): the window ends there, not at the last event handled.
        end = committed.wait(max(1.0, deadline - time.monotonic()))
        if end is None:
            raise RuntimeError(f"the worker handled all {n:,} events but did not commit them:\n"
                               f"{worker.tail()}")
        elapsed = end - first
        cpu = cpu_seconds(pid) - cpu0
        _print_time_split(split0, _time_split(worker), elapsed, cpu, _main_thread_cpu(pid) - main0)
        return (n - first_count) / elapsed, cpu / (n - first_count) * 1e6
    finally:
        worker.stop()


class _CommitWatch:
    """When consumer group ``group`` has committed every partition of ``topics`` to its end offset
    (``time.perf_counter()``), watched from a thread started at once (the broker is asked every 0.1 s)."""

    def __init__(self, bootstrap: str, group: str, topics: tuple[str, ...], within: float) -> None:
        self._at: float | None = None
        self._thread = threading.Thread(target=self._watch, args=(bootstrap, group, topics, within),
                                        daemon=True)
        self._thread.start()

    def _watch(self, bootstrap: str, group: str, topics: tuple[str, ...], within: float) -> None:
        if asyncio.run(wait_committed(bootstrap, group, topics, within)):
            self._at = time.perf_counter()

    def wait(self, timeout: float) -> float | None:
        """The time of the full commit, None if it did not come within ``timeout`` seconds from now."""
        self._thread.join(timeout)
        return self._at


#: The worker's totals: batches handled, their records and seconds; commits, their seconds; the seconds of the
#: commits spent settling users; the settles forced within batches (too many records waiting) and their
#: seconds; the silence scans and their seconds.
WORKER_TOTALS = ("batch_size_count", "batch_size_sum", "batch_processing_seconds_sum", "commit_seconds_count",
                 "commit_seconds_sum", "settle_seconds_sum", "forced_settle_seconds_count",
                 "forced_settle_seconds_sum", "scan_seconds_count", "scan_seconds_sum")


def worker_totals(metrics_text: str) -> dict[str, float]:
    """:data:`WORKER_TOTALS` (without their ``desktrace_stream_`` prefix) from one page of the worker's
    metrics."""
    return {n: metric_sum(metrics_text, f"desktrace_stream_{n}") for n in WORKER_TOTALS}


def _time_split(worker: ServiceHandle) -> dict[str, float]:
    status, text = worker.get("/metrics")  # one scrape for all of them
    if status != 200:
        raise RuntimeError(f"the worker's metrics answered HTTP {status}")
    return worker_totals(text)


def _print_time_split(
    before: dict[str, float], after: dict[str, float], elapsed: float, cpu: float, main_cpu: float
) -> None:
    """Where the worker's wall time went while measured: handling batches, settles forced within them (more
    records waiting than ``Processor.max_taken_records``), committing, and the rest (waiting for fetches,
    Faust), with the batch count and mean size; then the same per record handled, which tells the
    per-record work (handling) from the per-user work of settling the users changed since the last settle
    and of each commit (writing their state) when user counts are compared."""
    d = {k: after[k] - before[k] for k in after}
    batches = d["batch_size_count"]
    records = max(d["batch_size_sum"], 1)
    size = d["batch_size_sum"] / max(batches, 1)
    forced = d["forced_settle_seconds_sum"]
    handle, commit = d["batch_processing_seconds_sum"] - forced, d["commit_seconds_sum"]
    settle = d["settle_seconds_sum"]
    commits = d["commit_seconds_count"]
    print(f"    worker: {batches:.0f} batches of {size:,.0f} records, {commits:.0f} commits; "
          f"of {elapsed:.1f} s wall (CPU {cpu:.1f} s, main thread {main_cpu:.1f} s): "
          f"handling {handle:.1f} s, {d['forced_settle_seconds_count']:.0f} settles forced by records "
          f"waiting {forced:.1f} s, committing {commit:.1f} s, "
          f"the rest (fetching, Faust) {elapsed - handle - forced - commit:.1f} s, of which "
          f"{d['scan_seconds_count']:.0f} silence scans {d['scan_seconds_sum']:.1f} s; settling (part of "
          f"committing) {settle:.1f} s", flush=True)
    us = 1e6 / records
    print(f"    per record: handling {handle * us:.1f} us, settling {(forced + settle) * us:.1f} us ("
          f"forced {forced * us:.1f}, in commits {settle * us:.1f}), committing the rest "
          f"{(commit - settle) * us:.1f} us", flush=True)


async def _cleanup(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if prefix in t]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def run_users(args: argparse.Namespace, users: int) -> dict[str, tuple[float, float]]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    raw_configs = {"message.timestamp.type": "LogAppendTime"} if args.log_append_time else None
    await ensure_topics(args.bootstrap, topics, partitions=args.partitions, raw_configs=raw_configs)
    try:
        # ~108 events per user-hour
        hours = args.hours if args.hours is not None else max(1.2, args.events / users / 108)
        events = disorder(generate_events(seed=1, users=users, hours=hours), random.Random(2))
        t = time.perf_counter()
        n = await publish_events(args.bootstrap, topics, events)
        print(f"\n{users} users: published {n:,} events in {time.perf_counter() - t:.1f}s", flush=True)
        best: dict[str, tuple[float, float]] = {}
        workers = {
            f"desktrace@{c:g}s/{w:g}s/v{f}/a{a:g}/k{k:g}": (c, w, f, a, k)
            for c in args.commit_intervals for w in args.fetch_waits for f in args.state_formats
            for a in args.align_waits for k in args.catchup_intervals
        }
        peers = [p for p in args.peers if p != "quix" or not args.no_quix]
        subjects = [*peers, *workers]
        for r in range(args.rounds):
            order = subjects if r % 2 == 0 else subjects[::-1]
            for s in order:
                if s in workers:
                    commit_s, wait_s, fmt, align_s, catchup_s = workers[s]
                    with tempfile.TemporaryDirectory() as tmp:
                        app_id = (f"{prefix}stream{r}{len(s)}{commit_s:g}{wait_s:g}v{fmt}a{align_s:g}"
                                  f"k{catchup_s:g}")
                        rate, cpu = worker_rate(
                            args.bootstrap, topics, app_id, n, Path(tmp), args.batch_size, commit_s, wait_s,
                            fmt, align_s, catchup_s, args.scan_interval,
                        )
                else:
                    rate, cpu = peer_rate(s, args.bootstrap, prefix, n, args.batch_size)
                print(f"  round {r + 1}: {s:16s} {rate:10,.0f} events/s  {cpu:7.1f} us CPU/event", flush=True)
                if s not in best or rate > best[s][0]:
                    best[s] = (rate, cpu)
        return best
    finally:
        await _cleanup(args.bootstrap, prefix)
        await delete_topics(args.bootstrap, topics)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[433, 2000])
    parser.add_argument("--events", type=int, default=260_000, help="about this many events per user count")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50000,
                        help="the worker's batch_size (its default) and the peers' batch")
    parser.add_argument("--no-quix", action="store_true", help="skip the quixstreams peer")
    parser.add_argument("--peers", nargs="*", choices=("aiokafka", "faust", "quix"),
                        default=["aiokafka", "faust", "quix"],
                        help="the peers to run besides the worker (all three by default; none: the worker "
                        "alone, to compare two versions of it run after one another on the same hour)")
    parser.add_argument("--commit-intervals", type=float, nargs="+", default=[1.0],
                        help="worker commit_interval values to measure (one worker run each)")
    parser.add_argument("--fetch-waits", type=float, nargs="+", default=[0.1],
                        help="worker fetch_max_wait_s values to measure (one worker run each per commit "
                        "interval; Faust's own is 1.5)")
    parser.add_argument("--state-formats", type=int, nargs="+", default=[2],
                        help="worker state_format values to measure (one worker run each per commit interval "
                        "and fetch wait)")
    parser.add_argument("--align-waits", type=float, nargs="+", default=[1.0],
                        help="worker align_wait_s values to measure (one worker run each per commit "
                        "interval, fetch wait and state format; 0: records in fetch order)")
    parser.add_argument("--catchup-intervals", type=float, nargs="+", default=[5.0],
                        help="worker catchup_commit_interval_s values to measure (one worker run each per "
                        "commit interval, fetch wait, state format and align wait; 0: commit_interval)")
    parser.add_argument("--hours", type=float, default=None,
                        help="hours of events per user, for every user count (instead of about --events "
                        "events per user count): the same events per user whatever the number of users")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of each raw topic")
    parser.add_argument("--scan-interval", type=float, default=0.0,
                        help="the worker's scan_interval (default 0: its own default, a third of the 600 s "
                        "close timeout; before session 15 the benches ran the tests' 0.5 s)")
    parser.add_argument("--log-append-time", action="store_true",
                        help="raw topics stamped by the broker (message.timestamp.type=LogAppendTime), not "
                        "by the producer")
    parser.add_argument("--bootstrap", default=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    args = parser.parse_args()
    if not args.no_quix and importlib.util.find_spec("quixstreams") is None:
        print("quixstreams is not installed (pip install -e '.[bench]'): its peer is skipped")
        args.no_quix = True
    results = {users: await run_users(args, users) for users in args.users}
    print("\nbest of each (events/s, CPU us/event) and ratios desktrace/peer:")
    for users, best in results.items():
        for name, (d_rate, d_cpu) in best.items():
            if not name.startswith("desktrace"):
                continue
            commit, wait, fmt, align, catchup = name.split("@")[1].split("/")
            print(f"{users} users: desktrace-stream (commit_interval {commit}, fetch_max_wait_s {wait}, "
                  f"state_format {fmt[1:]}, align_wait_s {align[1:]}, catchup_commit_interval_s "
                  f"{catchup[1:]}s) "
                  f"{d_rate:,.0f} events/s, {d_cpu:.1f} us/event")
            for peer in ("quix", "faust", "aiokafka"):
                if peer in best:
                    rate, cpu = best[peer]
                    print(f"  {peer:9s} {rate:10,.0f} events/s {cpu:7.1f} us/event   "
                          f"ratio {d_rate / rate:6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
