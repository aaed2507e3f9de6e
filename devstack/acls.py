"""The Kafka principals of desktrace's services and the ACLs each is granted (``deploy/k8s/base/
kafka-users.yaml`` mirrored for the secure local stack, :mod:`devstack.secure`): pure bindings, and
:func:`create_acls` to send them to a broker as the super user."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from devstack._proc import DevstackError
from proto.topics import Topics

ADMIN: Final = "admin"
AGENT: Final = "desktrace-agent"
GATEWAY: Final = "desktrace-gateway"
STREAM: Final = "desktrace-stream"
SINK: Final = "desktrace-sink"
#: Every SCRAM user of the secure broker.
PRINCIPALS: Final = (ADMIN, AGENT, GATEWAY, STREAM, SINK)
#: Which user each console script runs as (``desktrace-sink raw`` and ``sessions`` share one).
SERVICE_PRINCIPALS: Final[Mapping[str, str]] = {
    "desktrace-agent": AGENT,
    "desktrace-replay": AGENT,
    "desktrace-gateway": GATEWAY,
    "desktrace-stream": STREAM,
    "desktrace-sink": SINK,
}
#: Prefix of the stream's consumer group and Faust internal topics (its app id starts with it).
STREAM_APP_PREFIX: Final = "desktrace-stream"


# ---- ACLs (pure) -----------------------------------------------------------------------------------------
class ResourceType(IntEnum):
    """Kafka's ``ResourceType`` codes (wire protocol)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class PatternType(IntEnum):
    """Kafka's ``PatternType`` codes."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's ``AclOperation`` codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11


ALLOW: Final = 3  # AclPermissionType.ALLOW
ANY_HOST: Final = "*"
CLUSTER_NAME: Final = "kafka-cluster"


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: ``principal`` may do ``operation`` on the resource (from any host)."""

    principal: str
    resource_type: ResourceType
    name: str
    pattern: PatternType
    operation: Operation

    @property
    def principal_name(self) -> str:
        return f"User:{self.principal}"

    def describe(self) -> str:
        kind = "prefix" if self.pattern is PatternType.PREFIXED else "literal"
        return f"{self.principal} {self.operation.name} {self.resource_type.name} {self.name!r} ({kind})"


def _grant(
    principal: str, rtype: ResourceType, names: Sequence[str], ops: Sequence[Operation],
    pattern: PatternType = PatternType.LITERAL,
) -> list[AclBinding]:
    return [AclBinding(principal, rtype, n, pattern, op) for n in names for op in ops]


def acl_bindings(topics: Topics) -> list[AclBinding]:
    """The rights of each service principal, as in ``deploy/k8s/base/kafka-users.yaml`` (topic names from
    ``topics``, so a topic prefix is honoured; the sinks' group prefix follows their default group id
    ``<topic prefix>desktrace-sink-<name>``). ``admin`` is a super user and needs none."""
    T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
    R, W, D = Operation.READ, Operation.WRITE, Operation.DESCRIBE
    out: list[AclBinding] = []
    out += _grant(AGENT, T, topics.raw, (W, D))
    out += _grant(GATEWAY, T, (topics.presence,), (W, D))
    out += _grant(STREAM, T, topics.raw, (R, D))
    out += _grant(STREAM, T, (topics.sessions, topics.deadletter), (W, D))
    internal = (
        Operation.CREATE, R, W, D, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS,
    )
    out += _grant(STREAM, T, (STREAM_APP_PREFIX,), internal, PatternType.PREFIXED)
    out += _grant(STREAM, G, (STREAM_APP_PREFIX,), (R, D), PatternType.PREFIXED)
    out += _grant(STREAM, C, (CLUSTER_NAME,), (D, Operation.DESCRIBE_CONFIGS))
    out += _grant(SINK, T, (*topics.raw, topics.sessions), (R, D))
    out += _grant(SINK, T, (topics.deadletter,), (W, D))
    out += _grant(SINK, G, (f"{topics.prefix}desktrace-sink-",), (R, D), PatternType.PREFIXED)
    return out


async def create_acls(bootstrap: str, bindings: Sequence[AclBinding], **client_options: Any) -> None:
    """Send CreateAcls requests (one per binding, as aiokafka's request class carries one; pipelined on one
    connection) as a super user; raises :class:`DevstackError` naming the refused bindings. Creating an
    existing ACL is a no-op. Bound it with ``asyncio.wait_for``."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.admin import CreateAclsRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap, **client_options)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        requests = [
            CreateAclsRequest(
                int(b.resource_type), b.name, int(b.pattern), b.principal_name, ANY_HOST,
                int(b.operation), ALLOW,
            )
            for b in bindings
        ]
        responses = await asyncio.gather(*(client.send(node, r) for r in requests))
        refused = [
            f"{b.describe()}: error {code} {message or ''}".rstrip()
            for b, resp in zip(bindings, responses, strict=True)
            for code, message in resp.creation_responses
            if code != 0
        ]
        if refused:
            raise DevstackError("could not create ACLs: " + "; ".join(refused))
    finally:
        await client.close()
