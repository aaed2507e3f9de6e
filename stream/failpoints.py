"""A failpoint of the tests against the real broker: the sessionizer failing on one user, inside a worker.

Not a setting: an environment variable only the tests set (the worker logs a WARNING when it is set).
``DESKTRACE_TEST_FAIL_SETTLE=<user key>:<n>`` makes the ``n``-th settle of that user raise, once, as a bug
in the sessionizer would; the worker must dead-letter the user's events since its stored state, send it
back to that state and keep going (``stream.processor.Processor._user_failed``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from stream.core import Intake, Sessionizer, SessionizerConfig, Update, UserState

FAIL_SETTLE_ENV = "DESKTRACE_TEST_FAIL_SETTLE"


class FailpointError(RuntimeError):
    """Raised by :class:`FailingSettle` (a test failpoint, never a real failure)."""


class FailingSettle(Sessionizer):
    """The sessionizer, except that the ``nth`` settle of ``user_key`` raises :class:`FailpointError`
    (once; every other call is the sessionizer's own)."""

    def __init__(self, config: SessionizerConfig, user_key: str, nth: int) -> None:
        super().__init__(config)
        self.user_key = user_key
        self.nth = nth
        self.settles = 0  #: settles of ``user_key`` so far

    def settle(self, user_key: str, intake: Intake) -> tuple[UserState, Update]:
        if user_key == self.user_key:
            self.settles += 1
            if self.settles == self.nth:
                raise FailpointError(f"{FAIL_SETTLE_ENV}: settle {self.nth} of the user fails")
        return super().settle(user_key, intake)


def parse_fail_settle(value: str) -> tuple[str, int]:
    """``<user key>:<n>`` (``n`` >= 1) as ``(user key, n)``; ValueError saying what is expected otherwise."""
    key, sep, nth = value.rpartition(":")
    if not sep or not key or not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"{FAIL_SETTLE_ENV} must be <user key>:<n> with n >= 1")
    return key, int(nth)


def sessionizer_from_env(config: SessionizerConfig, environ: Mapping[str, str] | None = None) -> Sessionizer:
    """The worker's sessionizer: :class:`FailingSettle` when :data:`FAIL_SETTLE_ENV` is set, else the
    plain one."""
    value = (os.environ if environ is None else environ).get(FAIL_SETTLE_ENV, "")
    if not value:
        return Sessionizer(config)
    return FailingSettle(config, *parse_fail_settle(value))
