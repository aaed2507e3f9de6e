"""The worker's decoded per-user state (``stream.live``) and its table values (``stream.state``): pure, no
broker. What the Faust wiring relies on: a changed user is written once per flush whatever the batches in
between, the cache is bounded, revoked partitions are forgotten, and stored values round-trip."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bench_sessionizer import user_day
from proto import events as E
from proto.clock import epoch_ms
from stream.core import Sessionizer, SessionizerConfig, UserState, decode_state, encode_state
from stream.live import Flushed, LiveStates, LiveUser
from stream.state import UserRecord, decode_record, encode_record

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CORE = Sessionizer()


def clicks(user: str, n: int, start: int = 0) -> list[E.Envelope]:
    return [
        E.HardwareMouseClick(
            agent_id=f"a-{user}", seq=start + i + 1, ts=T0 + timedelta(seconds=30 * (start + i)),
            input="hardware", user=user, domain="corp", host="pc1",
        )
        for i in range(n)
    ]


def apply(states: LiveStates, user: str, events: list[E.Envelope], partition: int = 0) -> LiveUser:
    key = f"corp\\{user}".encode()
    live = states.get(key)
    if live is None:
        live = LiveUser(UserRecord(core=b"", partition=partition, last_seen=0.0), None)
    live.core, _ = CORE.apply(key.decode(), live.core, events)
    states.put(key, live)
    return live


def test_a_changed_user_is_written_once_per_flush_and_reads_back() -> None:
    store: dict[bytes, bytes] = {}
    states = LiveStates(store)
    for b in range(5):  # five batches of the same user: one write
        apply(states, "ann", clicks("ann", 10, 10 * b))
    apply(states, "bob", clicks("bob", 3), partition=4)
    written: list[Flushed] = []
    assert states.flush(written.append) == 2
    assert sorted((w.key, w.partition) for w in written) == [(b"corp\\ann", 0), (b"corp\\bob", 4)]
    assert states.flush(written.append) == 0  # nothing changed since
    # The stored value is the state as applied: a fresh cache over the same store reads it back.
    again = LiveStates(store).get(b"corp\\ann")
    assert again is not None and again.core is not None
    assert encode_state(again.core) == encode_state(states.get(b"corp\\ann").core)  # type: ignore[union-attr]
    assert len(again.core.ts) == 50
    assert decode_record(written[0].value) == decode_record(store[written[0].key])


def test_the_cache_is_bounded_and_keeps_recent_users() -> None:
    store: dict[bytes, bytes] = {}
    states = LiveStates(store, max_users=3)
    for u in range(10):
        apply(states, f"u{u}", clicks(f"u{u}", 2))
    assert len(states) == 10  # changed users stay until they are written
    states.flush()
    assert len(states) == 3 and len(store) == 10
    assert set(dict(states._cache)) == {b"corp\\u7", b"corp\\u8", b"corp\\u9"}
    live = states.get(b"corp\\u0")  # evicted: decoded again from the store
    assert live is not None and live.core is not None and len(live.core.ts) == 2


def test_revoked_partitions_are_forgotten_without_writing() -> None:
    store: dict[bytes, bytes] = {}
    states = LiveStates(store)
    apply(states, "ann", clicks("ann", 2), partition=1)
    states.flush()
    apply(states, "ann", clicks("ann", 2, 2), partition=1)  # changed again, not flushed
    apply(states, "bob", clicks("bob", 2), partition=2)
    assert states.drop_partitions({1}) == 1
    assert states.flush() == 1  # bob only
    ann = LiveStates(store).get(b"corp\\ann")
    assert ann is not None and ann.core is not None and len(ann.core.ts) == 2  # the committed state


def test_a_checkpoint_is_what_a_forgotten_user_goes_back_to_and_the_next_flush_writes_it_once() -> None:
    """What the processor relies on when it lets go of a user's taken records before a commit: forgetting
    the user (it failed) goes back to the checkpoint, not to the last flush; the checkpoint's values reach
    the next flush's write (the changelog) once, the newer one only for a user changed since, and those of
    revoked partitions not at all (their next owner may have written since)."""
    store: dict[bytes, bytes] = {}
    states = LiveStates(store)
    apply(states, "ann", clicks("ann", 2))
    apply(states, "bob", clicks("bob", 2), partition=1)
    apply(states, "cid", clicks("cid", 2), partition=2)
    states.flush()
    for user, p in (("ann", 0), ("bob", 1), ("cid", 2)):
        apply(states, user, clicks(user, 3, 2), partition=p)
    apply(states, "dan", clicks("dan", 1), partition=3)
    assert states.checkpoint([b"corp\\ann", b"corp\\bob", b"corp\\cid"]) == 3  # not dan (unsettled)
    assert states.changed == 4
    apply(states, "ann", clicks("ann", 4, 5))  # changed again after the checkpoint, then failing:
    states.forget(b"corp\\ann")
    ann = states.get(b"corp\\ann")
    assert ann is not None and ann.core is not None and len(ann.core.ts) == 5  # the checkpoint's state
    apply(states, "bob", clicks("bob", 1, 5), partition=1)  # changed since: its newer value only
    assert states.drop_partitions({2}) == 1  # cid's partition revoked
    written: list[Flushed] = []
    assert states.flush(written.append) == 3
    values = {w.key: decode_record(w.value) for w in written}
    assert sorted(values) == [b"corp\\ann", b"corp\\bob", b"corp\\dan"]
    assert len(written) == 3
    assert len(decode_state(values[b"corp\\ann"].core).ts) == 5
    assert len(decode_state(values[b"corp\\bob"].core).ts) == 6
    assert states.flush(written.append) == 0 and len(written) == 3  # held values go once


def test_users_lists_cached_and_stored_users_once() -> None:
    store: dict[bytes, bytes] = {}
    states = LiveStates(store, max_users=1)
    apply(states, "ann", clicks("ann", 2))
    apply(states, "bob", clicks("bob", 2))
    states.flush()
    apply(states, "cid", clicks("cid", 1))
    listed = {key: (live is not None, raw is not None) for key, live, raw in states.users()}
    assert listed == {b"corp\\ann": (False, True), b"corp\\bob": (True, False), b"corp\\cid": (True, False)}


def test_unreadable_stored_values_start_the_user_afresh() -> None:
    states = LiveStates({b"corp\\ann": b"\x78not zlib", b"corp\\bob": b"\x93\x01\x02\x03"})
    assert states.get(b"corp\\ann") is None
    assert states.get(b"corp\\bob") is None
    assert states.unreadable == 2


def test_a_stored_state_with_an_integer_beyond_64_bits_starts_the_user_afresh() -> None:
    """msgpack holds integers up to 2**64 - 1, a state column 64-bit signed ones: such a value is unreadable
    (counted, the user starts afresh), not an error that stops the worker."""
    from stream.core.state import _encoder, _Light, _WireV2

    light = _encoder.encode(_Light(0, 0, 0, None, 0, ["pc1"], ["UTC"], [1], [2**63], [], [], [], [], {}, {}))
    core = _encoder.encode(_WireV2(3, light, [], []))
    with pytest.raises(ValueError, match="64-bit"):
        decode_state(core)
    states = LiveStates({b"corp\\cy": encode_record(UserRecord(core=core, partition=0, last_seen=0.0), 3)})
    assert states.get(b"corp\\cy") is None
    assert states.unreadable == 1


def test_table_values_are_compressed_and_old_values_still_read() -> None:
    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 3000))
    rec = UserRecord(core=encode_state(core), partition=3, last_seen=1.5)
    value = encode_record(rec)
    raw_columns = msgspec.msgpack.encode([core.ts.tolist(), core.code.tolist()])
    assert len(value) < len(raw_columns) / 3
    assert decode_record(value) == rec
    assert decode_record(msgspec.msgpack.encode(rec)) == rec  # written by an earlier version: plain
    assert decode_record(zlib.compress(msgspec.msgpack.encode(rec), 1)) == rec  # and compressed whole
    assert decode_state(decode_record(value).core).ts == core.ts
    # Records written before the core counted corrections held the published ids: still read, ignored.
    old = {**msgspec.structs.asdict(rec), "published": {"x": 1}}
    assert decode_record(msgspec.msgpack.encode(old)) == rec
    assert decode_record(zlib.compress(msgspec.msgpack.encode(old), 1)) == rec


def _columns(st: UserState) -> tuple[list[int], ...]:
    return (st.ts.tolist(), st.code.tolist(), st.pts.tolist(), st.sc.tolist(), st.comps.tolist(),
            st.cks.tolist(), st.latest, st.latest_eb, st.floor, st.open_from, st.n_open, st.hosts, st.tzs,
            st.pub, st.seen)  # type: ignore[return-value]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_state_writes_reuse_old_chunks_and_always_read_back_the_whole_state(version: int) -> None:
    """Three days of a user's events in batches, some late (inserted among old facts), with pruning past
    the retention horizon: every encoding (in every state format), reusing the sealed chunks of the one
    before, decodes to exactly the state, and equals the encoding of a copy made without any reuse; an
    update that only appends keeps the old chunks' bytes."""
    rng = random.Random(4)
    core = Sessionizer(SessionizerConfig(retention_s=86_400))
    evs: list[E.Envelope] = []
    for day in range(3):  # the machine off at night: a new presence period each day, so pruning can cut
        evs += [e for e in user_day(1, rng, day) if 6 <= e.ts.hour < 20]
    late = set(rng.sample(range(len(evs)), len(evs) // 50))
    held: list[E.Envelope] = []
    st: UserState | None = None
    reused = 0
    for i in range(0, len(evs), 97):
        batch = [e for j, e in enumerate(evs[i : i + 97], i) if j not in late]
        held += [e for j, e in enumerate(evs[i : i + 97], i) if j in late]
        if i % (97 * 7) == 0 and held:
            batch, held = batch + held, []
        before = list(st.cache[0].blobs) if st is not None and st.cache is not None else []
        st, _ = core.apply("corp\\user1", st, batch)
        data = encode_state(st, version)
        assert data[:2] == bytes([0x94, version])
        assert _columns(decode_state(data)) == _columns(st)
        fresh = msgspec.structs.replace(st, cache=None, edit_ts=0, edit_pts=0, pub_raw=None)
        assert _columns(decode_state(encode_state(fresh, version))) == _columns(st)
        after = st.cache[0].blobs
        reused += sum(1 for a, b in zip(before, after, strict=False) if a is b)
        st = decode_state(data) if i % (97 * 11) == 0 else st  # sometimes continue from the stored bytes
    assert st is not None and len(st.cache[0].blobs) >= 1 and reused > 30, (len(st.ts), reused)
    assert st.floor > 0  # the horizon pruned the first day


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["append", "append", "append", "insert", "cut", "v4"]), st.integers(1, 60),
                  st.integers(0, 10**6), st.booleans(), st.booleans()),
        max_size=60,
    ),
    version=st.sampled_from([2, 3]),
)
def test_writes_that_extend_the_kept_tail_deltas_read_back_the_columns(
    ops: list[tuple[str, int, int, bool, bool]], version: int
) -> None:
    """Versions 2 and 3 delta-encode the unsealed tail of ``ts`` and ``pts`` and keep those deltas for the
    next write, which only adds the new facts' (``_ChunkCache.tail_deltas``). Driven as the core drives
    it (facts appended, inserted among old ones with the lowest changed index noted, cut from the front,
    now and then a version 4 write, not every change written), every write decodes to exactly the
    columns, across sealing, and is byte for byte the write that makes every delta again."""
    state = UserState()
    t = 1_714_986_000_000
    for op, k, where, on_pts, write in ops:
        col = state.pts if on_pts else state.ts
        if op == "append":
            for _ in range(k):
                t += 1 + where % 5_000
                col.append(t)
                if not on_pts:
                    state.code.append(where % 7)
        elif op == "insert" and col:
            j = where % len(col)
            col.insert(j, col[j])  # the same time again: sorted still
            if on_pts:
                state.edit_pts = min(state.edit_pts, j)
            else:
                state.code.insert(j, 8)
                state.edit_ts = min(state.edit_ts, j)
        elif op == "cut":
            k = min(k, len(state.ts))
            del state.ts[:k], state.code[:k], state.pts[: min(k, len(state.pts))]
            state.edit_ts = state.edit_pts = 0
        if op == "v4" or write:
            data = encode_state(state, 4 if op == "v4" else version)
            back = decode_state(data)
            assert (back.ts, back.code, back.pts) == (state.ts, state.code, state.pts)
            if op != "v4":  # the very bytes of the same write with the deltas all made again: what readers of
                for cache in state.cache:  # every release that reads the version get
                    cache.tail_from = -1
                assert encode_state(state, version) == data


