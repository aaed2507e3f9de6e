"""The Kubernetes manifests: both overlays build, core kinds validate against the Kubernetes schemas,
and every workload has probes, resource limits and a non-root, read-only security context."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.ops_helpers import kustomize_build

K8S_VERSION = kubernetes_validate.latest_version()
#: Custom resources of the operators desktrace builds on (not in the core schemas).
OPERATOR_KINDS = {
    "Kafka",
    "KafkaNodePool",
    "KafkaTopic",
    "KafkaUser",  # Strimzi
    "Cluster",  # CloudNativePG
    "ScaledObject",
    "TriggerAuthentication",  # KEDA
    "PodMonitor",
    "ServiceMonitor",
    "PrometheusRule",  # Prometheus Operator
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


@pytest.fixture(scope="module", params=["dev", "prod"])
def manifests(request: pytest.FixtureRequest) -> list[dict]:
    return kustomize_build(request.param)


def test_core_manifests_validate(manifests: list[dict]) -> None:
    core = [d for d in manifests if d["kind"] not in OPERATOR_KINDS]
    assert len(core) >= 20
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_operator_resources_are_well_formed(manifests: list[dict]) -> None:
    kinds = {d["kind"] for d in manifests}
    assert {
        "Kafka",
        "KafkaTopic",
        "KafkaUser",
        "Cluster",
        "ScaledObject",
        "PodMonitor",
        "PrometheusRule",
    } <= kinds
    assert "StatefulSet" not in kinds, (
        "Kafka and PostgreSQL come from their operators, not hand-written StatefulSets"
    )
    for doc in manifests:
        assert doc["apiVersion"] and doc["metadata"]["name"]
        if doc["kind"] in OPERATOR_KINDS:
            assert doc.get("spec"), doc["metadata"]["name"]


def test_workloads_have_probes_limits_and_run_as_non_root(manifests: list[dict]) -> None:
    workloads = [d for d in manifests if d["kind"] in WORKLOAD_KINDS]
    assert {w["metadata"]["name"] for w in workloads} == {
        "desktrace-stream",
        "desktrace-sink-raw",
        "desktrace-sink-sessions",
        "desktrace-gateway",
    }
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod.get("automountServiceAccountToken") is False
        for c in pod["containers"]:
            name = f"{w['metadata']['name']}/{c['name']}"
            assert c.get("livenessProbe") and c.get("readinessProbe"), name
            assert c["livenessProbe"] != c["readinessProbe"], f"{name}: liveness and readiness must differ"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"], name
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "image" in c and "desktrace" in c["image"], name
            assert all("agent" not in a for a in c.get("args", [])), "the agent is not a server workload"


def test_stream_replicas_bounded_by_partitions(manifests: list[dict]) -> None:
    partitions = {
        d["metadata"]["name"]: d["spec"]["partitions"] for d in manifests if d["kind"] == "KafkaTopic"
    }
    raw = {n: p for n, p in partitions.items() if n.startswith("desktrace.events.")}
    assert len(set(raw.values())) == 1, "every raw topic has the same partition count"
    scaled = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "ScaledObject"}
    assert scaled["desktrace-stream"]["spec"]["maxReplicaCount"] <= next(iter(raw.values()))
    stream = next(
        d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == "desktrace-stream"
    )
    assert stream["spec"]["replicas"] <= next(iter(raw.values()))


def test_acls_follow_the_data_flow(manifests: list[dict]) -> None:
    users = {
        d["metadata"]["name"]: d["spec"]["authorization"]["acls"]
        for d in manifests
        if d["kind"] == "KafkaUser"
    }

    def ops(user: str, topic: str) -> set[str]:
        return {
            op
            for a in users[user]
            if a["resource"]["type"] == "topic"
            and (
                a["resource"]["name"] == topic
                or (a["resource"].get("patternType") == "prefix" and topic.startswith(a["resource"]["name"]))
            )
            for op in a["operations"]
        }

    raw = ["desktrace.events.ui.v1", "desktrace.events.hid.v1", "desktrace.events.presence.v1"]
    for t in raw:
        assert "Write" in ops("desktrace-agent", t) and "Read" not in ops("desktrace-agent", t)
        assert "Read" in ops("desktrace-stream", t) and "Read" in ops("desktrace-sink", t)
    assert not ops("desktrace-agent", "desktrace.sessions.v1")
    assert not any(a["resource"]["type"] == "group" for a in users["desktrace-agent"]), (
        "agents consume nothing"
    )
    assert ops("desktrace-gateway", "desktrace.events.presence.v1") == {"Write", "Describe"}
    assert not ops("desktrace-gateway", "desktrace.events.hid.v1")
    assert "Write" in ops("desktrace-stream", "desktrace.sessions.v1")
    assert "Write" not in ops("desktrace-sink", "desktrace.sessions.v1")


def test_grafana_dashboards_shipped_as_configmap(manifests: list[dict]) -> None:
    cm = next(
        d
        for d in manifests
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "desktrace-grafana-dashboards"
    )
    assert set(cm["data"]) == {"pipeline.json", "fleet.json", "sessions.json"}
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
