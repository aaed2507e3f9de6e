"""The wire contract (proto/) without services: codecs, time normalisation, errors, sessions, schemas."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

import proto
from proto import EventDecodeError
from proto.events import EVENT_TYPES, Heartbeat, Logon, to_utc_ms
from proto.schema import stale_files
from proto.sessions import Session, SessionRetraction
from tests.support.events import every_event_type, sample_event, sample_fields

CET = timezone(timedelta(hours=1))


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
def test_every_event_type_round_trips_msgpack_and_json(type_name: str) -> None:
    event = sample_event(type_name, seq=7)
    assert event.type == type_name
    assert proto.decode_event(proto.encode_event(event)) == event
    assert proto.event_from_json(proto.event_to_json(event)) == event
    # the tag on the wire is the type name, so other languages can dispatch on it
    assert msgspec.msgpack.decode(proto.encode_event(event))["type"] == type_name


def test_sample_set_covers_every_type_with_a_topic() -> None:
    events = every_event_type()
    assert sorted(e.type for e in events) == sorted(EVENT_TYPES)
    topics = proto.Topics("p.")
    assert {topics.for_event(e) for e in events} == set(topics.raw)


def test_times_normalise_to_utc_milliseconds() -> None:
    local = datetime(2024, 3, 4, 9, 15, 30, 123456, tzinfo=CET)
    event = Logon(agent_id="a", seq=1, ts=local, input="none", user="u", domain="d", host="h")
    assert event.ts == datetime(2024, 3, 4, 8, 15, 30, 123000, tzinfo=UTC)
    assert event.ts.tzinfo is UTC
    from_json = proto.event_from_json(
        b'{"type":"Logon","agent_id":"a","seq":1,"ts":"2024-03-04T09:15:30.123456+01:00",'
        b'"input":"none","user":"u","domain":"d","host":"h"}'
    )
    assert from_json == event
    assert proto.event_to_json(event).count(b"2024-03-04T08:15:30.123") == 1
    hb = sample_event("Heartbeat", 3)
    assert isinstance(hb, Heartbeat) and hb.last_input_ts is not None
    assert hb.last_input_ts.tzinfo is UTC and hb.last_input_ts.microsecond % 1000 == 0
    assert to_utc_ms(local) == event.ts
    # Already UTC but finer than a millisecond: truncated too (the decoders skip the work only for UTC
    # times whole to the millisecond).
    utc_us = Logon(
        agent_id="a", seq=1, ts=local.astimezone(UTC), input="none", user="u", domain="d", host="h"
    )
    assert utc_us.ts == event.ts
    hb_local = msgspec.structs.replace(hb, last_input_ts=local)
    assert hb_local.last_input_ts == event.ts and hb_local.last_input_ts.tzinfo is UTC


def test_naive_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Logon(
            agent_id="a", seq=1, ts=datetime(2024, 3, 4, 9, 0), input="none", user="u", domain="d", host="h"
        )
    fields = sample_fields("Logon", 1)
    fields["ts"] = "2024-03-04T09:00:00"
    with pytest.raises(EventDecodeError) as err:
        proto.event_from_json(msgspec.json.encode(fields))
    assert err.value.error_class == "invalid" and "timezone" in str(err.value)
    fields["ts"] = datetime(2024, 3, 4, 9, 0)
    with pytest.raises(EventDecodeError) as err2:
        proto.decode_event(msgspec.msgpack.encode(fields))
    assert err2.value.error_class == "invalid"


def test_undecodable_payload_is_a_clear_error() -> None:
    with pytest.raises(EventDecodeError) as err:
        proto.decode_event(b"\xc1\xff not msgpack")
    assert err.value.error_class == "undecodable"
    assert str(err.value).startswith("undecodable raw event")
    with pytest.raises(EventDecodeError) as err2:
        proto.event_from_json(b'{"type": "Logon", ')
    assert err2.value.error_class == "undecodable" and "JSON event" in str(err2.value)


def test_unknown_event_type_is_a_clear_error() -> None:
    fields = sample_fields("Logon", 1)
    fields["type"] = "TeleportEvent"
    for decode, data in (
        (proto.decode_event, msgspec.msgpack.encode(fields)),
        (proto.event_from_json, msgspec.json.encode(fields)),
    ):
        with pytest.raises(EventDecodeError) as err:
            decode(data)
        assert err.value.error_class == "unknown_type"
        assert "unknown event type 'TeleportEvent'" in str(err.value)
        assert "upgrade" in str(err.value)


def test_missing_field_names_the_field_not_values() -> None:
    fields = sample_fields("WindowSwitch", 1)
    del fields["user"]
    with pytest.raises(EventDecodeError) as err:
        proto.event_from_json(msgspec.json.encode(fields))
    assert err.value.error_class == "invalid" and "`user`" in str(err.value)
    assert fields["title"] not in str(err.value)


def test_decode_events_keeps_good_records_around_bad_ones() -> None:
    good = [sample_event("Lock", i) for i in range(2)]
    out = list(proto.decode_events([proto.encode_event(good[0]), b"\x00junk", proto.encode_event(good[1])]))
    assert out[0] == good[0] and out[2] == good[1]
    assert isinstance(out[1], EventDecodeError)


def test_json_lines_with_a_byte_order_mark_read_as_plain_utf8() -> None:
    """A JSON Lines file from a Windows tool: a UTF-8 BOM is dropped; UTF-16 (either byte order, as
    PowerShell 5.1 writes) is transcoded line for line however a binary reader cut it at the byte 0x0A."""
    from proto.codec import jsonl_lines, read_jsonl

    events = [sample_event("Lock", i) for i in range(3)]
    events[1] = msgspec.structs.replace(events[1], user="J\u00fcrgen \U0001f600")  # a surrogate pair
    text = "\r\n".join(proto.event_to_json(e).decode() for e in events) + "\r\n"
    plain = [e for _, e in read_jsonl(text.encode().splitlines(keepends=True))]
    assert plain == events
    assert [e for _, e in read_jsonl(codecs_bom(text, "utf-8-sig").splitlines(keepends=True))] == events
    assert [e for _, e in read_jsonl(["\ufeff" + line for line in text.splitlines()][:1])] == events[:1]
    for encoding in ("utf-16-le", "utf-16-be"):
        data = codecs_bom(text, encoding)
        for cut in (list(io.BytesIO(data)), [data[i : i + 7] for i in range(0, len(data), 7)]):
            got = list(read_jsonl(cut))
            assert [n for n, _ in got] == [1, 2, 3] and [e for _, e in got] == events, encoding
    # A bad code unit is replaced, so its line is still read (or rejected on its own), never its neighbours.
    broken = codecs_bom(text, "utf-16-le").replace("J".encode("utf-16-le"), b"\x00\xdc")
    mended = [e for _, e in read_jsonl([broken])]
    assert mended[0] == events[0] and mended[2] == events[2] and "\ufffd" in mended[1].user  # type: ignore[union-attr]
    assert list(jsonl_lines([])) == [] and list(jsonl_lines([b"\xef\xbb\xbf"])) == [b""]


def codecs_bom(text: str, encoding: str) -> bytes:
    """``text`` encoded with the byte order mark a Windows tool writes first."""
    import codecs

    bom = {"utf-8-sig": b"", "utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}[encoding]
    return bom + text.encode(encoding)


def test_session_record_and_retraction_round_trip() -> None:
    start = datetime(2024, 3, 4, 8, 0, 0, 123456, tzinfo=UTC)
    session = proto.make_session(
        "corp\\alice",
        "inactive",
        start,
        start + timedelta(minutes=12),
        hosts=["ws-2", "ws-1", "ws-2"],
        reason="locked",
        tz="Europe/Berlin",
    )
    assert session.hosts == ["ws-1", "ws-2"] and session.duration_s == 720.0
    assert session.start.microsecond == 123000
    back = proto.decode_session_message(proto.encode_session(session))
    assert isinstance(back, Session) and back == session
    retraction = SessionRetraction(session_id=session.session_id, user_key="corp\\alice")
    back_r = proto.decode_session_message(proto.encode_session(retraction))
    assert isinstance(back_r, SessionRetraction) and back_r == retraction and back_r.retracted is True
    minimal = proto.decode_session_message(b'{"session_id": "x", "retracted": true}')
    assert minimal == SessionRetraction(session_id="x")
    with pytest.raises(EventDecodeError) as err:
        proto.decode_session_message(b"{nope")
    assert err.value.error_class == "undecodable"


def test_session_id_is_deterministic_and_depends_only_on_user_kind_start() -> None:
    start = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
    sid = proto.session_id("corp\\alice", "active", start)
    assert sid == proto.session_id("corp\\alice", "active", start.astimezone(CET))
    assert sid == proto.session_id("corp\\alice", "active", start + timedelta(microseconds=999))
    a = proto.make_session("corp\\alice", "active", start, start + timedelta(hours=1), hosts=["h1"])
    b = proto.make_session("corp\\alice", "active", start, start + timedelta(hours=3), hosts=["h2"], tz="UTC")
    assert a.session_id == b.session_id == sid
    others = {
        proto.session_id("corp\\bob", "active", start),
        proto.session_id("corp\\alice", "inactive", start),
        proto.session_id("corp\\alice", "active", start + timedelta(milliseconds=1)),
    }
    assert sid not in others and len(others) == 3


def test_json_schemas_are_up_to_date() -> None:
    assert stale_files() == [], "run `python -m proto.schema --write`"


def test_user_key_rule() -> None:
    assert proto.user_key("CORP", "Alice") == "corp\\alice"
    assert proto.user_key("WS-01", "bob") == "ws-01\\bob"
    assert proto.event_user_key(sample_event("Logon", 1, user="ALICE", domain="Corp")) == "corp\\alice"
    # one user key for the same account however the agent spells it
    assert proto.event_user_key(sample_event("Lock", 1, user="alice", domain="CORP")) == proto.event_user_key(
        sample_event("Unlock", 2, user="Alice", domain="corp")
    )


def test_session_ids_and_records_from_milliseconds_equal_the_datetime_ones() -> None:
    """The stream builds session records from epoch milliseconds (``session_from_ms``, its uuid5 from
    SHA-1 directly): the ids and records must be exactly those of ``uuid.uuid5`` and ``make_session``."""
    import random
    import uuid

    from proto.clock import from_epoch_ms
    from proto.sessions import (
        SESSION_ID_NAMESPACE,
        InactiveReason,
        SessionKind,
        make_session,
        session_from_ms,
        session_id_ms,
    )

    rng = random.Random(9)
    for _ in range(5000):
        user = rng.choice(["corp\\ann", "zoë\\名前", "x" * rng.randint(0, 60)])
        kind: SessionKind = rng.choice(["active", "inactive"])
        start = rng.randint(0, 4 * 10**12)
        end = start + rng.randint(0, 10**8)
        expected_id = uuid.uuid5(SESSION_ID_NAMESPACE, f"{user}\x1f{kind}\x1f{start}")
        assert session_id_ms(user, kind, start) == str(expected_id)
        hosts = rng.sample(["pc-b", "pc-a", "laptop"], rng.randint(0, 3))
        reason: InactiveReason | None = rng.choice([None, "idle", "locked"])
        old = make_session(user, kind, from_epoch_ms(start), from_epoch_ms(end), hosts, reason, "Asia/Tokyo")
        assert session_from_ms(user, kind, start, end, hosts, reason, "Asia/Tokyo") == old


def test_epoch_milliseconds_round_trip_exactly() -> None:
    """The core counts in epoch milliseconds and turns them back into the records' datetimes: both ways
    exact, before the epoch too, equal to the plain ``timedelta(milliseconds=...)`` arithmetic."""
    import random
    from datetime import timedelta

    from proto.clock import EPOCH, epoch_ms, from_epoch_ms

    rng = random.Random(3)
    edges = [0, -1, 1, 999, 1000, -1001, 253402300799999]  # the last: 9999-12-31T23:59:59.999Z
    for ms in edges + [rng.randint(-10**12, 4 * 10**12) for _ in range(5000)]:
        t = from_epoch_ms(ms)
        assert t == EPOCH + timedelta(milliseconds=ms) and t.tzinfo is EPOCH.tzinfo
        assert epoch_ms(t) == ms