def test_a_state_written_in_version_1_still_reads() -> None:
    """Changelogs written before the chunked format hold version 1 states: a worker started on them must
    read them as they were."""
    from stream.core.state import _delta, _encoder, _Wire

    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 1500))
    v1 = _encoder.encode(_Wire(
        1, core.latest, core.latest_eb, core.floor, core.open_from, core.n_open, core.hosts, core.tzs,
        _delta(core.ts), core.code.tolist(), _delta(core.pts), _delta(core.sc), core.comps.tolist(),
        core.cks.tolist(), core.pub, core.seen,
    ))
    assert v1[:1] != encode_state(core)[:1]
    assert _columns(decode_state(v1)) == _columns(core)


def test_format_2_rewrites_its_recent_parts_in_stored_zlib_that_any_reader_inflates() -> None:
    """Format 2's parts that every write encodes again (the core's light part, the record's rest) are zlib
    streams of stored blocks (``stream.core.state.STORED``): the msgpack is in the value as it is, so a
    write does not deflate it, and plain ``zlib.decompress`` (what every release that reads format 2 does)
    gives it back. The sealed chunks, written once, stay deflated (smaller than their msgpack)."""
    from stream.core.state import _v2_decoder
    from stream.state import _split_decoder

    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 3000))
    value = encode_record(UserRecord(core=encode_state(core), partition=3, last_seen=1.5))
    split = _split_decoder.decode(value)
    assert split.v == 2
    rest = zlib.decompress(split.rest)
    assert rest in split.rest and msgspec.msgpack.decode(rest)["partition"] == 3
    wire = _v2_decoder.decode(split.core)
    light = zlib.decompress(wire.light)
    assert light in wire.light and len(light) > 100
    assert wire.ts_chunks and all(len(zlib.decompress(c)) > len(c) for c in wire.ts_chunks)
    assert _columns(decode_state(split.core)) == _columns(core)


