"""A Kafka cluster of several brokers on this machine (KRaft), for checks that one broker cannot make:
replication, and a broker lost while the pipeline runs.

Nodes 1 to k (one per controller port) are brokers and controllers: the metadata quorum, a majority of
which must be up; the other nodes are brokers only. One controller port gives a quorum of node 1 alone,
which the cluster cannot lose; three give what a production cluster runs, which survives the loss of any
one node, the active controller included. Internal topics are replicated to every broker (at most 3) with
``min.insync.replicas`` one less, so that producers with ``acks=all`` keep going when one broker is gone.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    """One Kafka node per port of ``ports`` under ``data_dir`` (``node-1``, ``node-2``, ...); node ``n``
    for ``n <= len(controller_ports)`` is also a controller, on ``controller_ports[n - 1]``.

    Guarantees: ``start()`` returns once every broker answers; all nodes share one cluster id and one
    quorum (formatted together on the first start, kept in ``data_dir`` for later starts); ``kill(n)``
    stops node ``n`` at once (SIGKILL, no controlled shutdown), as a lost machine would; ``stop()`` leaves
    no process behind."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        ports: Sequence[int],
        controller_ports: Sequence[int],
        partitions: int = 3,
        progress: Callable[[str], None] = stderr_progress,
    ) -> None:
        if not ports:
            raise ValueError("a cluster needs at least one broker")
        if not 1 <= len(controller_ports) <= len(ports):
            raise ValueError(f"a cluster of {len(ports)} nodes takes 1 to {len(ports)} controllers, "
                             f"not {len(controller_ports)}")
        root = Path(data_dir).absolute()
        root.mkdir(parents=True, exist_ok=True)
        cluster_id, voters = self._identity(root, controller_ports)
        extra = replicated_properties(len(ports))
        extra["controller.quorum.bootstrap.servers"] = ",".join(f"127.0.0.1:{p}" for p in controller_ports)
        self.nodes = [
            KafkaInstance(
                root / f"node-{n}", port, controller_ports[min(n, len(controller_ports)) - 1],
                partitions=partitions, extra_properties=extra, node_id=n,
                controller=n <= len(controller_ports), cluster_id=cluster_id, initial_controllers=voters,
                progress=progress,
            )
            for n, port in enumerate(ports, start=1)
        ]

    @staticmethod
    def _identity(root: Path, controller_ports: Sequence[int]) -> tuple[str, str | None]:
        """The cluster id and, for a quorum of several controllers, its voters (``id@host:port:dir-id``):
        made on the first start, read back afterwards."""
        identity_file = root / "cluster.json"
        if identity_file.exists():
            identity = json.loads(identity_file.read_text(encoding="utf-8"))
            if identity["controller_ports"] != list(controller_ports):
                raise ValueError(f"the cluster in {root} was formatted with controller ports "
                                 f"{identity['controller_ports']}: use those or remove {root}")
            return identity["cluster_id"], identity["voters"]
        voters = None
        if len(controller_ports) > 1:
            voters = ",".join(f"{n}@127.0.0.1:{p}:{new_cluster_id()}"
                              for n, p in enumerate(controller_ports, start=1))
        identity = {"cluster_id": new_cluster_id(), "controller_ports": list(controller_ports),
                    "voters": voters}
        identity_file.write_text(json.dumps(identity) + "\n", encoding="utf-8")
        return identity["cluster_id"], voters

    @property
    def bootstrap(self) -> str:
        """Every broker's ``host:port``, comma-separated."""
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self, timeout: float = 120.0) -> None:
        """Start every node. A quorum of several controllers elects a leader only once a majority runs, so
        the nodes start together; with one controller, it starts first."""
        try:
            if len(self.controllers) == 1:
                for node in self.nodes:
                    node.start(timeout)
            else:
                with ThreadPoolExecutor(len(self.nodes)) as pool:
                    for started in [pool.submit(node.start, timeout) for node in self.nodes]:
                        started.result()
        except BaseException:
            self.stop()
            raise

    @property
    def controllers(self) -> list[KafkaInstance]:
        return [node for node in self.nodes if node.controller]

    def quorum_leader(self) -> int | None:
        """The node id of the active controller, as the running controllers last recorded it (their
        ``quorum-state`` files, the latest epoch winning); None when none has recorded one."""
        best: tuple[int, int] | None = None
        for node in self.controllers:
            if not node.is_running():
                continue
            path = node.data_dir / "kraft" / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
            if leader > 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
        return None if best is None else best[0]

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (1-based)."""
        node = self.nodes[node_id - 1]
        pid = node.pid
        if pid is not None:
            terminate(pid, 10.0, sig=signal.SIGKILL)  # its own process group: the JVM and nothing else
            node.pid_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node (waiting up to ``timeout`` seconds for each, then killing it): brokers only
        first, then the controllers together, since a quorum that has lost its majority cannot see a
        controlled shutdown through."""
        for node in reversed(self.nodes):
            if not node.controller:
                node.stop(timeout)
        with ThreadPoolExecutor(len(self.controllers)) as pool:
            for stopped in [pool.submit(node.stop, timeout) for node in self.controllers]:
                stopped.result()
