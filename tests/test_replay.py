"""desktrace-replay against a real Kafka: valid lines arrive on the right raw topics with the agents' codec
and key; invalid lines are reported (file:line, error class, never the content) and counted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

import proto
from devstack.samples import sample_event, sample_fields
from proto import Topics

pytestmark = pytest.mark.kafka

SECRET = "Quarterly-Salaries-Secret.xlsx"


def run_replay(
    args: list[str],
    bootstrap: str,
    prefix: str,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESKTRACE_KAFKA_BOOTSTRAP": bootstrap, "DESKTRACE_TOPIC_PREFIX": prefix}
    return subprocess.run(
        [sys.executable, "-m", "devstack.replay", *args],
        env=env,
        capture_output=True,
        input=stdin.decode() if stdin is not None else None,
        text=True,
        timeout=60,
        check=False,
    )


def consume_all(bootstrap: str, topics: Topics, count: int) -> dict[str, list[tuple[bytes, bytes]]]:
    async def go() -> dict[str, list[tuple[bytes, bytes]]]:
        consumer = AIOKafkaConsumer(
            *topics.raw,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        out: dict[str, list[tuple[bytes, bytes]]] = {}
        n = 0
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while n < count and loop.time() < deadline:
                for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                    out.setdefault(tp.topic, []).extend((r.key, r.value) for r in recs)
                    n += len(recs)
            # anything beyond the expected count would be a bug: give it a moment to show up
            for tp, recs in (await consumer.getmany(timeout_ms=300)).items():
                out.setdefault(tp.topic, []).extend((r.key, r.value) for r in recs)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def test_replay_publishes_valid_lines_and_reports_invalid_ones(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    heartbeat = sample_fields("Heartbeat", 3, user="Bob", domain="Lab")
    missing_user = sample_fields("Lock", 5)
    del missing_user["user"]
    naive = sample_fields("Unlock", 6)
    naive["ts"] = "2024-03-04T09:00:00"
    future = sample_fields("Logon", 7)
    future["type"] = "TeleportEvent"
    lines = [
        json.dumps(sample_fields("WindowSwitch", 1)),  # 1 ui
        json.dumps(sample_fields("HardwareKeyboardEvent", 2)),  # 2 hid
        "",  # 3 blank: ignored, not an error
        json.dumps(heartbeat),  # 4 presence, other user
        '{"type": "WindowSwitch", "title": "' + SECRET + '", ',  # 5 truncated JSON
        json.dumps(missing_user),  # 6 missing field
        json.dumps(naive),  # 7 naive time
        json.dumps(future),  # 8 unknown type
        json.dumps(sample_fields("Lock", 9)),  # 9 presence
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")

    proc = run_replay([str(src)], kafka_bootstrap, topics.prefix)

    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    err = proc.stderr
    assert f"{src}:5: rejected (undecodable)" in err
    assert f"{src}:6: rejected (invalid)" in err and "missing required field `user`" in err
    assert f"{src}:7: rejected (invalid)" in err and "timezone" in err
    assert f"{src}:8: rejected (unknown_type)" in err and "TeleportEvent" in err
    assert ":3:" not in err and ":1:" not in err
    assert SECRET not in err
    assert "published 4 events, rejected 4 lines" in err

    got = consume_all(kafka_bootstrap, topics, 4)
    assert sorted((t, len(v)) for t, v in got.items()) == sorted(
        [(topics.ui, 1), (topics.hid, 1), (topics.presence, 2)]
    )
    assert got[topics.ui] == [(b"corp\\alice", proto.encode_event(sample_event("WindowSwitch", 1)))]
    assert got[topics.hid] == [(b"corp\\alice", proto.encode_event(sample_event("HardwareKeyboardEvent", 2)))]
    presence = {proto.decode_event(v).seq: (k, proto.decode_event(v)) for k, v in got[topics.presence]}
    assert presence[3][0] == b"lab\\bob" and presence[3][1].type == "Heartbeat"
    assert presence[9] == (b"corp\\alice", sample_event("Lock", 9))


def test_replay_all_valid_from_stdin_exits_0(kafka_bootstrap: str, topics: Topics) -> None:
    data = "".join(json.dumps(sample_fields(t, i)) + "\n" for i, t in enumerate(("Logon", "WindowOpen")))
    proc = run_replay(["-"], kafka_bootstrap, topics.prefix, stdin=data.encode())
    assert proc.returncode == 0, proc.stderr
    assert "published 2 events, rejected 0 lines" in proc.stderr
    got = consume_all(kafka_bootstrap, topics, 2)
    assert {t: len(v) for t, v in got.items()} == {topics.presence: 1, topics.ui: 1}


def test_replay_usage_and_connection_errors_exit_2(tmp_path: Path) -> None:
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps(sample_fields("Logon", 1)) + "\n", encoding="utf-8")
    unreachable = run_replay([str(src)], "127.0.0.1:1", "x.")
    assert unreachable.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in unreachable.stderr
    missing = run_replay([str(tmp_path / "nope.jsonl")], "127.0.0.1:1", "x.")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    usage = run_replay([], "127.0.0.1:1", "x.")
    assert usage.returncode == 2 and "usage:" in usage.stderr