def test_state_format_3_is_read_always_and_written_only_when_set() -> None:
    """Format 3 (the recent part and the record's rest without zlib) is read whatever the setting, so a
    worker of this release reads what any other writes; it is written only when ``state_format`` is 3
    (releases before it cannot read it), and format 2 by default."""
    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 3000))
    rec = UserRecord(core=encode_state(core), partition=3, last_seen=1.5)
    assert rec.core[:2] == b"\x94\x02" and encode_record(rec)[:2] == b"\x93\x02"
    with pytest.raises(ValueError, match="version 5"):
        encode_state(core, 5)
    with pytest.raises(ValueError, match="state format 5"):
        LiveStates({}, state_format=5)
    store: dict[bytes, bytes] = {}
    writer = LiveStates(store, state_format=3)
    writer.put(b"corp\\ann", LiveUser(UserRecord(core=b"", partition=3, last_seen=1.5), core))
    assert writer.flush() == 1
    value = store[b"corp\\ann"]
    assert value[:2] == b"\x93\x03" and decode_record(value).core[:2] == b"\x94\x03"
    reader = LiveStates(store)  # format 2: reads 3, writes 2
    live = reader.get(b"corp\\ann")
    assert live is not None and live.core is not None and _columns(live.core) == _columns(core)
    assert live.record.partition == 3 and live.record.last_seen == 1.5
    reader.put(b"corp\\ann", live)
    reader.flush()
    assert store[b"corp\\ann"][:2] == b"\x93\x02"
    assert _columns(decode_state(decode_record(store[b"corp\\ann"]).core)) == _columns(core)


