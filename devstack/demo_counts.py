"""What the demo counts at each stage: the fresh demo database, rows in it, messages in Kafka."""

from __future__ import annotations

from devstack.postgres import with_database
from proto.topics import Topics


async def fresh_database(dsn: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(dsn, name)


async def db_counts(dsn: str) -> tuple[int, int]:
    """Raw rows and sessions in the demo database (0, 0 before the sinks created the tables)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        raw = await conn.fetchval("SELECT count(*) FROM raw_events")
        sessions = await conn.fetchval("SELECT count(*) FROM sessions")
        return int(raw), int(sessions)
    except asyncpg.UndefinedTableError:
        return 0, 0
    finally:
        await conn.close()


async def kafka_counts(bootstrap: str, topics: Topics) -> tuple[int, int]:
    """Messages in the raw topics and in the dead-letter topic (sums of end offsets: fresh topics)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from common.kafka import client_options
    from common.settings import KafkaSettings, load

    opts = client_options(load(KafkaSettings))
    opts["bootstrap_servers"] = bootstrap
    admin = AIOKafkaAdminClient(**opts)
    await admin.start()
    try:
        described = await admin.describe_topics([*topics.raw, topics.deadletter])
    finally:
        await admin.close()
    parts = {d["topic"]: [p["partition"] for p in d["partitions"]] for d in described}
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **opts)
    await consumer.start()
    try:
        sums = []
        for names in (topics.raw, (topics.deadletter,)):
            tps = [TopicPartition(t, p) for t in names for p in parts.get(t, ())]
            ends = await consumer.end_offsets(tps) if tps else {}
            sums.append(sum(ends.values()))
        return sums[0], sums[1]
    finally:
        await consumer.stop()
