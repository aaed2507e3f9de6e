"""Create desktrace's topics (``proto.Topics``) with their contract settings; existing topics are kept.

Choices (see devstack/README.md): the three raw topics share one partition count (one user's events meet in
one stream worker); the session topic is keyed by user key and a user has many sessions, so it uses the
delete policy (compaction would keep only a user's latest session) with 30 days' retention; the dead-letter
topic keeps 14 days; raw topics keep the broker's default (7 days).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from common.kafka import partition_counts
from proto.topics import Topics

DAY_MS: Final = 24 * 3600 * 1000
RAW_RETENTION_MS: Final = 7 * DAY_MS
SESSIONS_RETENTION_MS: Final = 30 * DAY_MS
DEADLETTER_RETENTION_MS: Final = 14 * DAY_MS
#: Every topic's record batch limit, stated (Kafka's default): a 1 MiB request of one record fits, so a dead
#: letter of any record the raw topics accepted can be produced (proto.deadletter bounds it).
MAX_MESSAGE_BYTES: Final = 1_048_588


def topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Per-topic settings of a pipeline's five topics."""
    size = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    raw = {"cleanup.policy": "delete", "retention.ms": str(RAW_RETENTION_MS), **size}
    return {
        **{name: dict(raw) for name in topics.raw},
        topics.sessions: {"cleanup.policy": "delete", "retention.ms": str(SESSIONS_RETENTION_MS), **size},
        topics.deadletter: {
            "cleanup.policy": "delete", "retention.ms": str(DEADLETTER_RETENTION_MS), **size
        },
    }


async def ensure_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int = 6,
    replication_factor: int = 1,
    raw_configs: Mapping[str, str] | None = None,
    visible_within_s: float = 30.0,
    **client_options: Any,
) -> list[str]:
    """Create whichever of ``topics.all`` is missing, every one with ``partitions`` partitions; return the
    names created once the broker's metadata has them all (within ``visible_within_s``, else an error).
    Existing topics are left as they are (idempotent). ``raw_configs``: settings added to the raw topics' (a
    bench's ``message.timestamp.type``, say)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = topic_configs(topics)
        for name in topics.raw:
            configs[name].update(raw_configs or {})
        new = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=configs[name],
            )
            for name in topics.all
            if name not in existing
        ]
        if not new:
            return []
        try:
            resp = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []
        created = []
        for name, code, *rest in getattr(resp, "topic_errors", ()):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                message = rest[0] if rest and rest[0] else f"error code {code}"
                raise RuntimeError(f"could not create topic {name}: {message}")
        await _wait_visible(admin, [t.name for t in new], visible_within_s)
        return created
    finally:
        await admin.close()


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], within_s: float) -> None:
    """Wait until the broker's metadata lists each of ``names`` with its partitions. The controller answers
    a creation before the brokers' metadata has the topics (KRaft applies it a moment later, longer on a
    broker that just started): a client started right after would find them missing (the stream worker
    refuses to start then)."""
    deadline = time.monotonic() + within_s
    missing = names
    while True:
        listed = await partition_counts(admin, missing)
        missing = [name for name in missing if name not in listed]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topic(s) {', '.join(missing)} created but not in the broker's metadata "
                               f"after {within_s:g} s; is the broker healthy?")
        await asyncio.sleep(0.1)


async def delete_topics(bootstrap: str, topics: Topics, **client_options: Any) -> None:
    """Delete a pipeline's topics (test clean-up); missing ones are ignored."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics.all if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
