"""Pure parts of the sinks: row building, session reduction, partition arithmetic, error classes, backoff,
and the health server's HTTP handling (no Kafka, no PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta

import asyncpg
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.health import HealthServer, parse_addr
from common.urls import url_host
from proto.codec import encode_event
from proto.events import EVENT_TYPES, Envelope, Heartbeat, Lock, WindowSwitch
from proto.sessions import Session, SessionRetraction, make_session
from sinks.errors import ErrorKind, Reject, classify
from sinks.partitions import expired, partition_day, partition_name, window
from sinks.rows import _COLUMN_FIELDS, RAW_COLUMNS, raw_row, reduce_sessions, url_domain
from sinks.runner import Backoff, SinkRunner, Stopped, group_id_for
from sinks.settings import SinkSettings
from sinks.writers import RawWriter
from tests.support.events import sample_fields

T0 = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


def test_raw_row_columns_and_details() -> None:
    ev = WindowSwitch(
        agent_id="a1",
        seq=5,
        ts=T0,
        input="hardware",
        user="Alice",
        domain="CORP",
        host="PC1",
        app="chrome.exe",
        url="HTTPS://Mail.Example.com:8443/x?y",
        title="Inbox",
        pid=42,
    )
    row = dict(zip(RAW_COLUMNS, raw_row(ev), strict=True))
    assert row["user_key"] == "corp\\alice"
    assert row["type"] == "WindowSwitch" and row["category"] == "ui"
    assert row["app"] == "chrome.exe" and row["url_domain"] == "mail.example.com"
    assert row["ts"] == T0 and row["last_input_ts"] is None
    details = json.loads(row["details"])
    assert details == {"title": "Inbox", "url": "HTTPS://Mail.Example.com:8443/x?y", "pid": 42}

    hb = Heartbeat(
        agent_id="a1",
        seq=6,
        ts=T0,
        input="none",
        user="a",
        domain="d",
        host="h",
        last_input_ts=T0 - timedelta(seconds=5),
        idle_ms=5000,
    )
    row = dict(zip(RAW_COLUMNS, raw_row(hb), strict=True))
    assert row["category"] == "presence" and row["app"] is None and row["url_domain"] is None
    assert row["last_input_ts"] == T0 - timedelta(seconds=5)
    assert json.loads(row["details"]) == {"idle_ms": 5000}


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("", None),
        ("about:blank", None),
        # no scheme, as Chrome and Edge address bars show URLs and the agent records them: the agent's host
        ("mail.example.com/inbox?x=1", "mail.example.com"),
        ("Intranet:8080/wiki", "intranet"),
        ("alice:pw@bank.example/acct", "bank.example"),
        ("http://[::1", None),
        ("https://A.B.example/", "a.b.example"),
        ("file:///C:/x", None),
    ],
)
def test_url_domain(url: str, host: str | None) -> None:
    assert url_domain(url) == host
    assert url_domain(url) == (url_host(url) or None)  # the agent and the sink read one host


def test_a_scheme_less_url_reaches_the_domains_report_column() -> None:
    """The agent records address-bar URLs without ``https://``; the sink's ``url_domain`` column (what the
    "domains only" reports group by) must hold their host, not NULL."""
    from tests.support.events import sample_event

    event = msgspec.structs.replace(sample_event("WindowSwitch"), url="docs.example.org/page")
    row = dict(zip(RAW_COLUMNS, raw_row(event), strict=True))
    assert row["url_domain"] == "docs.example.org"


def _reference_details(event: Envelope) -> dict[str, object]:
    """What ``details`` means (migration 0001): every field of the event, as it is encoded (defaults
    left out), but those stored as columns."""
    return {k: v for k, v in msgspec.to_builtins(event).items() if k not in _COLUMN_FIELDS}


_texts = st.text(st.characters(codec="utf-8"), max_size=12)
_nodes = st.lists(st.fixed_dictionaries({}, optional={"name": _texts, "control_type": _texts}), max_size=3)
_values = st.one_of(
    st.none(),
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "name": _texts,
                "control_type": _texts,
                "value": st.none() | _texts,
                "edited": st.booleans(),
                "password": st.booleans(),
            },
        ),
        max_size=3,
    ),
)
#: A value for each non-column field any event type has (each is left out at random: its default).
_DETAIL_VALUES = {
    "app_version": _texts,
    "exe_path": _texts,
    "file_path": _texts,
    "sheet": _texts,
    "tab": _texts,
    "title": _texts,
    "url": _texts | st.sampled_from(["", "https://Mail.Example/x?y=1", "alice:pw@bank.example/a"]),
    "session_type": _texts,
    "pid": st.integers(-(2**40), 2**40),
    "idle_ms": st.integers(0, 2**40),
    "spool_bytes": st.integers(0, 2**40),
    "spool_dropped": st.integers(0, 2**20),
    "spool_events": st.integers(0, 2**20),
    "state": st.sampled_from(["working", "stopped"]),
    "hierarchy": _nodes,
    "fields": _values,
}


@given(st.sampled_from(sorted(EVENT_TYPES)), st.fixed_dictionaries({}, optional=_DETAIL_VALUES))
def test_details_hold_every_field_but_the_columns(type_name: str, extra: dict[str, object]) -> None:
    """The sink builds a row from the event's values by position and ``details`` through a per-type
    Struct (cheaper than reading attributes and ``to_builtins``): on events of every type, with any
    subset of their fields set (defaults, empty and None lists, any text), every column is the one its
    name says, and ``details`` is the same JSON as the reference, key order included."""
    cls = EVENT_TYPES[type_name]
    names = {f.name for f in msgspec.structs.fields(cls)}
    fields = {**sample_fields(type_name), **{k: v for k, v in extra.items() if k in names}}
    fields |= {"agent_id": "agent-7", "seq": 7, "user": "Bob", "domain": "Sales", "host": "PC-9"}
    fields |= {"host_domain": "sales.example", "tz": "Asia/Tokyo", "utc_offset_min": 540}
    fields["agent_version"] = "9.1"
    event = msgspec.convert(fields, cls, strict=False)
    row = dict(zip(RAW_COLUMNS, raw_row(event), strict=True))
    assert row["details"] == msgspec.json.encode(_reference_details(event)).decode()
    assert list(json.loads(row["details"])) == list(_reference_details(event))
    assert row["url_domain"] == (url_host(getattr(event, "url", "")) or None)
    by_name = {c: getattr(event, c) for c in _COLUMN_FIELDS if c not in ("app", "last_input_ts")}
    by_name |= {"category": cls.category, "user_key": "sales\\bob"}
    by_name["app"] = getattr(event, "app", "") or None
    by_name["last_input_ts"] = getattr(event, "last_input_ts", None)
    assert {c: row[c] for c in by_name} == by_name


def test_url_domain_caches_short_urls_only() -> None:
    """The cache of recent URLs stays bounded: a URL over 2 KiB is read each time, never kept."""
    from sinks import rows

    before = rows._cached_host.cache_info()
    assert before.maxsize == 4096
    long_url = "https://Long.Example/" + "x" * 5000
    assert url_domain(long_url) == "long.example" == url_domain(long_url)
    assert rows._cached_host.cache_info().currsize == before.currsize
    short = f"https://Short{before.currsize}.Example/p"
    assert url_domain(short) == url_domain(short) == f"short{before.currsize}.example"
    after = rows._cached_host.cache_info()
    assert (after.currsize, after.hits) == (before.currsize + 1, before.hits + 1)


def _apply(messages: list[Session | SessionRetraction]) -> dict[str, Session]:
    state: dict[str, Session] = {}
    for m in messages:
        if isinstance(m, Session):
            state[m.session_id] = m
        else:
            state.pop(m.session_id, None)
    return state


@given(st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.integers(1, 50)), max_size=40))
def test_reduce_sessions_equals_applying_in_order(ops: list[tuple[int, bool, int]]) -> None:
    messages: list[Session | SessionRetraction] = []
    for k, retract, minutes in ops:
        start = T0 + timedelta(hours=k)
        s = make_session("d\\u", "active", start, start + timedelta(minutes=minutes))
        messages.append(SessionRetraction(session_id=s.session_id) if retract else s)
    before = {"stale": make_session("d\\x", "active", T0, T0)}
    state = dict(before)
    upserts, deletes = reduce_sessions(messages)
    for sid in deletes:
        state.pop(sid, None)
    for s in upserts:
        state[s.session_id] = s
    expected = dict(before)
    expected.update(_apply(messages))
    for sid in {m.session_id for m in messages} - set(_apply(messages)):
        expected.pop(sid, None)
    assert state == expected
    assert len({s.session_id for s in upserts}) == len(upserts)
    assert not {s.session_id for s in upserts} & set(deletes)


def test_partition_names_and_windows() -> None:
    for d in (date(1, 1, 1), date(999, 12, 31), date(2026, 11, 23), date(9999, 12, 31)):
        assert partition_day(partition_name(d)) == d
    assert partition_name(date(2026, 1, 2)) == "raw_events_p20260102"
    assert partition_day("raw_events_p20261399") is None and partition_day("other") is None
    today = date(2026, 11, 23)
    assert window(today, 1, 2) == [date(2026, 11, 22), today, date(2026, 11, 24), date(2026, 11, 25)]
    days = [today - timedelta(days=n) for n in (0, 399, 400, 401, 900)]
    assert expired(days, today, 400) == [today - timedelta(days=900), today - timedelta(days=401)]
    assert expired(days, today, 0) == []


def test_error_classes() -> None:
    assert classify(ConnectionRefusedError()) is ErrorKind.RETRY
    assert classify(TimeoutError()) is ErrorKind.RETRY
    assert classify(asyncpg.CannotConnectNowError("starting")) is ErrorKind.RETRY
    assert classify(asyncpg.exceptions.AdminShutdownError("bye")) is ErrorKind.RETRY
    assert classify(asyncpg.exceptions.ConnectionDoesNotExistError("gone")) is ErrorKind.RETRY
    assert classify(asyncpg.exceptions.DeadlockDetectedError("x")) is ErrorKind.RETRY
    assert classify(asyncpg.exceptions.CharacterNotInRepertoireError("nul")) is ErrorKind.DATA
    assert classify(asyncpg.exceptions.CheckViolationError("violates check")) is ErrorKind.DATA
    assert classify(asyncpg.exceptions.NotNullViolationError("null")) is ErrorKind.DATA
    assert classify(OverflowError("value out of int64 range")) is ErrorKind.DATA
    assert (
        classify(
            asyncpg.exceptions.CheckViolationError('no partition of relation "raw_events" found for row')
        )
        is ErrorKind.PARTITION
    )
    assert classify(asyncpg.exceptions.UndefinedTableError("missing")) is ErrorKind.RETRY  # never drop data


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_group_ids_follow_the_topic_prefix() -> None:
    assert group_id_for(SinkSettings(), "raw") == "desktrace-sink-raw"
    assert (
        group_id_for(SinkSettings(topic_prefix="staging."), "sessions") == "staging.desktrace-sink-sessions"
    )
    assert group_id_for(SinkSettings(group_id="g"), "raw") == "g"


def test_raw_writer_decode_rejects_late_and_tombstones() -> None:
    w = RawWriter(retention_days=10)
    w.refresh(T0)
    ok = Lock(agent_id="a", seq=1, ts=T0 - timedelta(days=9), input="none", user="u", domain="d", host="h")
    assert w.decode(encode_event(ok))[0] == "a"
    late = msgspec.structs.replace(ok, ts=T0 - timedelta(days=11))
    with pytest.raises(Reject) as info:
        w.decode(encode_event(late))
    assert info.value.error_class == "late"
    # The oldest day kept is whole (UTC): its midnight is kept, the millisecond before it is late.
    midnight = datetime(2026, 2, 21, tzinfo=UTC)
    assert w.decode(encode_event(msgspec.structs.replace(ok, ts=midnight)))[2] == midnight
    with pytest.raises(Reject):
        w.decode(encode_event(msgspec.structs.replace(ok, ts=midnight - timedelta(milliseconds=1))))
    with pytest.raises(Reject):
        w.decode(None)
    forever = RawWriter(retention_days=0)
    forever.refresh(T0)
    assert forever.decode(encode_event(msgspec.structs.replace(ok, ts=datetime(1990, 1, 1, tzinfo=UTC))))


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_addr(":0") == ("127.0.0.1", 0)
    assert parse_addr("[::1]:80") == ("::1", 80)
    for bad in ("nope", "host:", "h:99999"):
        with pytest.raises(ValueError):
            parse_addr(bad)


async def test_health_server_http_edges() -> None:
    async def slow() -> bool:
        await asyncio.sleep(10)
        return True

    server = HealthServer("127.0.0.1:0", readiness={"slow": slow}, check_timeout=0.2, read_timeout=0.5)
    async with server:

        async def raw(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data

        ready = await raw(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ready.startswith(b"HTTP/1.1 503") and b'"slow": "timeout"' in ready
        assert (await raw(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await raw(b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        head = await raw(b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        # a client that never finishes its request is cut off, and the server still answers others
        assert (await raw(b"GET /healthz HTTP/1.1\r\n")).startswith(b"HTTP/1.1 400")
        assert (await raw(b"GET /healthz HTTP/1.1\r\n\r\n")).endswith(b"ok\n")
        big = await raw(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 400")


async def test_health_server_liveness_follows_alive_callable() -> None:
    state = {"alive": True}
    server = HealthServer("127.0.0.1:0", alive=lambda: state["alive"])
    async with server:

        async def status() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data.split(b"\r\n", 1)[0]

        assert await status() == b"HTTP/1.1 200 OK"
        state["alive"] = False  # e.g. the Faust app crashed: the orchestrator must restart the process
        assert (await status()).startswith(b"HTTP/1.1 503")


async def test_runner_retrying_backs_off_counts_and_stops() -> None:
    settings = SinkSettings(retry_initial_s=0.01, retry_max_s=0.02)
    runner = SinkRunner(RawWriter(), settings)
    failures = [OSError("down"), OSError("still down")]

    async def flaky() -> int:
        if failures:
            raise failures.pop(0)
        return 5

    assert await runner._retrying(flaky, lambda e: isinstance(e, OSError), "kafka", "x failed") == 5
    retries = runner.metrics.registry.get_sample_value(
        "desktrace_sink_retries_total", {"table": "raw_events", "target": "kafka"}
    )
    assert retries == 2

    async def broken() -> int:
        raise ValueError("not retryable")

    with pytest.raises(ValueError):
        await runner._retrying(broken, lambda e: isinstance(e, OSError), "kafka", "x failed")

    async def down() -> int:
        raise OSError("down")

    runner.stop()
    with pytest.raises(Stopped):
        await runner._retrying(down, lambda e: isinstance(e, OSError), "kafka", "x failed")


def test_common_backoff_doubles_caps_resets_and_jitters_within_its_ceiling() -> None:
    """The one backoff (common/backoff.py): sinks without jitter, the agents' fleet with it."""
    import random

    from common.backoff import Backoff as CommonBackoff

    plain = CommonBackoff(0.5, 3.0)
    assert [plain.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    plain.reset()
    assert plain.next() == 0.5
    jittered = CommonBackoff(0.5, 30.0, jitter=True, rng=random.Random(3))
    delays = [jittered.next() for _ in range(12)]
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(12)]
    assert all(0.25 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # not in step


class _Batches:
    """Stands in for the database side of a raw sink's writes (the ordering logic is under test, not the
    write): each batch's write ends when the test says, with the outcome it says, and each commit is
    recorded. ``_write_batch`` and ``_commit`` are the seams; the slots and tasks are the runner's own."""

    def __init__(self, runner: SinkRunner) -> None:
        self.outcomes: dict[int, asyncio.Future[bool]] = {}
        self.committed: list[int] = []
        self.writing: set[int] = set()

        async def write_batch(fetched: tuple[list[int], list[object], list[object]], generation: int,
                              slot: object) -> bool:
            (batch,) = fetched[0]
            self.writing.add(batch)
            try:
                return await self.outcome(batch)
            finally:
                self.writing.discard(batch)

        async def commit(records: list[int]) -> None:
            self.committed += records

        runner._write_batch = write_batch  # type: ignore[method-assign,assignment]
        runner._commit = commit  # type: ignore[method-assign,assignment]

    def outcome(self, batch: int) -> asyncio.Future[bool]:
        return self.outcomes.setdefault(batch, asyncio.get_running_loop().create_future())


async def _start(runner: SinkRunner, batch: int, generation: int) -> None:
    """What the runner's loop does with a batch: take a free slot (waiting for one), then hand it over."""
    slot = await runner._slots.get()
    await runner._start_handle(slot, ([batch], [], []), generation)


async def _settle_tasks() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_raw_batches_written_at_once_commit_in_batch_order() -> None:
    """The raw sink writes two batches at once (``raw_concurrent_writes``); the second one finishing first
    waits for the first before its offsets are committed, and a third batch waits for a free slot."""
    runner = SinkRunner(RawWriter(), SinkSettings())
    assert runner.concurrent_writes == 2
    batches = _Batches(runner)
    await _start(runner, 1, 0)
    await _start(runner, 2, 0)
    await _settle_tasks()
    assert batches.writing == {1, 2}
    third = asyncio.create_task(_start(runner, 3, 0))
    batches.outcome(2).set_result(True)
    await _settle_tasks()
    assert batches.committed == [] and not third.done(), "batch 2 committed, or its slot freed, before 1"
    batches.outcome(1).set_result(True)
    await third
    await _settle_tasks()
    assert batches.committed == [1, 2] and batches.writing == {3}
    batches.outcome(3).set_result(True)
    await runner._finish_handling()
    await runner._commit_sent()
    assert batches.committed == [1, 2, 3]


async def test_a_batch_after_one_not_written_is_not_committed() -> None:
    """A batch given up (handed over, or stopped while retrying) leaves its records uncommitted; the batch
    written at the same time after it must not commit either, or its offsets would skip those records
    (they share partitions). Batches of the next assignment do not wait on the old ones."""
    runner = SinkRunner(RawWriter(), SinkSettings())
    batches = _Batches(runner)
    await _start(runner, 1, 0)
    await _start(runner, 2, 0)
    batches.outcome(2).set_result(True)
    batches.outcome(1).set_result(False)  # given up: its partitions were handed over
    runner._generation = 1  # what the hand-over did
    await _start(runner, 3, 0)  # fetched before the hand-over: dropped, not written
    await _start(runner, 4, 1)  # fetched after it
    batches.outcome(4).set_result(True)
    await runner._finish_handling()
    await runner._commit_sent()
    assert batches.committed == [4]

    await _start(runner, 5, 1)
    await _start(runner, 6, 1)
    batches.outcome(6).set_result(True)
    batches.outcome(5).set_exception(Stopped())
    with pytest.raises(Stopped):
        await runner._finish_handling()
    await runner._commit_sent()
    assert batches.committed == [4], "a batch written after one stopped while retrying was committed"


async def test_the_sessions_sink_writes_one_batch_at_a_time() -> None:
    """Session messages must land in topic order: whatever ``raw_concurrent_writes`` says, one at a time."""
    from sinks.writers import SessionWriter

    runner = SinkRunner(SessionWriter(), SinkSettings(raw_concurrent_writes=4))
    assert runner.concurrent_writes == 1
    batches = _Batches(runner)
    await _start(runner, 1, 0)
    second = asyncio.create_task(_start(runner, 2, 0))
    await _settle_tasks()
    assert batches.writing == {1} and not second.done()
    batches.outcome(1).set_result(True)
    await second
    batches.outcome(2).set_result(True)
    await runner._finish_handling()
    await runner._commit_sent()
    assert batches.committed == [1, 2]
