"""The wire contract through a real Kafka: every event type survives produce -> consume -> decode, and bad
records on a topic are rejected with a clear error while the good ones around them still decode."""

from __future__ import annotations

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

import proto
from proto import EventDecodeError, Topics
from tests.support.events import every_event_type, sample_event
from tests.support.kafka import at_least, consume_until

pytestmark = pytest.mark.kafka


async def consume(
    bootstrap: str, topic_names: tuple[str, ...], count: int, wait_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    return await consume_until(bootstrap, topic_names, at_least(count), wait_s)


async def test_every_event_type_round_trips_through_kafka(kafka_bootstrap: str, topics: Topics) -> None:
    events = every_event_type()
    assert {e.type for e in events} == set(proto.EVENT_TYPES)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for event in events:
            await producer.send(
                topics.for_event(event), proto.encode_event(event), key=proto.event_user_key(event).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()

    records = await consume(kafka_bootstrap, topics.raw, len(events))
    assert len(records) == len(events)
    received = {}
    for rec in records:
        event = proto.decode_event(rec.value)
        assert rec.topic == topics.for_event(event)
        assert rec.key == b"corp\\alice"
        received[event.seq] = event
    assert [received[e.seq] for e in events] == events
    # the times arrive normalised to UTC milliseconds
    assert all(
        e.ts.utcoffset().total_seconds() == 0 and e.ts.microsecond % 1000 == 0  # type: ignore[union-attr]
        for e in received.values()
    )


async def test_bad_records_are_rejected_and_good_ones_around_them_decode(
    kafka_bootstrap: str, topics: Topics
) -> None:
    good = [sample_event("WindowSwitch", seq) for seq in range(3)]
    unknown = msgspec.msgpack.encode({**msgspec.to_builtins(good[0]), "type": "TeleportEvent", "seq": 99})
    values = [
        proto.encode_event(good[0]),
        b"\xc1\x00garbage, not msgpack",
        proto.encode_event(good[1]),
        unknown,
        proto.encode_event(good[2]),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:  # one key -> one partition -> order kept
            await producer.send(topics.ui, value, key=b"corp\\alice")
        await producer.flush()
    finally:
        await producer.stop()

    records = await consume(kafka_bootstrap, (topics.ui,), len(values))
    assert [r.value for r in records] == values
    decoded = list(proto.decode_events(r.value for r in records))
    assert decoded[0] == good[0] and decoded[2] == good[1] and decoded[4] == good[2]
    garbage, future = decoded[1], decoded[3]
    assert isinstance(garbage, EventDecodeError) and garbage.error_class == "undecodable"
    assert "undecodable raw event" in str(garbage)
    assert isinstance(future, EventDecodeError) and future.error_class == "unknown_type"
    assert "unknown event type 'TeleportEvent'" in str(future)
    with pytest.raises(EventDecodeError):
        proto.decode_event(records[1].value)
