"""The sinks' test kit: settings for an in-process runner or a ``desktrace-sink`` subprocess, bounded waiting,
one-value queries, the dead-letter topic's records."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import msgspec

from proto.codec import encode_session
from proto.sessions import SessionMessage
from proto.topics import Topics
from sinks.metrics import SinkMetrics
from sinks.runner import SinkRunner
from sinks.settings import SinkSettings
from sinks.writers import Writer
from tests.support.kafka import consume_until
from tests.support.process import free_port as free_port  # re-exported for the tests


def session_records(
    topics: Topics, messages: Sequence[SessionMessage]
) -> list[tuple[str, bytes | None, bytes | None]]:
    """Each session message as ``(session topic, user key, JSON bytes)``."""
    return [(topics.sessions, (m.user_key or "").encode(), encode_session(m)) for m in messages]


async def wait_until(probe: Callable[[], Awaitable[bool]], within: float, interval: float = 0.25) -> bool:
    """Poll ``probe`` until it returns True or ``within`` seconds pass; returns its last answer."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        try:
            if await probe():
                return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        if loop.time() >= end:
            return False
        await asyncio.sleep(interval)


async def fetchval(dsn: str, sql: str, *args: object) -> object:
    """One value from a short-lived connection."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


def sink_env(bootstrap: str, dsn: str, topics: Topics, metrics_port: int, **extra: object) -> dict[str, str]:
    """Environment for a ``desktrace-sink`` subprocess (inherits PATH etc., overrides DESKTRACE_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
    env.update(
        DESKTRACE_KAFKA_BOOTSTRAP=bootstrap,
        DESKTRACE_PG_DSN=dsn,
        DESKTRACE_TOPIC_PREFIX=topics.prefix,
        DESKTRACE_METRICS_ADDR=f"127.0.0.1:{metrics_port}",
        DESKTRACE_KAFKA_SESSION_TIMEOUT_MS="6000",
        DESKTRACE_RETRY_INITIAL_S="0.2",
        DESKTRACE_RETRY_MAX_S="2",
        DESKTRACE_BATCH_WAIT_MS="200",
    )
    env.update({f"DESKTRACE_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def settings_for(bootstrap: str, dsn: str, topics: Topics, **kw: object) -> SinkSettings:
    return msgspec.structs.replace(
        SinkSettings(),
        kafka_bootstrap=bootstrap,
        pg_dsn=dsn,
        topic_prefix=topics.prefix,
        batch_wait_ms=200,
        retry_initial_s=0.2,
        retry_max_s=2.0,
        kafka_session_timeout_ms=6000,
        **kw,
    )


@contextlib.asynccontextmanager
async def running(writer: Writer, settings: SinkSettings) -> AsyncIterator[SinkRunner]:
    runner = SinkRunner(writer, settings, SinkMetrics(writer.table))
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        try:
            await asyncio.wait_for(task, 20)
        except TimeoutError:
            task.cancel()


async def dead_letters(bootstrap: str, topics: Topics, expected: int, within: float = 15.0) -> list[object]:
    """The dead-letter topic's records from its start, read until ``expected`` came or ``within`` passed."""
    return await consume_until(bootstrap, topics.deadletter, lambda got: len(got) >= expected, within)



