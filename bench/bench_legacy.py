"""Requests/s of the legacy ``POST /api/report`` on one gateway process, with the Kafka acknowledgement,
beside a bare Litestar handler that answers without Kafka, in the same run (run by hand):

    eval "$(.venv/bin/desktrace-local up)"      # or: source the stack's env (DESKTRACE_KAFKA_BOOTSTRAP)
    nice .venv/bin/python bench/bench_legacy.py [--seconds 10] [--connections 16]

Both servers are uvicorn (the same single-process, h11, no access log configuration ``desktrace-gateway``
uses) on loopback. The load is keep-alive HTTP/1.1 from one asyncio process with ``--connections``
concurrent connections, each posting the seed client's JSON body (a distinct user and ``ts`` per request,
so nothing is a retry). Topics are created under a throw-away prefix and deleted afterwards.

Prints requests/s, latency p50/p99 for each and the gateway's ratio to the bare handler. The machine is
shared: numbers are noisy; compare the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.pipeline import free_port
from devstack.topics import delete_topics, ensure_topics
from proto.topics import Topics
from tests.support.gateway import running_gateway

BARE_APP = '''
import uvicorn
from litestar import Litestar, post

@post("/api/report", status_code=200)
async def report(data: dict) -> dict:
    return {"success": True}

app = Litestar([report], logging_config=None)
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_config=None, access_log=False,
            server_header=False, log_level="warning")
'''


async def _one_connection(
    port: int, deadline: float, conn_id: int, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    base = datetime.now(UTC) - timedelta(hours=1)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            ts = (base + timedelta(milliseconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            state = "working" if n % 2 else "stopped"
            body = json.dumps({"user": f"bench{conn_id}", "state": state, "ts": ts})
            raw = body.encode()
            head = (
                f"POST /api/report HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(raw)}\r\nConnection: Keep-Alive\r\n\r\n"
            ).encode()
            t0 = time.perf_counter()
            writer.write(head + raw)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(status_line.split()[1])
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def load(port: int, seconds: float, connections: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-200 answers) of ``seconds`` of load on ``port``."""
    # warm-up (connections, Kafka metadata, JIT-free but caches)
    await asyncio.gather(*(_one_connection(port, time.perf_counter() + 1.0, c, [], []) for c in range(4)))
    latencies: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    await asyncio.gather(
        *(_one_connection(port, deadline, 1000 + c, latencies, errors) for c in range(connections))
    )
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return len(latencies) / elapsed, q[49] * 1000, q[98] * 1000, len(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per server")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    args = parser.parse_args()
    bootstrap = os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP")
    if not bootstrap:
        print("DESKTRACE_KAFKA_BOOTSTRAP is not set: start the stack (desktrace-local up)", file=sys.stderr)
        return 2
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:8]}.")
    asyncio.run(ensure_topics(bootstrap, topics, partitions=3))
    results: dict[str, tuple[float, float, float, int]] = {}
    try:
        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
        try:
            time.sleep(2.0)
            print(f"bare Litestar handler: {args.seconds:.0f} s of load ...", file=sys.stderr)
            bare_result = asyncio.run(load(port, args.seconds, args.connections))
            results["bare Litestar handler (no Kafka)"] = bare_result
        finally:
            bare.terminate()
            bare.wait(10)
        env = {
            "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap,
            "DESKTRACE_TOPIC_PREFIX": topics.prefix,
            "DESKTRACE_PG_DSN": "",
            "DESKTRACE_LOG_LEVEL": "WARNING",
        }
        with running_gateway(env, timeout_s=60) as url:
            gport = int(url.rsplit(":", 1)[1])
            print(f"desktrace-gateway POST /api/report: {args.seconds:.0f} s of load ...", file=sys.stderr)
            results["desktrace-gateway /api/report (Kafka acks=all)"] = asyncio.run(
                load(gport, args.seconds, args.connections)
            )
    finally:
        asyncio.run(delete_topics(bootstrap, topics))
    base = next(iter(results.values()))[0]
    print(f"{'server':<48} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8} {'ratio':>6}")
    for name, (rps, p50, p99, bad) in results.items():
        print(f"{name:<48} {rps:>9.0f} {p50:>8.1f} {p99:>8.1f} {bad:>8} {rps / base:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
