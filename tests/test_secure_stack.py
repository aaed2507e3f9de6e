"""`desktrace-local up --secure`: a real Kafka with TLS, SASL/SCRAM-SHA-512 and per-service ACLs.

One private secure broker (tmp dir, free ports) serves the module. The assertions are the broker's own
answers: what each service's user may do, what it is refused (authorization errors, not timeouts), that a
wrong password fails at once with an error naming authentication and without a retry storm, that the CLI
prints client settings but never a password, and that the whole pipeline runs with per-service users.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from devstack._proc import DevstackError, quiet, run_sync
from devstack.pipeline import free_port
from devstack.secure import (
    ADMIN,
    AGENT,
    GATEWAY,
    PRINCIPALS,
    SINK,
    STREAM,
    AclBinding,
    PatternType,
    ResourceType,
    SecureKafka,
    acl_bindings,
    ensure_tls,
)
from devstack.topics import ensure_topics
from proto import Topics, encode_event, event_user_key
from proto.events import EVENT_TYPES
from tests.support.ci import IN_CI
from tests.support.events import every_event_type, sample_fields

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "sec."
TOPICS = Topics(PREFIX)


# ---- the ACLs mirror production (no broker) ------------------------------------------------------------
def _k8s_bindings() -> set[AclBinding]:
    """deploy/k8s/base/kafka-users.yaml as bindings (Strimzi names -> Kafka's)."""
    ops = {"Read": "READ", "Write": "WRITE", "Create": "CREATE", "Describe": "DESCRIBE",
           "DescribeConfigs": "DESCRIBE_CONFIGS", "AlterConfigs": "ALTER_CONFIGS"}
    out: set[AclBinding] = set()
    from devstack.secure import Operation

    for doc in yaml.safe_load_all((ROOT / "deploy/k8s/base/kafka-users.yaml").read_text()):
        user = doc["metadata"]["name"]
        if user not in PRINCIPALS:
            continue  # desktrace-keda has no local counterpart
        for acl in doc["spec"]["authorization"]["acls"]:
            res = acl["resource"]
            rtype = ResourceType[res["type"].upper()]
            name = res.get("name", "kafka-cluster") if rtype is not ResourceType.CLUSTER else "kafka-cluster"
            pattern = PatternType.PREFIXED if res.get("patternType") == "prefix" else PatternType.LITERAL
            for op in acl["operations"]:
                out.add(AclBinding(user, rtype, name, pattern, Operation[ops[op]]))
    return out


def test_local_acls_are_exactly_the_production_ones() -> None:
    assert set(acl_bindings(Topics(""))) == _k8s_bindings()


def test_acls_follow_the_topic_prefix() -> None:
    names = {b.name for b in acl_bindings(TOPICS) if b.resource_type is ResourceType.TOPIC}
    assert set(TOPICS.all) <= names
    assert not any(n.startswith("desktrace.") for n in names)  # no unprefixed topic granted
    groups = {b.name for b in acl_bindings(TOPICS) if b.resource_type is ResourceType.GROUP}
    assert groups == {"desktrace-stream", "sec.desktrace-sink-"}


# ---- one private secure broker for the module ----------------------------------------------------------
def _two_free_ports() -> int:
    """A port p with p and p + 1 free (the CLI puts the controller on the next port)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secure-state")


@pytest.fixture(scope="module")
def secure(state_dir: Path) -> Iterator[SecureKafka]:
    port = _two_free_ports()
    kafka = SecureKafka(state_dir / "kafka-secure", port, port + 1, partitions=3, progress=quiet)
    try:
        kafka.start(timeout=60)
    except DevstackError as exc:
        kafka.stop()
        if IN_CI:
            pytest.fail(f"secure Kafka could not start: {exc}", pytrace=False)
        pytest.skip(f"secure Kafka could not start (java 17+ and the Kafka jars needed): {exc}")
    try:
        run_sync(lambda: ensure_topics(kafka.bootstrap, TOPICS, 3, **kafka.client_options(ADMIN)))
        kafka.apply_acls(TOPICS)
        yield kafka
    finally:
        kafka.stop()
        assert not kafka.is_running()


def _kw(secure: SecureKafka, user: str, password: str | None = None) -> dict[str, Any]:
    return {"bootstrap_servers": secure.bootstrap, **secure.client_options(user, password)}


@asynccontextmanager
async def producer(secure: SecureKafka, user: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(request_timeout_ms=10000, **_kw(secure, user))
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@asynccontextmanager
async def consumer(
    secure: SecureKafka, user: str, group: str | None, *topics: str
) -> AsyncIterator[AIOKafkaConsumer]:
    c = AIOKafkaConsumer(
        *topics, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **_kw(secure, user)
    )
    try:
        await c.start()
        yield c
    finally:
        await c.stop()


async def _count(c: AIOKafkaConsumer, at_least: int, within_s: float = 15.0) -> int:
    n = 0
    deadline = time.monotonic() + within_s
    while n < at_least and time.monotonic() < deadline:
        batches = await c.getmany(timeout_ms=500)
        n += sum(len(v) for v in batches.values())
    return n


# ---- what each principal may and may not do -----------------------------------------------------------
@pytest.mark.kafka
async def test_agent_produces_raw_but_cannot_consume_or_write_sessions(secure: SecureKafka) -> None:
    async with producer(secure, AGENT) as p:
        for topic in TOPICS.raw:
            meta = await asyncio.wait_for(p.send_and_wait(topic, b"v", key=b"k"), 15)
            assert meta.topic == topic and meta.offset >= 0
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(p.send_and_wait(TOPICS.sessions, b"v", key=b"k"), 15)
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(p.send_and_wait(TOPICS.deadletter, b"v", key=b"k"), 15)
    # Reading: refused as a group member and as a group-less reader of an assigned partition.
    with pytest.raises(GroupAuthorizationFailedError):
        async with consumer(secure, AGENT, "desktrace-agent-reads", TOPICS.ui) as c:
            await asyncio.wait_for(c.getmany(timeout_ms=3000), 15)
    async with consumer(secure, AGENT, None) as c:
        c.assign([TopicPartition(TOPICS.ui, 0)])
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(_count(c, 1, 10), 15)


@pytest.mark.kafka
async def test_stream_reads_raw_and_writes_sessions_sink_reads_sessions_in_its_group(
    secure: SecureKafka,
) -> None:
    async with producer(secure, AGENT) as p:
        await p.send_and_wait(TOPICS.hid, b"raw", key=b"u1")
    async with consumer(secure, STREAM, "desktrace-stream-sec", *TOPICS.raw) as c:
        assert await asyncio.wait_for(_count(c, 1), 20) >= 1
        await c.commit()
    async with producer(secure, STREAM) as p:
        await p.send_and_wait(TOPICS.sessions, b"session", key=b"u1")
        await p.send_and_wait(TOPICS.deadletter, b"dead", key=b"u1")
        with pytest.raises(TopicAuthorizationFailedError):  # the stream never writes raw events
            await asyncio.wait_for(p.send_and_wait(TOPICS.ui, b"v", key=b"k"), 15)
    group = f"{PREFIX}desktrace-sink-sessions"
    async with consumer(secure, SINK, group, TOPICS.sessions) as c:
        assert await asyncio.wait_for(_count(c, 1), 20) >= 1
        await c.commit()
        committed = {tp: await c.committed(tp) for tp in c.assignment()}
        assert any(off for off in committed.values())
    with pytest.raises(GroupAuthorizationFailedError):  # only its own group prefix
        async with consumer(secure, SINK, "someone-elses-group", TOPICS.sessions) as c:
            await asyncio.wait_for(c.getmany(timeout_ms=3000), 15)


@pytest.mark.kafka
async def test_gateway_writes_presence_only(secure: SecureKafka) -> None:
    async with producer(secure, GATEWAY) as p:
        await p.send_and_wait(TOPICS.presence, b"v", key=b"k")
        for topic in (TOPICS.hid, TOPICS.ui, TOPICS.sessions):
            with pytest.raises(TopicAuthorizationFailedError):
                await asyncio.wait_for(p.send_and_wait(topic, b"v", key=b"k"), 15)


# ---- a wrong password -----------------------------------------------------------------------------------
class CountingProxy:
    """A TCP relay in front of the broker that counts the connections clients open through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> CountingProxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


@pytest.mark.kafka
async def test_wrong_password_fails_fast_without_retry_storm(
    secure: SecureKafka, caplog: pytest.LogCaptureFixture
) -> None:
    async with CountingProxy(secure.instance.port) as proxy:
        opts = secure.client_options(AGENT, password="not-the-password")
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy.port}", **opts)
        t0 = time.monotonic()
        with caplog.at_level("ERROR", logger="aiokafka"), pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(p.start(), 20)
        elapsed = time.monotonic() - t0
        await p.stop()
        await asyncio.sleep(1.0)  # anything still retrying in the background would connect again
    assert elapsed < 5.0
    assert 1 <= proxy.connections <= 2, proxy.connections
    assert "SaslAuthenticationFailed" in caplog.text


