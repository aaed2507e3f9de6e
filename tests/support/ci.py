"""One rule for a missing service or tool: the test fails under CI (``CI=true``), skips elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

#: True when the ``CI`` variable says so (``1``, ``true`` or ``yes``, any case).
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def fail_or_skip(reason: str) -> NoReturn:
    """Fail the test with ``reason`` under CI, where everything must be installed; skip it elsewhere."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
