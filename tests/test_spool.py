"""The spool: bounded with the drop policy (oldest HID first) and drop counts; survives SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.spool import Spool, SpoolRecord, integrity_ok

ROOT = Path(__file__).resolve().parents[1]


def rec(seq: int, hid: bool, size: int = 100) -> SpoolRecord:
    topic = "hid" if hid else "ui"
    return SpoolRecord(topic=topic, key=b"k", value=b"x" * (size - len(topic) - 1), seq=seq, hid=hid)


def test_fifo_ack_and_restart_keep_order_and_counters(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sp = Spool(db, max_bytes=100_000)
    sp.bind_agent("agent-1")
    sp.append([rec(0, False), rec(1, True), rec(2, False)], next_seq=3)
    got = sp.peek(10)
    assert [g.seq for g in got] == [0, 1, 2]
    assert sp.ack([got[0].id, got[1].id, 999_999]) == 2
    assert sp.stats().events == 1 and sp.stats().bytes == 100
    sp.close()
    sp = Spool(db, max_bytes=100_000)
    assert (sp.agent_id, sp.next_seq, len(sp), sp.stats().bytes) == ("agent-1", 3, 1, 100)
    assert [g.seq for g in sp.peek(10, after_id=0)] == [2]
    sp.close()


def test_full_spool_drops_oldest_hid_first_then_oldest_rest_and_counts(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1000)
    # 4 UI + 6 HID = exactly 1000 bytes
    sp.append([rec(i, hid=i % 5 not in (0, 1)) for i in range(10)], next_seq=10)
    assert sp.stats().bytes == 1000 and sp.stats().dropped_total == 0
    before = [(g.seq, g.topic) for g in sp.peek(100)]
    assert sum(t == "hid" for _, t in before) == 6
    # two more UI events: the two oldest HID events (seq 2, 3) make room
    assert sp.append([rec(10, False), rec(11, False)], next_seq=12) == 2
    assert [g.seq for g in sp.peek(100)] == [0, 1, 4, 5, 6, 7, 8, 9, 10, 11]
    # seven more UI events: the 4 remaining HID go, then the 3 oldest UI events
    assert sp.append([rec(12 + i, False) for i in range(7)], next_seq=19) == 7
    assert [g.seq for g in sp.peek(100)] == [6, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert all(g.topic == "ui" for g in sp.peek(100))
    st = sp.stats()
    assert (st.events, st.bytes, st.dropped_total, st.dropped_unreported) == (10, 1000, 9, 9)
    # a heartbeat that reports the 9 drops: its own append may drop again, counted for the next one
    assert sp.append([rec(19, False)], next_seq=20, dropped_reported=9) == 1
    assert sp.stats().dropped_unreported == 1 and sp.stats().dropped_total == 10
    # an event larger than the whole spool can never fit: counted, not stored
    assert sp.append([rec(20, False, size=5000)], next_seq=21) == 1
    assert sp.stats().bytes <= 1000 and sp.next_seq == 21
    sp.close()


CHILD = r"""
import sys
from agent.spool import Spool, SpoolRecord
sp = Spool(sys.argv[1], max_bytes=50_000_000)
seq = sp.next_seq
while True:
    batch = [SpoolRecord("ui", b"key", b"v" * 300, seq + i, hid=bool(i % 2)) for i in range(3)]
    sp.append(batch, next_seq=seq + 3)
    print("C", *[r.seq for r in batch], flush=True)
    seq += 3
    if seq % 30 == 0:
        old = sp.peek(4)
        # announced before acking: a kill between the ack's commit and a later print would otherwise
        # make acknowledged events look lost
        print("A", *[o.seq for o in old], flush=True)
        sp.ack([o.id for o in old])
"""


def test_sigkill_mid_write_leaves_an_intact_db_and_every_committed_unacked_event(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    committed: set[int] = set()
    acked: set[int] = set()
    for rnd in range(3):  # kill it several times, restarting on the same file
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
        assert child.stdout is not None
        deadline = time.monotonic() + 20
        lines = 0
        while lines < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            kind, *nums = line.split()
            (committed if kind == "C" else acked).update(int(n) for n in nums)
            lines += 1
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: the child is writing as fast as it can
        child.wait(timeout=10)
        # drain what it printed before dying
        for line in child.stdout:
            kind, *nums = line.split()
            (committed if kind == "C" else acked).update(int(n) for n in nums)
        assert lines >= 150, "the child did not get going"
        assert integrity_ok(db)
        sp = Spool(db)
        stored = {s.seq for s in sp.peek(1_000_000)}
        # every event whose append returned and that was not acknowledged is still there
        missing = (committed - acked) - stored
        assert not missing, f"lost {len(missing)} committed events"
        # at most the one batch in flight at each kill is there without having been reported
        assert len(stored - committed) <= 3 * (rnd + 1)
        assert sp.next_seq > max(stored | committed)
        assert sp.stats().events == len(stored)
        sp.close()
