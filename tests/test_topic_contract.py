"""The topic contract stated once in ``devstack/topics.py`` (what ``desktrace-local up`` and the tests create)
is what the Kubernetes manifests create too: same topic names, the contract's settings in each
``KafkaTopic``, one partition count for the three raw topics, no topic outside the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
