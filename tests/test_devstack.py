"""desktrace-local: status, idempotent `up` with a clean stdout, and private instances that start within a
minute and stop without leaving a process behind. The shared stack is never stopped here."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psutil
import pytest

from devstack._proc import DevstackError, quiet
from devstack.kafka import KafkaInstance, broker_answers, new_cluster_id
from devstack.pipeline import free_port
from devstack.postgres import PostgresInstance
from devstack.stack import LocalStack, StackConfig


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def test_help_everywhere() -> None:
    for args in ([], ["up"], ["down"], ["status"]):
        proc = cli(*args, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "usage: desktrace-local" in proc.stdout
    assert "--local-kafka-port" in cli("up", "--help").stdout


@pytest.mark.kafka
@pytest.mark.postgres
def test_up_is_idempotent_prints_only_exports_and_status_reports(kafka_bootstrap: str, pg_dsn: str) -> None:
    env = {"DESKTRACE_KAFKA_BOOTSTRAP": kafka_bootstrap, "DESKTRACE_PG_DSN": pg_dsn}
    first = cli("up", env=env)
    assert first.returncode == 0, first.stderr
    t0 = time.monotonic()
    second = cli("up", env=env)
    second_s = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    lines = second.stdout.splitlines()
    assert lines == [
        f"export DESKTRACE_KAFKA_BOOTSTRAP={kafka_bootstrap}",
        f"export DESKTRACE_PG_DSN={pg_dsn}",
    ]
    assert "started nothing" in second.stderr
    assert second_s < 10, f"second `up` took {second_s:.1f}s"
    # eval-able: a shell that evals the output sees the variables
    shell = subprocess.run(
        ["sh", "-c", 'eval "$1"; printf %s "$DESKTRACE_KAFKA_BOOTSTRAP"', "sh", second.stdout],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == kafka_bootstrap

    status = cli("status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    text = status.stdout
    assert "kafka" in text and "postgres" in text and "running" in text
    assert kafka_bootstrap.split(",")[0] in text


def test_down_on_an_empty_state_dir_stops_nothing(tmp_path: Path) -> None:
    env = {
        "DESKTRACE_LOCAL_DIR": str(tmp_path / "state"),
        "DESKTRACE_LOCAL_KAFKA_PORT": str(free_port()),
        "DESKTRACE_LOCAL_PG_PORT": str(free_port()),
        "DESKTRACE_KAFKA_BOOTSTRAP": "",  # empty = run our own: status must not report the shared stack
        "DESKTRACE_PG_DSN": "",
    }
    proc = cli("down", env=env)
    assert proc.returncode == 0 and proc.stdout == ""
    assert "stopped nothing" in proc.stderr
    status = cli("status", env=env)
    assert status.returncode == 3
    assert status.stdout.count("stopped") == 2


def test_external_services_are_recognised(tmp_path: Path) -> None:
    own = StackConfig(state_dir=tmp_path, kafka_bootstrap="127.0.0.1:19092")
    assert not LocalStack(own).kafka_external  # what an earlier `up` exported: still ours
    assert LocalStack(StackConfig(state_dir=tmp_path, kafka_bootstrap="kafka.example:9092")).kafka_external
    assert LocalStack(StackConfig(state_dir=tmp_path, kafka_bootstrap="a:1,b:2")).kafka_external
    # a DSN on our port is ours only when it is what this state dir's cluster exported (its password)
    cfg = StackConfig(state_dir=tmp_path, pg_dsn="postgresql://u:p@127.0.0.1:15432/db")
    assert LocalStack(cfg).pg_external
    (tmp_path / "postgres").mkdir()
    (tmp_path / "postgres" / "password").write_text("p\n")
    assert not LocalStack(cfg).pg_external
    (tmp_path / "postgres" / "password").write_text("stale\n")  # another server on our port
    assert LocalStack(cfg).pg_external


def test_up_stops_the_kafka_it_started_when_postgres_fails(tmp_path: Path) -> None:
    calls: list[str] = []

    class Kafka:
        bootstrap = "127.0.0.1:1"

        def is_running(self) -> bool:
            return False

        def start(self, timeout: float) -> None:
            calls.append("kafka start")

        def stop(self) -> bool:
            calls.append("kafka stop")
            return True

    class BrokenPostgres:
        def is_running(self) -> bool:
            return False

        def start(self, timeout: float) -> None:
            raise DevstackError("no PostgreSQL binaries found")

    stack = LocalStack(StackConfig(state_dir=tmp_path, create_topics=False), progress=quiet)
    stack.kafka, stack.postgres = Kafka(), BrokenPostgres()  # type: ignore[assignment]
    with pytest.raises(DevstackError, match="no PostgreSQL binaries"):
        stack.up()
    assert calls == ["kafka start", "kafka stop"]


def test_stale_pid_file_is_not_mistaken_for_a_running_broker(tmp_path: Path) -> None:
    kafka = KafkaInstance(tmp_path / "k", free_port(), free_port())
    kafka.data_dir.mkdir()
    kafka.pid_file.write_text(f"{os.getpid()}\n")  # a live pid, but not a Kafka of this data dir
    assert not kafka.is_running()
    assert kafka.stop() is False
    assert not kafka.pid_file.exists()
    assert len(new_cluster_id()) == 22


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """1 in 64 random ids would start with ``-`` (URL-safe base64 of a first byte 0xF8-0xFB); Kafka's storage
    tool then takes the id for an option and refuses to format (seen in CI). Such an id is drawn again."""
    draws = iter([b"\xf8" + bytes(15), b"\x10" + bytes(15)])
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == "EAAAAAAAAAAAAAAAAAAAAA"
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).startswith(b"-")  # what was drawn first
    assert all(not new_cluster_id().startswith("-") for _ in range(2000))


@pytest.mark.kafka
@pytest.mark.postgres
def test_private_instances_start_within_a_minute_and_stop_cleanly(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    kafka = KafkaInstance(tmp_path / "kafka", free_port(), free_port(), progress=lambda _: None)
    pg = PostgresInstance(tmp_path / "pg", free_port(), fsync=False, progress=lambda _: None)
    try:
        t0 = time.monotonic()
        kafka.start(timeout=60)
        kafka_s = time.monotonic() - t0
        t0 = time.monotonic()
        pg.start(timeout=60)
        pg_s = time.monotonic() - t0
        record_property("kafka_start_s", round(kafka_s, 2))
        record_property("postgres_start_s", round(pg_s, 2))
        print(f"\nprivate Kafka started in {kafka_s:.1f}s, PostgreSQL in {pg_s:.1f}s")
        assert kafka_s < 60 and pg_s < 60

        assert kafka.is_running() and pg.is_running()
        assert asyncio.run(broker_answers(kafka.bootstrap))

        async def pg_answer() -> int:
            conn = await asyncpg.connect(pg.dsn)
            try:
                return int(await conn.fetchval("SELECT 41 + 1"))
            finally:
                await conn.close()

        assert asyncio.run(pg_answer()) == 42
        kafka_pid, pg_pid = kafka.pid, pg.pid
        assert kafka_pid and pg_pid
        pids = {kafka_pid, pg_pid, *(c.pid for c in psutil.Process(pg_pid).children(recursive=True))}
        assert len(pids) > 2  # the postmaster's backends are watched too

        t0 = time.monotonic()
        assert kafka.stop() and pg.stop()
        record_property("stop_s", round(time.monotonic() - t0, 2))
        assert not kafka.is_running() and not pg.is_running()
        left = [
            p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        assert left == [], f"processes left running: {left}"
        assert not asyncio.run(broker_answers(kafka.bootstrap, wait_s=1))
    finally:
        kafka.stop()
        pg.destroy()


def test_a_cluster_of_three_controllers_is_formatted_as_one_quorum_and_keeps_it(tmp_path: Path) -> None:
    """Every controller is formatted with the same voters (one directory id each) and bootstraps from all of
    them; a second construction on the same directory reads the same identity back, and other controller
    ports are refused rather than formatted into a second quorum. No JVM is started."""
    from devstack.cluster import KafkaCluster

    cluster = KafkaCluster(tmp_path, [9001, 9002, 9003], [9101, 9102, 9103], progress=lambda _: None)
    args = [node._quorum_args() for node in cluster.nodes]
    assert [a[0] for a in args] == ["--initial-controllers"] * 3
    assert len({a[1] for a in args}) == 1
    voters = args[0][1].split(",")
    assert [v.rsplit(":", 1)[0] for v in voters] == [f"{n}@127.0.0.1:{9100 + n}" for n in (1, 2, 3)]
    assert len({v.rsplit(":", 1)[1] for v in voters}) == 3  # a directory id per controller
    for node in cluster.nodes:
        assert node.extra_properties["controller.quorum.bootstrap.servers"] == (
            "127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103")
        assert node.controller and node.cluster_id == cluster.nodes[0].cluster_id
    again = KafkaCluster(tmp_path, [9001, 9002, 9003], [9101, 9102, 9103], progress=lambda _: None)
    assert [n._quorum_args() for n in again.nodes] == args
    with pytest.raises(ValueError, match="controller ports"):
        KafkaCluster(tmp_path, [9001, 9002, 9003], [9201, 9202, 9203], progress=lambda _: None)
    single = KafkaCluster(tmp_path / "one", [9001, 9002], [9101], progress=lambda _: None)
    assert [n._quorum_args() for n in single.nodes] == [["--standalone"], ["--no-initial-controllers"]]
    with pytest.raises(ValueError, match="1 to 2 controllers"):
        KafkaCluster(tmp_path / "bad", [9001, 9002], [9101, 9102, 9103], progress=lambda _: None)
