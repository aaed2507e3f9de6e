"""Unit tests of the resilience rules without a broker: bounded dead letters, the produce-error classifier,
names and ports isolated by topic prefix, identity fields without control characters, and the stream's
output writer replacing what Kafka refuses for good (the real broker behaviour is in
tests/test_resilience_kafka.py)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgspec
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from faust.exceptions import ProducerSendError
from prometheus_client import CollectorRegistry

from common.kafka import (
    MAX_REQUEST_SIZE,
    ProduceErrorKind,
    prefixed_port,
    produce_error_kind,
    produce_error_name,
)
from proto import deadletter as D
from proto.codec import EventDecodeError, decode_events, encode_event
from proto.topics import Topics
from stream.metrics import StreamMetrics
from tests.support.events import generate_events

# ---- bounded dead letters ------------------------------------------------------------------------------

HEADERS = D.deadletter_headers("undecodable raw event: x", "undecodable", "stream", "t.ui", 3, 17)


@pytest.mark.parametrize("size", [1_000_000, 1_048_000, 1_048_576, 5_000_000])
def test_dead_letter_of_any_size_fits_the_request_limit(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    key = b"corp\\ann"
    dl = D.deadletter_record(key, value, HEADERS)
    # aiokafka's own estimate is what its producer checks against max_request_size
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(dl.key, dl.value, dl.headers) <= MAX_REQUEST_SIZE
    assert D.MAX_REQUEST_BYTES == MAX_REQUEST_SIZE
    headers = D.header_map(dl.headers)
    assert headers["desktrace-error-class"] == "undecodable"
    if dl.truncated:
        assert dl.value == value[: D.HEAD_BYTES]
        assert headers["desktrace-original-size"] == str(size)
        assert headers["desktrace-original-sha256"] == hashlib.sha256(value).hexdigest()
        assert headers["desktrace-truncated"] == str(D.HEAD_BYTES)
    else:
        assert dl.value == value and "desktrace-original-size" not in headers
    # what fits stays whole: 1,000,000 and 1,048,000 bytes do (the two sizes)
    assert dl.truncated == (size > 1_048_000)


def test_the_largest_state_value_with_the_longest_user_key_fits_one_request() -> None:
    """``state_max_bytes`` may be set up to ``STATE_MAX_BYTES_LIMIT``: a table value that large under the
    longest user key the contract allows (two 1,024-character identity fields, 4 UTF-8 bytes each, and
    the separator) must pass aiokafka's own size check against ``max_request_size``, with less than 1 KiB
    to spare (the bound is the request's, not an arbitrary lower one)."""
    from stream.settings import STATE_MAX_BYTES_LIMIT

    key = ("\U0001f600" * 1024 + "\\" + "\U0001f600" * 1024).encode()
    assert len(key) == 8 * 1024 + 1
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"v" * STATE_MAX_BYTES_LIMIT, [])
    assert size <= MAX_REQUEST_SIZE
    assert MAX_REQUEST_SIZE - size < 1024


def test_forced_head_and_small_records() -> None:
    small = D.deadletter_record(None, b"abc", HEADERS)
    assert small == D.DeadLetter(None, b"abc", HEADERS, False)
    forced = D.deadletter_record(b"k", b"abc" * 100_000, HEADERS, force_head=True)
    assert forced.truncated and len(forced.value) == D.HEAD_BYTES
    assert D.header_map(forced.headers)["desktrace-original-size"] == "300000"
    huge_key = D.deadletter_record(b"k" * 2_000_000, b"v", HEADERS)
    assert huge_key.truncated and huge_key.key is not None and len(huge_key.key) == D.HEAD_BYTES


def test_record_size_bounds_aiokafkas_estimate() -> None:
    for key, value in ((None, b""), (b"k", b"v" * 10), (b"corp\\x" * 10, b"v" * 100_000)):
        assert D.record_size(key, value, HEADERS) >= DefaultRecordBatchBuilder.estimate_size_in_bytes(
            key, value, HEADERS
        )


