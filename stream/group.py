"""Whether the worker's consumer group is processing every raw partition (for ``/readyz``).

:class:`GroupWatch` describes the group every few seconds (one DescribeGroups request): it is healthy
only when the group is ``Stable`` and the members' assignments together cover every partition of the raw
topics. While the group rebalances, or after a member's partitions were revoked and not yet handed to
another, the answer is no. A member killed without leaving keeps its assignment until its session times
out (``session_timeout``), which is why that timeout is short (10 s by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from common.kafka import client_options
from common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Seconds the group may go undescribed before the answer is "cannot describe": after a broker is lost,
#: the admin client sends some requests to it until its metadata drops it, and /readyz flapped between
#: ready and not ready every few seconds (tests/test_stream_brokers.py). A revocation still shows at once.
DESCRIBE_GRACE_S = 10.0


def unowned(state: str, assignments: Iterable[Iterable[tuple[str, Iterable[int]]]],
            topics: Iterable[str], partitions: int) -> tuple[str, int]:
    """``(reason, n)``: why the group is not processing everything ("" when it is) and how many raw
    partitions no member owns. Pure: the inputs come from a DescribeGroups answer."""
    wanted = {(t, p) for t in topics for p in range(partitions)}
    owned = {(t, p) for member in assignments for t, ps in member for p in ps}
    missing = len(wanted - owned)
    if state != "Stable":
        return f"consumer group {state or 'unknown'}", missing
    if missing:
        return f"{missing} raw partition(s) owned by no member", missing
    return "", 0


class GroupWatch:
    """Keeps :attr:`reason` ("" when every raw partition is owned by a member of a stable group).

    After :meth:`moved` (this worker's partitions were revoked: a rebalance began) the reason stays set
    until a check that started after it found the group healthy again: a rebalance always shows, however
    short, and a check begun before it cannot clear it with an older answer. A group that cannot be
    described keeps its latest answer for :data:`DESCRIBE_GRACE_S`, then is "cannot describe"."""

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: tuple[str, ...],
        partitions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self.partitions = partitions
        self.reason = "not checked yet"
        self._admin: Any = None
        self._moves = 0  #: how many times :meth:`moved` was called
        self._clock = clock
        self._failing_since: float | None = None  #: when describing the group began to fail

    def moved(self) -> None:
        """This worker's partitions were revoked (a rebalance began): not ready until checked again."""
        self._moves += 1
        self.reason = "partitions moved: the group is checked again"

    async def check(self) -> str:
        from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

        moves = self._moves
        try:
            if self._admin is None:
                self._admin = await self._new_admin()
            responses = await self._admin.describe_consumer_groups([self.group_id])
            groups = [g for r in responses for g in r.groups]
            if not groups:
                self.reason = "consumer group not found"
                return self.reason
            group = groups[0]
            state, members = group[2], group[5]
            assignments = []
            for member in members:
                raw = member[4]
                if raw:
                    decoded = ConsumerProtocolMemberAssignment.decode(raw)
                    assignments.append([(t, ps) for t, ps in decoded.assignment])
            reason, _ = unowned(state, assignments, self.topics, self.partitions)
            if moves == self._moves:  # else a rebalance began meanwhile: this answer may be older
                self.reason = reason
            self._failing_since = None
        except Exception as exc:
            await self.close()  # a new client next time
            now = self._clock()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since >= DESCRIBE_GRACE_S:
                self.reason = f"cannot describe the consumer group: {type(exc).__name__}"
            else:  # the latest answer stands for now (a revocation meanwhile has set its own reason)
                log.debug("describing the consumer group failed; trying again", extra={"kv": {
                    "exception": type(exc).__name__}})
        return self.reason

    async def _new_admin(self) -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**client_options(self.settings), request_timeout_ms=5000)
        await admin.start()
        return admin

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception:  # noqa: S110 - closing a broken client: nothing to do
                pass