def _mixed(user: str, n: int, legacy: bool) -> list[E.Envelope]:
    """``n`` minutes of a user with every kind of fact a state holds: hardware clicks, heartbeats with
    input times (``pts``), locks, two hosts and two time zones, pauses (presence periods), and with
    ``legacy`` working/stopped reports (``sc``; the core keeps no checkpoints then)."""
    out: list[E.Envelope] = []
    for i in range(n):
        if i % 200 > 150:  # away: presence periods and their checkpoints
            continue
        ts = T0 + timedelta(minutes=i)
        common = {"agent_id": f"a-{user}-{i % 2}", "seq": i + 1, "ts": ts, "user": user, "domain": "corp",
                  "host": f"pc{i % 2}", "tz": ("Europe/Paris", "America/New_York")[i % 2], "input": "none"}
        if legacy and i % 7 == 3:
            out.append(E.StateChange(**common, state="stopped" if i % 14 == 3 else "working"))
        elif i % 5 == 1:
            out.append(E.Heartbeat(**common, last_input_ts=ts - timedelta(seconds=20)))
        elif i % 97 == 50:
            out.append(E.Lock(**common))
        else:
            out.append(E.HardwareMouseClick(**{**common, "input": "hardware"}))
    return out


def test_format_4_writes_recent_columns_as_raw_little_endian_numbers_and_reads_every_column_back() -> None:
    """Format 4's light part holds each column as 64-bit little-endian numbers (absolute times): a write
    copies them instead of building lists of ints and deltas. Every column of a state that has them all
    (facts, points, legacy reports, periods, checkpoints, ``NO_TIME`` and other negative numbers) reads
    back; a format-2 reader of this release reads it, and bytes that are not whole numbers are refused as
    unreadable, never taken as a state."""
    import struct

    from stream.core.state import _columns_decoder, _v2_decoder

    cores: list[UserState] = []
    for legacy in (True, False):
        built: UserState | None = None
        for part in (_mixed("dee", 600, legacy)[i : i + 50] for i in range(0, 600, 50)):
            built, _ = CORE.apply("corp\\dee", built, part)
        assert built is not None and len(built.hosts) == len(built.tzs) == 2
        data = encode_state(built, 4)
        assert data[:2] == b"\x94\x04"
        assert _columns(decode_state(data)) == _columns(built)
        cores.append(built)
    assert all(any(len(getattr(c, col)) for c in cores) for col in ("ts", "pts", "sc", "comps", "cks"))
    assert any(v < 0 for v in cores[1].cks)  # NO_TIME in its checkpoints: signed numbers read back too
    core = cores[0]  # the one with legacy reports
    data = encode_state(core, 4)
    wire = _v2_decoder.decode(data)
    light = _columns_decoder.decode(wire.light)
    tail = len(light.ts) // 8
    assert tail and tail < len(core.ts)  # the older facts are in sealed chunks, as in formats 2 and 3
    assert list(struct.unpack(f"<{tail}q", light.ts)) == core.ts[-tail:].tolist()
    assert list(struct.unpack(f"<{len(core.sc)}q", light.sc)) == core.sc.tolist()
    # a format-2 worker of this release reads format 4 and writes 2
    store = {b"corp\\dee": encode_record(UserRecord(core=data, partition=1, last_seen=2.0), 4)}
    reader = LiveStates(store)
    live = reader.get(b"corp\\dee")
    assert live is not None and live.core is not None and _columns(live.core) == _columns(core)
    reader.put(b"corp\\dee", live)
    reader.flush()
    assert store[b"corp\\dee"][:2] == b"\x93\x02"
    # a column cut mid-number: refused
    broken = msgspec.structs.replace(light, code=light.code[:-3])
    from stream.core.state import _encoder, _WireV2

    bad = _encoder.encode(_WireV2(4, _encoder.encode(broken), wire.ts_chunks, wire.pts_chunks))
    with pytest.raises(ValueError, match="partial numbers"):
        decode_state(bad)
    states = LiveStates({b"corp\\dee": encode_record(UserRecord(core=bad, partition=1, last_seen=0.0), 4)})
    assert states.get(b"corp\\dee") is None and states.unreadable == 1