# ---- produce errors ------------------------------------------------------------------------------------


def wrapped(exc: BaseException) -> BaseException:
    """What Faust raises from ``producer.send``: ProducerSendError caused by the aiokafka error."""
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (MessageSizeTooLargeError(), ProduceErrorKind.PERMANENT),
        (TopicAuthorizationFailedError(), ProduceErrorKind.PERMANENT),
        (wrapped(MessageSizeTooLargeError()), ProduceErrorKind.PERMANENT),
        (KafkaConnectionError(), ProduceErrorKind.TRANSIENT),
        (KafkaTimeoutError(), ProduceErrorKind.TRANSIENT),
        (NotLeaderForPartitionError(), ProduceErrorKind.TRANSIENT),
        (SaslAuthenticationFailed(), ProduceErrorKind.TRANSIENT),  # the operator fixes the password
        (wrapped(KafkaConnectionError()), ProduceErrorKind.TRANSIENT),
        (OSError("connection reset"), ProduceErrorKind.TRANSIENT),
    ],
)
def test_produce_error_classifier(exc: BaseException, kind: ProduceErrorKind) -> None:
    assert produce_error_kind(exc) is kind


def test_produce_error_name_is_the_innermost_class() -> None:
    assert produce_error_name(wrapped(MessageSizeTooLargeError())) == "MessageSizeTooLargeError"
    assert produce_error_name(KafkaTimeoutError()) == "KafkaTimeoutError"


async def test_produce_error_name_of_a_send_that_timed_out_is_the_timeout() -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError) as timed_out:
        await asyncio.wait_for(never(), 0.01)
    assert isinstance(timed_out.value.__cause__, asyncio.CancelledError)  # what wait_for does
    assert produce_error_name(timed_out.value) == "TimeoutError"


# ---- isolation by topic prefix ---------------------------------------------------------------------------


def test_stream_names_and_ports_derive_from_the_topic_prefix() -> None:
    from stream.settings import load_settings

    plain, _ = load_settings([], env={})
    assert plain.app_id == "desktrace-stream" and plain.metrics_address == "0.0.0.0:6066"
    a, _ = load_settings([], env={"DESKTRACE_TOPIC_PREFIX": "staging."})
    b, _ = load_settings([], env={"DESKTRACE_TOPIC_PREFIX": "canary."})
    assert a.app_id == "desktrace-stream-staging." and b.app_id == "desktrace-stream-canary."
    assert len({plain.metrics_address, a.metrics_address, b.metrics_address}) == 3
    explicit, _ = load_settings(
        ["--stream-app-id", "desktrace-stream-x", "--metrics-addr", ":7000"],
        env={"DESKTRACE_TOPIC_PREFIX": "staging."},
    )
    assert explicit.app_id == "desktrace-stream-x" and explicit.metrics_address == ":7000"


def test_sink_groups_and_ports_derive_from_the_topic_prefix() -> None:
    from sinks.runner import group_id_for
    from sinks.settings import SinkSettings, default_metrics_addr

    assert default_metrics_addr("raw", "") == "127.0.0.1:9464"
    assert default_metrics_addr("sessions", "") == "127.0.0.1:9465"
    ports = {default_metrics_addr(s, p) for s in ("raw", "sessions") for p in ("", "a.", "b.")}
    assert len(ports) == 6
    assert group_id_for(SinkSettings(topic_prefix="a."), "raw") == "a.desktrace-sink-raw"


def test_prefixed_port_stays_a_valid_port() -> None:
    for base in (6066, 8080, 9464, 65000):
        for i in range(200):
            assert 1024 < prefixed_port(base, f"p{i}.") <= 65535
    assert prefixed_port(8080, "") == 8080


