"""Shared fixtures: a real Kafka and PostgreSQL for integration tests.

``kafka_bootstrap`` / ``pg_dsn`` (session) come from, in order:
1. ``DESKTRACE_KAFKA_BOOTSTRAP`` / ``DESKTRACE_PG_DSN`` (e.g. after ``eval "$(desktrace-local up)"``);
2. testcontainers, when a Docker engine answers (checked in well under a second);
3. the local services of ``desktrace-local up`` (found running, or started and stopped at session end).
When none can be had the test is skipped, or fails when ``CI=true``.

``topics`` (function): a ``proto.Topics`` with a unique prefix whose five topics exist (3 partitions);
deleted afterwards. ``fresh_pg_dsn`` (function): the DSN of a new empty database, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from proto.topics import Topics
from tests.support.ci import fail_or_skip

if TYPE_CHECKING:
    from tests.support.stream import WorkerPool


def _unavailable(what: str, why: str) -> None:
    hint = (
        f'no {what} for the tests: {why}. Run `eval "$(.venv/bin/desktrace-local up)"` (needs java 17+ and '
        "mvn for Kafka) or set DESKTRACE_KAFKA_BOOTSTRAP / DESKTRACE_PG_DSN, or start a Docker engine"
    )
    fail_or_skip(hint)


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping within ~1 s; free when there is no socket at all."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _run(factory: Callable[[], Any]) -> Any:
    from devstack._proc import run_sync

    return run_sync(factory)


def _client_options() -> dict[str, Any]:
    from common.kafka import client_options
    from common.settings import CommonSettings, load

    opts = client_options(load(CommonSettings))
    opts.pop("bootstrap_servers", None)
    return opts


def _local_service(name: str, request: pytest.FixtureRequest) -> str:
    """Find or start the local service ``name`` with the same code as ``desktrace-local up``."""
    from common.settings import load
    from devstack._proc import DevstackError
    from devstack.cli import LocalSettings, make_stack

    # The service named by the environment was handled by the caller: here we run our own.
    env = {k: v for k, v in os.environ.items() if k not in ("DESKTRACE_KAFKA_BOOTSTRAP", "DESKTRACE_PG_DSN")}
    try:
        stack = make_stack(load(LocalSettings, section="local", env=env))
        stack.config.create_topics = False
        result = stack.up(only={name})
    except DevstackError as exc:
        _unavailable("Kafka" if name == "kafka" else "PostgreSQL", str(exc).splitlines()[0])
        raise AssertionError("unreachable") from None
    if name in result.started:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # Parallel test processes share it and none knows when the others are done: it stays up
            # (`desktrace-local down` stops it; scripts/test.sh starts and stops it around the run).
            print(f"conftest: local {name} started and left running for the other test processes",
                  file=sys.stderr)
        else:
            request.addfinalizer(lambda: stack.down(only={name}))
    return result.kafka_bootstrap if name == "kafka" else result.pg_dsn


def _reachable(address: str, default_port: int) -> bool:
    from devstack.kafka import port_open

    host, _, port = address.rpartition(":")
    return port_open(host or "127.0.0.1", int(port) if port.isdigit() else default_port, timeout=2.0)


@functools.cache
def _has_docker() -> bool:
    return _docker_answers()


@pytest.fixture(autouse=True)
def _service_logging_removed() -> Iterator[None]:
    """A test that runs a service's ``main`` in this process gets its log handler (``setup_logging``: one
    on the stderr pytest captured for that test, with an ``OutageFilter``); it goes with the test. Left
    behind, it wrote later tests' records (the filter's "recovered" line, from its timer) to that closed
    stream: "--- Logging error ---" in the run's output."""
    from common.logs import OutageFilter

    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if any(isinstance(f, OutageFilter) for f in handler.filters):
            root.removeHandler(handler)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """``host:port`` of a real Kafka broker."""
    env = os.environ.get("DESKTRACE_KAFKA_BOOTSTRAP", "").strip()
    if env:
        if not _reachable(env.split(",")[0], 9092):
            _unavailable("Kafka", f"DESKTRACE_KAFKA_BOOTSTRAP={env} does not answer")
        yield env
        return
    if _has_docker():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    yield _local_service("kafka", request)


@pytest.fixture(scope="session")
def pg_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a real PostgreSQL whose role may create databases."""
    env = os.environ.get("DESKTRACE_PG_DSN", "").strip()
    if env:
        parts = urlsplit(env)
        if not _reachable(f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}", 5432):
            _unavailable("PostgreSQL", "DESKTRACE_PG_DSN does not answer")
        yield env
        return
    if _has_docker():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    yield _local_service("postgres", request)


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    """A pipeline's five topics under a unique prefix (3 partitions each), created for this test."""
    from devstack.topics import delete_topics, ensure_topics

    t = Topics(prefix=f"t{uuid.uuid4().hex[:12]}.")
    opts = _client_options()
    _run(lambda: ensure_topics(kafka_bootstrap, t, partitions=3, **opts))
    yield t
    try:
        _run(lambda: asyncio.wait_for(delete_topics(kafka_bootstrap, t, **opts), 10))
    except Exception:  # clean-up is best effort: a leftover test topic harms nobody
        pass


@pytest.fixture
def stream_workers(kafka_bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[WorkerPool]:
    """``desktrace-stream`` processes on this test's topics, stopped afterwards."""
    from tests.support.stream import WorkerPool

    pool = WorkerPool(kafka_bootstrap, topics, tmp_path)
    yield pool
    pool.close()


@pytest.fixture
def fresh_pg_dsn(pg_dsn: str) -> Iterator[str]:
    """DSN of a new, empty database (dropped after the test)."""
    from tests.support.databases import drop_database, fresh_database

    dsn = fresh_database(pg_dsn)
    yield dsn
    drop_database(pg_dsn, dsn)
