"""Login throttling and server-side logout. Pure: callers pass the time (seconds since the epoch).

Throttling counts failed logins per user name and per client address. The first ``free`` failures of a key
cost nothing; after them every further attempt for that key must wait ``base_s * 2**(n - free)`` seconds
(``n`` failures so far, capped at ``max_s``) after the last failure. An attempt inside the wait is refused
without checking the password. A successful login clears the user's and the address's counts. A key whose
last failure is older than ``forget_s`` is forgotten, and at most ``max_keys`` keys are kept (the oldest
are dropped first), so memory stays bounded under a flood of made-up names.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """Failed-login counters per key (``user:<name>`` and ``addr:<ip>``) and the waits they impose."""

    def __init__(
        self,
        free: int = 5,
        base_s: float = 1.0,
        max_s: float = 900.0,
        forget_s: float = 86400.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free, self.base_s, self.max_s = free, base_s, max_s
        self.forget_s, self.max_keys = forget_s, max_keys
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def delay_for(self, count: int) -> float:
        """The wait after ``count`` failures (0 while ``count <= free``)."""
        if count < self.free:
            return 0.0
        return min(self.max_s, self.base_s * 2 ** (count - self.free))

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds left before an attempt for any of ``keys`` is allowed (0: go ahead)."""
        left = 0.0
        for k in keys:
            f = self._keys.get(k)
            if f is None:
                continue
            if now - f.last > self.forget_s:
                del self._keys[k]
                continue
            left = max(left, f.last + self.delay_for(f.count) - now)
        return max(0.0, left)

    def failed(self, keys: list[str], now: float) -> None:
        for k in keys:
            f = self._keys.pop(k, None) or _Failures(0, now)
            f.count += 1
            f.last = now
            self._keys[k] = f
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def succeeded(self, keys: list[str]) -> None:
        for k in keys:
            self._keys.pop(k, None)

    def failures(self, key: str) -> int:
        f = self._keys.get(key)
        return f.count if f else 0


class RevokedSessions:
    """Session ids ended by a logout, kept until the cookie would have expired anyway."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def revoke(self, sid: str, expires: float, now: float) -> None:
        if expires > now:
            self._until[sid] = expires
        self._prune(now)

    def is_revoked(self, sid: str) -> bool:
        return sid in self._until

    def _prune(self, now: float) -> None:
        if len(self._until) > 1024:
            self._until = {s: e for s, e in self._until.items() if e > now}

    def __len__(self) -> int:
        return len(self._until)