# ---- identity fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["agent_id", "user", "domain", "host", "host_domain"])
@pytest.mark.parametrize("bad", ["ann\x00", "a\x1b[31m", "a\nb", "a\x7f", "a\x85"])
def test_control_characters_in_identity_fields_are_invalid(field: str, bad: str) -> None:
    event = generate_events(seed=3, users=1, hours=1)[0]
    raw = msgspec.to_builtins(event)
    fine = msgspec.msgpack.encode({**raw, field: "Zoë Ünal-Smith (ÅÆ) 名前"})
    refused = msgspec.msgpack.encode({**raw, field: bad})
    ok, err = list(decode_events([fine, refused]))
    assert not isinstance(ok, EventDecodeError)
    assert isinstance(err, EventDecodeError) and err.error_class == "invalid"
    assert field in str(err)
    assert not isinstance(next(iter(decode_events([encode_event(event)]))), EventDecodeError)


# ---- the stream's output writer --------------------------------------------------------------------------


class FakeProducer:
    """Acknowledges or refuses sends like Faust's producer: client-side errors from send(), broker-side
    ones from the returned future."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.sent: list[Any] = []

    async def send(self, msg: Any) -> asyncio.Future[Any]:
        verdict = self.refuse(msg)
        if verdict == "client":
            raise wrapped(MessageSizeTooLargeError())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if verdict == "broker":
            fut.set_exception(MessageSizeTooLargeError())
        elif verdict == "down":
            fut.set_exception(KafkaTimeoutError())
        else:
            self.sent.append(msg)
            fut.set_result(None)
        return fut


def run_writer(refuse: Any, messages: list[Any]) -> tuple[FakeProducer, CollectorRegistry]:
    from stream.output import OutputWriter

    producer, registry = FakeProducer(refuse), CollectorRegistry()
    writer = OutputWriter(producer.send, Topics("u."), StreamMetrics(registry))

    async def go() -> None:
        await writer.settle(await writer.enqueue(messages))

    asyncio.run(go())
    return producer, registry


def test_output_writer_replaces_refused_dead_letters_by_their_head() -> None:
    from stream.processor import Outgoing

    topics = Topics("u.")
    big = Outgoing(topics.deadletter, b"k", b"z" * 900_000, HEADERS)
    session = Outgoing(topics.sessions, b"k", b"{}")
    producer, registry = run_writer(
        lambda m: "broker" if len(m.value) > D.HEAD_BYTES else "ok", [big, session]
    )
    assert [m.topic for m in producer.sent] == [topics.sessions, topics.deadletter]
    head = producer.sent[1]
    assert head.value == big.value[: D.HEAD_BYTES]
    assert D.header_map(head.headers)["desktrace-original-size"] == "900000"
    assert registry.get_sample_value(
        "desktrace_stream_output_refused_total",
        {"reason": "MessageSizeTooLargeError", "action": "deadletter_head"},
    ) == 1


def test_output_writer_dead_letters_a_refused_session_and_skips_what_cannot_go_anywhere() -> None:
    from stream.processor import Outgoing

    topics = Topics("u.")
    session = Outgoing(topics.sessions, b"k", b"{}")
    producer, registry = run_writer(lambda m: "client" if m.topic == topics.sessions else "ok", [session])
    assert len(producer.sent) == 1 and producer.sent[0].topic == topics.deadletter
    headers = D.header_map(producer.sent[0].headers)
    assert headers["desktrace-error-class"] == "other"
    assert "MessageSizeTooLargeError" in headers["desktrace-error"]
    producer, registry = run_writer(lambda m: "client", [session])
    assert producer.sent == []
    assert registry.get_sample_value(
        "desktrace_stream_output_refused_total", {"reason": "MessageSizeTooLargeError", "action": "skipped"}
    ) == 1


def test_output_writer_raises_on_transient_failures() -> None:
    from stream.output import OutputFailed
    from stream.processor import Outgoing

    with pytest.raises(OutputFailed, match="KafkaTimeoutError"):
        run_writer(lambda m: "down", [Outgoing("u.x", None, b"v")])


@pytest.mark.parametrize(
    ("field", "limit"), [("user", 1024), ("host", 1024), ("tz", 256), ("agent_version", 256)]
)
def test_oversized_identity_and_label_fields_are_invalid(field: str, limit: int) -> None:
    event = generate_events(seed=3, users=1, hours=1)[0]
    raw = msgspec.to_builtins(event)
    ok, err = list(decode_events([
        msgspec.msgpack.encode({**raw, field: "x" * limit}),
        msgspec.msgpack.encode({**raw, field: "x" * (limit + 1)}),
    ]))
    assert not isinstance(ok, EventDecodeError)
    assert isinstance(err, EventDecodeError) and err.error_class == "invalid"


# ---- logs --------------------------------------------------------------------------------------------------


def test_connection_errors_collapse_to_one_line_per_outage_with_its_length() -> None:
    import io
    import json
    import logging
    import time as _time

    from common.logs import JsonFormatter, OutageFilter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    handler.addFilter(OutageFilter(quiet_s=0.3))
    client = logging.getLogger("aiokafka.conn.test")
    ours = logging.getLogger("desktrace.kafka")
    parent = logging.getLogger("aiokafka")
    for lg in (parent, ours):
        lg.addHandler(handler)
        lg.propagate = False
    try:
        for _ in range(3):  # two outages
            for i in range(500):
                client.error('Unable connect to "127.0.0.1:19092": [Errno 111] Connect call failed %d', i)
            client.warning("Got error produce response on topic-partition x, retrying")
            logging.getLogger("aiokafka.other").warning("something else entirely")  # not ours
            _time.sleep(0.1)
            if _ == 1:
                _time.sleep(0.6)
        _time.sleep(0.8)
    finally:
        for lg in (parent, ours):
            lg.removeHandler(handler)
            lg.propagate = True
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failing = [x for x in lines if x["msg"].startswith("Kafka connection failing")]
    recovered = [x for x in lines if x["msg"].startswith("Kafka connection recovered")]
    assert len(failing) == 2 and len(recovered) == 2, [x["msg"] for x in lines]
    assert "Connect call failed" in failing[0]["client_error"]
    assert recovered[0]["suppressed_lines"] == 2 * 501 - 1 and recovered[0]["outage_s"] >= 0.1
    assert recovered[1]["suppressed_lines"] == 500
    assert sum(1 for x in lines if x["msg"] == "something else entirely") == 3
    assert len(lines) == 2 + 2 + 3


def test_json_log_lines_carry_no_terminal_controls() -> None:
    import json
    import logging

    from common.logs import JsonFormatter

    record = logging.LogRecord("faust", logging.WARNING, __file__, 1, "\b\x1b[?25hstarting %s", ("x",), None)
    line = JsonFormatter("stream").format(record)
    assert "\x1b" not in line and "\\u001b" not in line and "\b" not in line
    assert json.loads(line)["msg"] == "[?25hstarting x"


# ---- readiness ---------------------------------------------------------------------------------------------


def test_group_readiness_needs_a_stable_group_owning_every_raw_partition() -> None:
    from stream.group import unowned

    raw = ("t.ui", "t.hid", "t.presence")
    full = [[("t.ui", [0, 1]), ("t.hid", [0, 1]), ("t.presence", [0, 1])],
            [("t.ui", [2]), ("t.hid", [2]), ("t.presence", [2]), ("x-changelog", [0])]]
    assert unowned("Stable", full, raw, 3) == ("", 0)
    assert unowned("PreparingRebalance", full, raw, 3)[0] == "consumer group PreparingRebalance"
    assert unowned("CompletingRebalance", full[:1], raw, 3) == ("consumer group CompletingRebalance", 3)
    assert unowned("Stable", full[:1], raw, 3) == ("3 raw partition(s) owned by no member", 3)
    assert unowned("Empty", [], raw, 3)[1] == 9


async def test_readiness_after_a_revocation_waits_for_a_check_that_began_after_it() -> None:
    """A rebalance must show on /readyz however short it is (a rollout gate, and the failover test, poll
    every 0.2 s; the group is checked every 2 s): after this worker's partitions are revoked it is not ready
    until a check that started after the revocation found the group healthy; an answer begun before cannot
    clear it."""
    import asyncio
    from types import SimpleNamespace

    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    from common.settings import KafkaSettings
    from stream.group import GroupWatch

    raw = ("t.ui", "t.hid", "t.presence")
    owned = ConsumerProtocolMemberAssignment(0, [(t, [0]) for t in raw], b"").encode()
    gate = asyncio.Event()
    gate.set()

    class Admin:
        async def describe_consumer_groups(self, ids: list[str]) -> list[SimpleNamespace]:
            await gate.wait()
            member = ("m", "c", "h", b"", owned)
            return [SimpleNamespace(groups=[(0, ids[0], "Stable", "consumer", "range", [member])])]

        async def close(self) -> None:
            pass

    watch = GroupWatch(KafkaSettings(), "g", raw, 1)
    watch._admin = Admin()
    assert await watch.check() == ""
    watch.moved()
    assert watch.reason  # not ready from the revocation on
    gate.clear()
    started = asyncio.create_task(watch.check())  # began before the next revocation
    await asyncio.sleep(0)
    watch.moved()
    gate.set()
    assert await started and watch.reason  # its (older) answer does not clear the revocation
    assert await watch.check() == ""


def test_postgres_program_limit_errors_are_poison_records_not_retries() -> None:
    import asyncpg

    from sinks.errors import ErrorKind, classify

    too_big = asyncpg.exceptions.ProgramLimitExceededError("index row size 1048100 exceeds btree maximum")
    assert classify(too_big) is ErrorKind.DATA
    assert classify(asyncpg.exceptions.CannotConnectNowError("starting")) is ErrorKind.RETRY


async def test_readiness_does_not_flap_when_the_group_cannot_be_described_for_a_moment() -> None:
    """After a broker is lost the admin client sends some requests to it until its metadata drops it;
    /readyz went 503 and 200 every few seconds (tests/test_stream_brokers.py). Failures for less than
    DESCRIBE_GRACE_S keep the latest answer; longer, the worker is not ready; a revocation shows at once."""
    from types import SimpleNamespace

    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
    from aiokafka.errors import NodeNotReadyError

    from common.settings import KafkaSettings
    from stream.group import DESCRIBE_GRACE_S, GroupWatch

    raw = ("t.ui", "t.hid", "t.presence")
    owned = ConsumerProtocolMemberAssignment(0, [(t, [0]) for t in raw], b"").encode()
    failing = False

    class Admin:
        async def describe_consumer_groups(self, ids: list[str]) -> list[SimpleNamespace]:
            if failing:
                raise NodeNotReadyError("the lost broker")
            member = ("m", "c", "h", b"", owned)
            return [SimpleNamespace(groups=[(0, ids[0], "Stable", "consumer", "range", [member])])]

        async def close(self) -> None:
            pass

    now = 100.0
    watch = GroupWatch(KafkaSettings(), "g", raw, 1, clock=lambda: now)

    async def new_admin() -> Admin:
        return Admin()

    watch._new_admin = new_admin  # type: ignore[method-assign]
    assert await watch.check() == ""
    failing = True
    assert await watch.check() == ""
    now += DESCRIBE_GRACE_S - 0.1
    assert await watch.check() == ""
    now += 0.1
    assert await watch.check() == "cannot describe the consumer group: NodeNotReadyError"
    failing = False
    assert await watch.check() == ""  # described again: the count starts afresh
    failing = True
    now += 1
    watch.moved()
    assert await watch.check() == "partitions moved: the group is checked again"
