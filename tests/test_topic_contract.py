"""The topic contract stated once in ``devstack/topics.py`` (what ``desktrace-local up`` and the tests create)
is what the Kubernetes manifests create too: same topic names, the contract's settings in each
``KafkaTopic``, one partition count for the three raw topics, no topic outside the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.topics import topic_configs
from proto.topics import Topics

MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "base" / "kafka.yaml"


def _kafka_topics() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]
    return {d["metadata"]["name"]: d["spec"] for d in docs if d.get("kind") == "KafkaTopic"}


def test_the_manifest_creates_exactly_the_contract_topics_with_their_settings() -> None:
    topics = Topics("")  # production runs without a topic prefix
    contract = topic_configs(topics)
    manifest = _kafka_topics()
    assert set(manifest) == set(topics.all) == set(contract)
    for name, settings in contract.items():
        stated = {k: str(v) for k, v in manifest[name].get("config", {}).items()}
        differing = {k: (v, stated.get(k)) for k, v in settings.items() if stated.get(k) != v}
        assert differing == {}, f"{name}: contract vs manifest {differing}"


def test_the_raw_topics_share_one_partition_count() -> None:
    manifest = _kafka_topics()
    counts = {manifest[name]["partitions"] for name in Topics("").raw}
    assert len(counts) == 1


class _Broker:
    """A stand-in for what ``ensure_topics`` and the stream's start-up check meet on a real cluster: KRaft
    answers a creation before the broker's metadata has the topics (``lag`` metadata requests later here),
    and a metadata request naming a missing topic creates it, with the broker's default partition count, as
    a broker with ``auto.create.topics.enable`` (Kafka's default) does."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.created: dict[str, int] = {}  # name -> partitions, as the controller has it
        self.visible_after: dict[str, int] = {}  # name -> metadata requests until the broker lists it
        self.requests = 0
        self.auto_created: list[str] = []

    def _tick(self) -> None:
        self.requests += 1

    def _visible(self, name: str) -> bool:
        return name in self.created and self.requests >= self.visible_after[name]

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        self._tick()
        return [name for name in self.created if self._visible(name)]

    async def create_topics(self, new: list[Any]) -> Any:
        for t in new:
            self.created[t.name] = t.num_partitions
            self.visible_after[t.name] = self.requests + self.lag

        class Response:
            topic_errors = [(t.name, 0, None) for t in new]

        return Response()

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        self._tick()
        out = []
        for name in names:
            if name not in self.created:
                self.auto_created.append(name)
                self.created[name] = 1
                self.visible_after[name] = self.requests
            if self._visible(name):
                partitions = [{"partition": p} for p in range(self.created[name])]
                out.append({"topic": name, "error_code": 0, "partitions": partitions})
            else:
                out.append({"topic": name, "error_code": 5, "partitions": []})  # LEADER_NOT_AVAILABLE
        return out


def _with_broker(monkeypatch: Any, broker: _Broker) -> None:
    import devstack.topics

    monkeypatch.setattr(devstack.topics, "AIOKafkaAdminClient", lambda **_: broker)


async def test_topics_are_created_only_once_the_broker_lists_them(monkeypatch: Any) -> None:
    """The demo's stream worker refused to start on a just-started broker: the topics it had just created
    were not in the broker's metadata yet (found on a fresh clone, session 30)."""
    from common.kafka import partition_counts
    from devstack.topics import ensure_topics

    topics = Topics("t.")
    broker = _Broker(lag=5)
    _with_broker(monkeypatch, broker)
    created = await ensure_topics("b:9092", topics, partitions=3)
    assert sorted(created) == sorted(topics.all)
    assert await partition_counts(broker, list(topics.all)) == dict.fromkeys(topics.all, 3)
    assert broker.auto_created == []


async def test_a_topic_the_broker_never_lists_is_a_clear_error(monkeypatch: Any) -> None:
    from devstack.topics import ensure_topics

    broker = _Broker(lag=10**9)
    _with_broker(monkeypatch, broker)
    with pytest.raises(RuntimeError, match=r"not in the broker's metadata after 0\.3 s; is the broker"):
        await ensure_topics("b:9092", Topics("t."), visible_within_s=0.3)


async def test_reading_partition_counts_creates_no_topic() -> None:
    """The stream worker's start-up check reads the raw topics' partition counts: a missing raw topic must be
    reported missing, not created by the check with the broker's defaults."""
    from common.kafka import partition_counts

    broker = _Broker(lag=0)
    broker.created["t.desktrace.events.ui.v1"] = 6
    broker.visible_after["t.desktrace.events.ui.v1"] = 0
    raw = list(Topics("t.").raw)
    assert await partition_counts(broker, raw) == {"t.desktrace.events.ui.v1": 6}
    assert broker.auto_created == []


@pytest.mark.kafka
def test_a_broker_that_creates_topics_on_demand_gets_none_from_the_checks(tmp_path: Path) -> None:
    """The real counterpart of the stand-in above: a just-started KRaft broker with
    ``auto.create.topics.enable=true`` (Kafka's default). The stream worker's start-up check reports missing
    raw topics as missing and leaves the cluster without them (naming them in a metadata request, as it
    did, made this broker create them with its own defaults); ``ensure_topics`` returns with every topic
    listed, so that check finds them right away, co-partitioned."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    from devstack.kafka import KafkaInstance
    from devstack.pipeline import free_port
    from devstack.topics import ensure_topics
    from stream.app import ClusterError, inspect_cluster
    from stream.settings import StreamSettings

    kafka = KafkaInstance(tmp_path / "kafka", free_port(), free_port(), partitions=2,
                          heap=("-Xms128m", "-Xmx384m"), progress=lambda _: None,
                          extra_properties={"auto.create.topics.enable": "true"})
    kafka.start(timeout=120)
    try:
        topics = Topics("auto.")
        settings = StreamSettings(kafka_bootstrap=kafka.bootstrap, topic_prefix="auto.")

        async def listed() -> set[str]:
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        with pytest.raises(ClusterError, match="do not exist; create the topics first"):
            asyncio.run(inspect_cluster(settings, topics))
        assert not set(topics.all) & asyncio.run(listed())
        asyncio.run(ensure_topics(kafka.bootstrap, topics, partitions=3))
        assert asyncio.run(inspect_cluster(settings, topics)).partitions == 3
    finally:
        kafka.stop()