@pytest.mark.kafka
def test_replay_with_a_wrong_password_exits_naming_authentication(
    secure: SecureKafka, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    from proto.codec import event_to_json

    events.write_bytes(b"".join(event_to_json(e) + b"\n" for e in every_event_type()))
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    env = {**os.environ, **secure.client_env(AGENT), "DESKTRACE_TOPIC_PREFIX": PREFIX}
    ok = subprocess.run(
        [sys.executable, "-m", "stream.replay", str(events)], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert ok.returncode == 0, ok.stderr
    t0 = time.monotonic()
    bad = subprocess.run(
        [sys.executable, "-m", "stream.replay", str(events)],
        env={**env, "DESKTRACE_KAFKA_PASSWORD_FILE": str(wrong)}, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert bad.returncode == 2
    assert "authentication failed" in bad.stderr and AGENT in bad.stderr, bad.stderr
    assert "not-the-password" not in bad.stderr
    assert time.monotonic() - t0 < 20


@pytest.mark.kafka
def test_only_the_operator_publishes_dead_letters_again(secure: SecureKafka) -> None:
    """Dead letters hold user data: no service user reads them. ``desktrace-replay --dead-letters`` run
    with the replay's usual user (the agent's, which Kafka does not even show the topic) or the sink's (which
    may write dead letters, not read them) exits 2 saying to run it as the operator; as the admin it
    reads them (the one written here, and any the module's other tests left) and exits 0."""
    def redrive(user: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **secure.client_env(user), "DESKTRACE_TOPIC_PREFIX": PREFIX}
        return subprocess.run(
            [sys.executable, "-m", "stream.replay", "--dead-letters", "--dry-run"], env=env,
            capture_output=True, text=True, timeout=60, check=False,
        )

    async def dead_letter() -> None:  # one, as the stream writes them, so that there is something to read
        from proto.deadletter import deadletter_headers, deadletter_record

        event = every_event_type()[0]
        dl = deadletter_record(event_user_key(event).encode(), encode_event(event), deadletter_headers(
            "sessionizer failed: X", "other", "stream", TOPICS.for_event(event), 0, 1))
        async with producer(secure, STREAM) as p:
            await p.send_and_wait(TOPICS.deadletter, dl.value, key=dl.key, headers=dl.headers)

    run_sync(dead_letter)
    agent = redrive(AGENT)
    assert agent.returncode == 2, agent.stderr
    assert "only operators read them" in agent.stderr, agent.stderr
    # the sink's user may describe (and write) the dead-letter topic, not read it: refused at the first read
    sink = redrive(SINK)
    assert sink.returncode == 2, sink.stderr
    assert "TopicAuthorizationFailedError; dead letters hold user data" in sink.stderr, sink.stderr
    admin = redrive(ADMIN)
    assert admin.returncode == 0, admin.stderr
    read = re.search(r"read \d+ dead letters: would publish [1-9]\d* events again", admin.stderr)
    assert read, admin.stderr


@pytest.mark.kafka
async def test_untrusted_ca_and_unauthenticated_clients_are_named_or_refused(
    secure: SecureKafka, tmp_path: Path
) -> None:
    from common.kafka import connection_problem
    from common.settings import CommonSettings, load
    from devstack.kafka import broker_answers

    env = secure.client_env(AGENT)
    assert await connection_problem(load(CommonSettings, env=env)) == ""
    # A CA that did not sign the broker's certificate: a second local CA made the same way.
    other = ensure_tls(tmp_path / "other-tls")
    untrusted = load(CommonSettings, env={**env, "DESKTRACE_KAFKA_CA_FILE": str(other.ca_cert)})
    assert "TLS certificate not trusted" in await connection_problem(untrusted)
    # Neither listener serves a client that does not log in: no metadata over plaintext.
    t0 = time.monotonic()
    assert not await broker_answers(secure.bootstrap, 5.0)
    assert not await broker_answers(f"127.0.0.1:{secure.instance.controller_port}", 5.0)
    assert time.monotonic() - t0 < 12


# ---- the CLI --------------------------------------------------------------------------------------------
def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.cli", *args], env={**os.environ, **env}, capture_output=True,
        text=True, timeout=120, check=False,
    )


def _cli_env(secure: SecureKafka, state_dir: Path, pg_dsn: str) -> dict[str, str]:
    """The settings of a `desktrace-local --secure` call on the module's broker and state dir."""
    return {
        "DESKTRACE_LOCAL_DIR": str(state_dir),
        "DESKTRACE_LOCAL_SECURE_KAFKA_PORT": str(secure.instance.port),
        "DESKTRACE_PG_DSN": pg_dsn,
    }


@pytest.mark.kafka
@pytest.mark.postgres
def test_cli_up_secure_prints_client_settings_but_no_password(
    secure: SecureKafka, state_dir: Path, pg_dsn: str
) -> None:
    env = {
        **_cli_env(secure, state_dir, pg_dsn),
        "DESKTRACE_TOPIC_PREFIX": PREFIX,
        "DESKTRACE_KAFKA_BOOTSTRAP": "127.0.0.1:19092",  # a plaintext stack's export: ignored by --secure
    }
    up = _cli("up", "--secure", env=env)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
    )
    assert exports["DESKTRACE_KAFKA_BOOTSTRAP"] == secure.bootstrap
    assert exports["DESKTRACE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert exports["DESKTRACE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert exports["DESKTRACE_KAFKA_CA_FILE"] == str(secure.ca_file)
    assert exports["DESKTRACE_KAFKA_PASSWORD_FILE"] == str(secure.password_file(ADMIN))
    for user in (AGENT, GATEWAY, STREAM, SINK):
        assert any(line.startswith("#") and str(secure.password_file(user)) in line for line in lines)
    everything = up.stdout + up.stderr
    for user in PRINCIPALS:
        path = secure.password_file(user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() not in everything
    assert stat.S_IMODE((secure.tls_dir / "broker-keystore.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(secure.data_dir.stat().st_mode) == 0o700
    assert "started nothing" in up.stderr  # found the running broker, idempotent
    status = _cli("status", "--secure", "--json", env=env)
    assert status.returncode == 0, status.stderr
    kafka = next(e for e in json.loads(status.stdout) if e["service"] == "kafka")
    assert kafka["running"] and kafka["address"] == secure.bootstrap
    assert kafka["data_dir"] == str(secure.data_dir)


# ---- the whole pipeline with per-service users -----------------------------------------------------------
@pytest.mark.kafka
@pytest.mark.postgres
def test_pipeline_runs_with_per_service_users(secure: SecureKafka, fresh_pg_dsn: str, tmp_path: Path) -> None:
    import asyncpg

    from devstack.pipeline import LocalPipeline

    pipeline = LocalPipeline(secure.bootstrap, fresh_pg_dsn, tmp_path, topic_prefix=PREFIX, close_timeout_s=2)
    users = {"stream": STREAM, "sink-raw": SINK, "sink-sessions": SINK, "gateway": GATEWAY}
    for name, user in users.items():
        pipeline.services[name].env.update(secure.client_env(user))
    user_key = "secure\\pipeline"
    now = datetime.now(UTC) - timedelta(minutes=5)
    events = [
        msgspec.convert(sample_fields(name, seq, "pipeline", "secure", ts=now), cls, strict=False)
        for seq, (name, cls) in enumerate(EVENT_TYPES.items())
    ]

    async def traffic() -> None:
        async with producer(secure, AGENT) as p:
            for e in events:
                await p.send(TOPICS.for_event(e), encode_event(e), key=event_user_key(e).encode())
            await p.send(TOPICS.hid, b"\xc1 not msgpack", key=user_key.encode())
            await p.flush()

    async def counts() -> tuple[int, int]:
        conn = await asyncpg.connect(fresh_pg_dsn)
        try:
            raw = await conn.fetchval("SELECT count(*) FROM raw_events")
            sessions = await conn.fetchval("SELECT count(*) FROM sessions")
            return int(raw), int(sessions)
        finally:
            await conn.close()

    async def dead_letters() -> int:
        async with consumer(secure, ADMIN, None) as c:
            c.assign([TopicPartition(TOPICS.deadletter, p) for p in range(3)])
            return await _count(c, 1, 10)

    with pipeline:
        asyncio.run(traffic())
        body = json.dumps({"user": "legacy.secure", "state": "working"}).encode()
        req = urllib.request.Request(
            pipeline.web_url + "api/report", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=15) as r:  # the gateway publishes as desktrace-gateway
            assert json.loads(r.read()) == {"success": True}
        deadline = time.monotonic() + 45
        raw = sessions = 0
        while time.monotonic() < deadline and not (raw >= len(events) and sessions >= 1):
            raw, sessions = asyncio.run(counts())
            time.sleep(0.5)
        logs = {n: s.log_tail(40) for n, s in pipeline.services.items()}
        assert raw >= len(events), logs
        assert sessions >= 1, logs
        assert asyncio.run(dead_letters()) >= 1  # the stream may write dead letters
        for name, text in logs.items():
            assert "AuthorizationFailed" not in text and "Authentication failed" not in text, (name, text)


@pytest.mark.kafka
@pytest.mark.postgres
def test_cli_down_secure_stops_only_the_secure_broker(
    secure: SecureKafka, state_dir: Path, pg_dsn: str
) -> None:
    env = _cli_env(secure, state_dir, pg_dsn)
    down = _cli("down", "--secure", env=env)
    assert down.returncode == 0, down.stderr
    assert "stopped kafka" in down.stderr
    assert not secure.is_running()
    assert _cli("status", "--secure", env=env).returncode == 3