def _flood(n: int, user: str = "zed") -> list[E.Envelope]:
    """``n`` window events of one user a second apart, each from a new agent id and with a seq gap: the
    facts, the seq ranges and the fleet's agents all grow with ``n``."""
    return [
        E.WindowSwitch(agent_id=f"agent-{i % 5000}", seq=7 * i + 1, ts=T0 + timedelta(seconds=i),
                       input="none", user=user, domain="corp", host=f"pc{i % 300}", title="t")
        for i in range(n)
    ]


@pytest.mark.parametrize("state_format", [2, 4])
def test_no_value_written_is_larger_than_the_limit_and_normal_users_are_untouched(state_format: int) -> None:
    """A flooding user's value is made to fit ``max_value_bytes`` before it is written (its oldest facts go,
    the newest stay), so the changelog never refuses it; a normal user in the same flush is written whole,
    and the flooding user's state goes on taking events afterwards. In format 4 too, whose values are
    larger."""
    from stream import fleet

    store: dict[bytes, bytes] = {}
    limit = 40_000
    states = LiveStates(store, max_value_bytes=limit, shed=CORE.shed, state_format=state_format)
    flood = _flood(20_000)
    for i in range(0, len(flood), 2_000):
        key = b"corp\\zed"
        live = states.get(key) or LiveUser(UserRecord(core=b"", partition=0, last_seen=0.0), None)
        part = flood[i : i + 2_000]
        live.core, _ = CORE.apply("corp\\zed", live.core, part)
        fleet.observe(live.record.agents, part, 10**13)
        states.put(key, live)
        apply(states, "ann", clicks("ann", 20, start=i // 100))
        states.flush()
        assert max(len(v) for v in store.values()) <= limit
    assert states.shed_users >= 1 and states.oversized == 0
    zed = decode_record(store[b"corp\\zed"])
    core = decode_state(zed.core)
    assert core.ts[-1] == epoch_ms(flood[-1].ts)  # the newest facts are kept
    assert 0 < len(core.ts) < 20_000 and core.floor > epoch_ms(flood[0].ts)
    ann = decode_state(decode_record(store[b"corp\\ann"]).core)
    all_ann = [e for i in range(0, 20_000, 2_000) for e in clicks("ann", 20, i // 100)]
    whole, _ = CORE.apply("corp\\ann", None, all_ann)
    assert (ann.ts.tolist(), ann.code.tolist(), ann.floor) == (whole.ts.tolist(), whole.code.tolist(),
                                                               whole.floor)
    assert store[b"corp\\zed"][:2] == bytes([0x93, state_format])
    unlimited: dict[bytes, bytes] = {}
    plain = LiveStates(unlimited, state_format=state_format)  # without the limit: written whole
    live = LiveUser(UserRecord(core=b"", partition=0, last_seen=0.0), CORE.apply("corp\\zed", None, flood)[0])
    fleet.observe(live.record.agents, flood, 10**13)
    plain.put(b"corp\\zed", live)
    plain.flush()
    assert len(unlimited[b"corp\\zed"]) > limit


def test_a_record_too_large_for_its_facts_loses_its_least_recent_agents() -> None:
    """What cannot be shed as facts (the agents remembered, then the core itself) goes next, in that order;
    the value always ends up within the limit."""
    store: dict[bytes, bytes] = {}
    states = LiveStates(store, max_value_bytes=16_384, shed=CORE.shed)
    from stream.fleet import AgentSeen

    rng = random.Random(6)  # agent ids that do not compress
    record = UserRecord(core=b"", partition=1, last_seen=0.0,
                        agents={rng.randbytes(100).hex(): AgentSeen(last_ms=i) for i in range(200)})
    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 10))
    states.put(b"corp\\ann", LiveUser(record, core))
    states.flush()
    value = store[b"corp\\ann"]
    assert len(value) <= 16_384 and states.shed_users == 1
    kept = decode_record(value)
    assert 0 < len(kept.agents) < 200
    assert max(a.last_ms for a in kept.agents.values()) == 199  # the most recently heard stay
    assert decode_state(kept.core).ts.tolist() == core.ts.tolist()  # its few facts were not the problem


def test_unconfirmed_output_goes_first_when_a_record_is_too_large() -> None:
    """What only a crash before the output's acknowledgement would need (``UserRecord.unsent``) goes before
    any fact: the output is still sent, the facts would be lost for good."""
    store: dict[bytes, bytes] = {}
    states = LiveStates(store, max_value_bytes=16_384, shed=CORE.shed)
    rng = random.Random(8)
    record = UserRecord(core=b"", partition=1, last_seen=0.0, unsent=[rng.randbytes(400) for _ in range(60)])
    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 10))
    states.put(b"corp\\ann", LiveUser(record, core))
    states.flush()
    kept = decode_record(store[b"corp\\ann"])
    assert kept.unsent == [] and states.shed_users == 1
    assert decode_state(kept.core).ts.tolist() == core.ts.tolist()


