"""A Kafka cluster of several brokers on this machine (KRaft), for checks that one broker cannot make:
replication, and a broker lost while the pipeline runs.

Node 1 is broker and controller (a one-node quorum); the others are brokers only. Internal topics are
replicated to every broker (at most 3) with ``min.insync.replicas`` one less, so that producers with
``acks=all`` keep going when one broker is gone.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from devstack._proc import stderr_progress, terminate
from devstack.kafka import KafkaInstance, new_cluster_id


def replicated_properties(brokers: int) -> dict[str, str]:
    """Replication settings of a cluster of ``brokers`` brokers: every internal topic on min(3, brokers) of
    them, one replica allowed to be missing."""
    replicas = min(3, brokers)
    isr = max(1, replicas - 1)
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(isr),
    }


class KafkaCluster:
    """One Kafka node per port of ``ports`` under ``data_dir`` (``node-1``, ``node-2``, ...); the
    controller (node 1) also on ``controller_port``.

    Guarantees: ``start()`` returns once every broker answers; all nodes share one cluster id (formatted
    together on the first start); ``kill(n)`` stops node ``n`` at once (SIGKILL, no controlled shutdown),
    as a lost machine would; ``stop()`` leaves no process behind."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        ports: Sequence[int],
        controller_port: int,
        partitions: int = 3,
        progress: Callable[[str], None] = stderr_progress,
    ) -> None:
        if not ports:
            raise ValueError("a cluster needs at least one broker")
        root = Path(data_dir).absolute()
        cluster_id_file = root / "cluster-id"
        if cluster_id_file.exists():
            cluster_id = cluster_id_file.read_text(encoding="ascii").strip()
        else:
            root.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            cluster_id_file.write_text(cluster_id + "\n", encoding="ascii")
        extra = replicated_properties(len(ports))
        self.nodes = [
            KafkaInstance(
                root / f"node-{n}", port, controller_port, partitions=partitions,
                extra_properties=extra, node_id=n, controller=n == 1, cluster_id=cluster_id,
                progress=progress,
            )
            for n, port in enumerate(ports, start=1)
        ]

    @property
    def bootstrap(self) -> str:
        """Every broker's ``host:port``, comma-separated."""
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self, timeout: float = 120.0) -> None:
        """Start every node, the controller first."""
        try:
            for node in self.nodes:
                node.start(timeout)
        except BaseException:
            self.stop()
            raise

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (1-based)."""
        node = self.nodes[node_id - 1]
        pid = node.pid
        if pid is not None:
            terminate(pid, 10.0, sig=signal.SIGKILL)  # its own process group: the JVM and nothing else
            node.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop every node, the brokers before the controller."""
        for node in reversed(self.nodes):
            node.stop()
