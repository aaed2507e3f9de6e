"""The sessionizer's tunables (``shared/spec/sessions.md``: G, P, L and the retention horizon)."""

from __future__ import annotations

import msgspec

from common.horizon import DEFAULT_RETENTION_S


class SessionizerConfig(msgspec.Struct, frozen=True):
    """G, P, L (``legacy_max_span_s``, the legacy span cap) and the retention horizon, in seconds.

    ``retention_s`` is measured back from the user's latest event time (never the wall clock): events older
    than that are late (returned, not applied) and state older than that is pruned.
    """

    gap_s: float = 300.0
    presence_timeout_s: float = 180.0
    retention_s: float = DEFAULT_RETENTION_S
    legacy_max_span_s: float = 14400.0

    def __post_init__(self) -> None:
        if min(self.gap_s, self.presence_timeout_s, self.retention_s, self.legacy_max_span_s) <= 0:
            raise ValueError("gap_s, presence_timeout_s, retention_s and legacy_max_span_s must be positive")

    @property
    def gap_ms(self) -> int:
        return round(self.gap_s * 1000)

    @property
    def presence_ms(self) -> int:
        return round(self.presence_timeout_s * 1000)

    @property
    def legacy_max_span_ms(self) -> int:
        return round(self.legacy_max_span_s * 1000)

    @property
    def retention_ms(self) -> int:
        return round(self.retention_s * 1000)