def test_a_core_that_cannot_be_shed_is_started_afresh_to_fit() -> None:
    """Facts that all share one instant cannot be cut by time: the core itself goes (the user starts
    afresh; what was published stays published) rather than a value the changelog would refuse."""
    rng = random.Random(7)
    burst = [
        E.WindowSwitch(agent_id="a-1", seq=i + 1, ts=T0, input="none", user="bob", domain="corp",
                       host=rng.randbytes(100).hex())
        for i in range(300)
    ]
    core, _ = CORE.apply("corp\\bob", None, burst)
    store: dict[bytes, bytes] = {}
    states = LiveStates(store, max_value_bytes=16_384, shed=CORE.shed)
    states.put(b"corp\\bob", LiveUser(UserRecord(core=b"", partition=2, last_seen=0.0), core))
    states.flush()
    value = store[b"corp\\bob"]
    assert len(value) <= 16_384 and states.shed_users == 1
    record = decode_record(value)
    assert record.core == b"" and record.partition == 2
    live = states.get(b"corp\\bob")
    assert live is not None and live.core is None


def test_a_record_only_change_writes_the_core_bytes_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """``put_record`` (the confirmation of a user's output empties ``unsent``): the next flush writes the
    record with its core's bytes from the last write, without encoding the core again; a ``put`` in the
    same interval (the core changed) still encodes it."""
    import stream.live

    store: dict[bytes, bytes] = {}
    states = LiveStates(store)
    core, _ = CORE.apply("corp\\ann", None, clicks("ann", 10))
    states.put(b"corp\\ann", LiveUser(UserRecord(core=b"", partition=0, last_seen=0.0, unsent=[b"x"]), core))
    states.flush()
    core_bytes = decode_record(store[b"corp\\ann"]).core
    live = states.get(b"corp\\ann")
    assert live is not None
    live.record.unsent = []
    states.put_record(b"corp\\ann", live)
    assert states.changed == 1

    def no_encode(*args: object) -> bytes:
        raise AssertionError("the core was encoded again")

    monkeypatch.setattr(stream.live, "encode_state", no_encode)
    assert states.flush() == 1
    written = decode_record(store[b"corp\\ann"])
    assert written.unsent == [] and written.core == core_bytes
    monkeypatch.undo()
    live.core, _ = CORE.apply("corp\\ann", live.core, clicks("ann", 3, start=30))
    states.put(b"corp\\ann", live)
    states.put_record(b"corp\\ann", live)  # the core changed too: encoded
    states.flush()
    assert decode_state(decode_record(store[b"corp\\ann"]).core).ts.tolist() == live.core.ts.tolist()
