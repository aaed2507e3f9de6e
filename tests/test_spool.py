"""The spool: bounded with the drop policy (oldest HID first, then UI, heartbeats last) and drop counts, an
event larger than the bound refused without emptying anything; survives SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# ---- the bound holds: refusals, drop order HID -> UI -> presence ---------------------------------------


def ev(seq: int, kind: str, size: int = 100) -> SpoolRecord:
    """An event of class ``hid``, ``ui`` or ``pre`` (presence: heartbeats and the like), ``size`` bytes."""
    return SpoolRecord(topic=kind, key=b"k", value=b"x" * (size - len(kind) - 1), seq=seq,
                       hid=kind == "hid", ui=kind == "ui")


def _stored(sp: Spool) -> list[tuple[int, str]]:
    return [(g.seq, g.topic) for g in sp.peek(10_000)]


def _db_bytes(path: Path) -> int:
    import sqlite3

    db = sqlite3.connect(str(path))
    try:
        return int(db.execute("SELECT coalesce(sum(size), 0) FROM events").fetchone()[0])
    finally:
        db.close()


def test_an_event_larger_than_the_bound_is_refused_and_empties_nothing(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1000)
    sp.append([ev(0, "pre"), ev(1, "ui"), ev(2, "hid"), ev(3, "ui")], next_seq=4)
    before = _stored(sp)
    # alone, and in a batch with an event that fits
    assert sp.append([ev(4, "ui", size=1001)], next_seq=5) == 1
    assert _stored(sp) == before
    assert sp.append([ev(5, "ui", size=50_000), ev(6, "pre")], next_seq=7) == 1
    assert _stored(sp) == [*before, (6, "pre")]
    st = sp.stats()
    assert (st.refused_too_large, st.dropped_total, st.dropped_unreported) == (2, 2, 2)
    assert st.bytes == _db_bytes(tmp_path / "s.db") == 500 and sp.next_seq == 7
    sp.close()
    sp = Spool(tmp_path / "s.db", max_bytes=1000)  # the reason is kept on disk
    assert sp.stats().refused_too_large == 2
    sp.close()


def test_drop_order_is_hid_then_ui_then_heartbeats(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1000)
    # stored: 4 presence (heartbeats), 3 UI, 3 HID, interleaved; full
    kinds = ["pre", "ui", "hid", "pre", "ui", "hid", "pre", "ui", "hid", "pre"]
    sp.append([ev(i, k) for i, k in enumerate(kinds)], next_seq=10)
    # one heartbeat more: the oldest HID goes
    assert sp.append([ev(10, "pre")], next_seq=11) == 1
    assert (2, "hid") not in _stored(sp)
    # four UI more: the two other HID, then the two oldest UI
    assert sp.append([ev(11 + i, "ui") for i in range(4)], next_seq=15) == 4
    assert [s for s, k in _stored(sp) if k in ("hid", "ui")] == [7, 11, 12, 13, 14]
    assert [s for s, k in _stored(sp) if k == "pre"] == [0, 3, 6, 9, 10]
    # a heartbeat while only UI and heartbeats are stored: a UI event goes, never a heartbeat
    assert sp.append([ev(15, "pre")], next_seq=16) == 1
    assert [s for s, k in _stored(sp) if k == "pre"] == [0, 3, 6, 9, 10, 15]
    assert sp.stats().bytes == 1000


def test_a_batch_larger_than_the_bound_keeps_the_bound_and_the_order(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1000)
    sp.append([ev(0, "pre"), ev(1, "hid")], next_seq=2)
    # 14 events of 100 bytes in one append: 1400 bytes for a 1000-byte spool
    batch = [ev(2 + i, k) for i, k in enumerate(["hid", "ui", "pre", "hid", "ui", "hid", "ui"] * 2)]
    dropped = sp.append(batch, next_seq=16)
    st = sp.stats()
    assert st.bytes <= 1000 and st.bytes == _db_bytes(tmp_path / "s.db")
    assert dropped == 2 + 14 - st.events
    kept = _stored(sp)
    # 1600 bytes for 1000: six events go, all HID (the stored one first, then the oldest new ones); every
    # UI event and heartbeat stays
    assert dropped == 6
    assert [k for _, k in kept].count("pre") == 3 and [k for _, k in kept].count("ui") == 6
    assert [s for s, k in kept if k == "hid"] == [14]
    assert [s for s, _ in kept] == sorted(s for s, _ in kept)  # still FIFO


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["hid", "ui", "pre"]), st.integers(20, 700)),
                         min_size=1, max_size=8), min_size=1, max_size=12))
def test_the_bound_holds_for_any_appends(tmp_path_factory: pytest.TempPathFactory,
                                         appends: list[list[tuple[str, int]]]) -> None:
    path = tmp_path_factory.mktemp("spool") / "s.db"
    sp = Spool(path, max_bytes=1000)
    seq = 0
    for batch in appends:
        before = _stored(sp)
        recs = [ev(seq + i, k, size) for i, (k, size) in enumerate(batch)]
        seq += len(recs)
        sp.append(recs, next_seq=seq)
        after = _stored(sp)
        assert sp.stats().bytes == _db_bytes(path) <= 1000
        lost = [k for item in before if item not in after for k in [item[1]]]
        lost += [r.topic for r in recs if (r.seq, r.topic) not in after]
        kept = {k for _, k in after}
        # a dropped event of a later class means no event of an earlier class is left
        order = ["hid", "ui", "pre"]
        for k in lost:
            assert not any(order.index(x) < order.index(k) for x in kept), (lost, after)
    sp.close()
