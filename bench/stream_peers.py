"""The peers ``bench/bench_stream.py`` measures beside ``desktrace-stream``, each run as its own process:

- ``quix``: quixstreams (the optional ``bench`` extra) with a 300 s session window per user key over the
  same three raw topics, the same msgspec decode, event-time timestamps, RocksDB state with changelog
  topics, 1 s commits, closed sessions produced to an output topic;
- ``faust``: a Faust agent with the worker's settings (``take_events`` batches, 1 s commits) that only
  decodes: the floor of Faust's per-event machinery;
- ``aiokafka``: a bare aiokafka consumer that only decodes (msgspec), no group, no commits: the floor of the
  consumer itself.

Each prints one JSON line ``{"events": n, "seconds": s}`` when it has consumed ``--events`` events, timed
from the first consumed event to the last, then exits.

    .venv/bin/python bench/stream_peers.py {quix|faust|aiokafka} --prefix P --events N [--bootstrap H:P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proto.codec import decode_event, decode_events
from proto.topics import Topics


class _Done(Exception):
    pass


class Counter:
    """Counts consumed events; remembers when the first and the ``target``-th were seen."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.n = 0
        self.first = 0.0

    def add(self, k: int) -> bool:
        if not self.first:
            self.first = time.perf_counter()
        self.n += k
        return self.n >= self.target

    def report(self) -> None:
        print(json.dumps({"events": self.n, "seconds": time.perf_counter() - self.first}), flush=True)


# ---- quixstreams ---------------------------------------------------------------------------------------


def run_quix(bootstrap: str, topics: Topics, target: int, gap_s: float) -> None:
    from quixstreams import Application
    from quixstreams.models.serializers import Deserializer

    class MsgspecEvent(Deserializer):
        def __call__(self, value: bytes, ctx: Any) -> Any:
            return decode_event(value)

    def event_time(value: Any, headers: Any, timestamp: int, ts_type: Any) -> int:
        return int(value.ts.timestamp() * 1000)

    counter = Counter(target)
    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=bootstrap,
            consumer_group=f"{topics.prefix}quix-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            commit_interval=1.0,
            state_dir=state_dir,
            loglevel="ERROR",
        )
        sdfs = [
            app.dataframe(
                app.topic(name, value_deserializer=MsgspecEvent(), key_deserializer="bytes",
                          timestamp_extractor=event_time)
            )
            for name in topics.raw
        ]
        sdf = sdfs[0]
        for other in sdfs[1:]:
            sdf = sdf.concat(other)

        def count(value: Any) -> None:
            if counter.add(1):
                counter.report()
                app.stop()

        sdf = sdf.update(count)
        gap_ms = int(gap_s * 1000)
        sdf = sdf.session_window(inactivity_gap_ms=gap_ms, grace_ms=gap_ms).count().final()
        sdf.to_topic(app.topic(f"{topics.prefix}quix.sessions", value_serializer="json"))
        app.run()


# ---- Faust decode-only agent ---------------------------------------------------------------------------


def run_faust(bootstrap: str, topics: Topics, target: int, batch: int) -> None:
    import faust

    counter = Counter(target)
    datadir = tempfile.mkdtemp(prefix="faustfloor-")  # not ./<app id>-data in the caller's directory
    app = faust.App(
        f"{topics.prefix}faustfloor-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        datadir=datadir,
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        stream_buffer_maxsize=max(16384, 4 * batch),
        key_serializer="raw",
        value_serializer="raw",
        topic_disable_leader=True,
    )
    topic = app.topic(*topics.raw, key_serializer="raw", value_serializer="raw")

    @app.agent(topic, concurrency=1)
    async def decode_only(stream: Any) -> None:
        async for events in stream.take_events(batch, within=0.5):
            sum(1 for _ in decode_events([e.message.value for e in events]))
            if counter.add(len(events)):
                counter.report()
                shutil.rmtree(datadir, ignore_errors=True)
                os._exit(0)  # the measurement is done; no graceful shutdown needed

    worker = faust.Worker(app, loglevel="ERROR", quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()


# ---- bare aiokafka -------------------------------------------------------------------------------------


async def run_aiokafka(bootstrap: str, topics: Topics, target: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics.raw, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, max_partition_fetch_bytes=4 << 20,
    )
    counter = Counter(target)
    await consumer.start()
    try:
        while True:
            got = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in got.values():
                n = sum(1 for _ in decode_events([r.value for r in records]))
                if counter.add(n):
                    counter.report()
                    return
    finally:
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("peer", choices=["quix", "faust", "aiokafka"])
    p.add_argument("--prefix", required=True, help="topic prefix of the run")
    p.add_argument("--events", type=int, required=True, help="events to consume")
    p.add_argument("--batch", type=int, default=10000)
    p.add_argument("--gap", type=float, default=300.0, help="session window inactivity gap, seconds")
    p.add_argument("--bootstrap", default=os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    a = p.parse_args()
    topics = Topics(a.prefix)
    if a.peer == "quix":
        run_quix(a.bootstrap, topics, a.events, a.gap)
    elif a.peer == "faust":
        run_faust(a.bootstrap, topics, a.events, a.batch)
    else:
        asyncio.run(run_aiokafka(a.bootstrap, topics, a.events))


if __name__ == "__main__":
    main()
