"""A coroutine run at a fixed interval for as long as the worker runs, as a ``mode`` service of the Faust
worker itself. Faust's own ``app.timer`` starts only once the app's first table recovery has completed
(``App.on_started`` waits for it), so a watch over that recovery cannot be one."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mode import Service

log = logging.getLogger(__name__)


def guarded(
    tick: Callable[[], Awaitable[None]], name: str, failed: Callable[[], None] | None = None
) -> Callable[[], Awaitable[None]]:
    """``tick`` made safe to run at intervals: an exception is logged (its type only, values stay out of
    the log) and counted (``failed()``, e.g. a metric's ``inc``) instead of raised. For Faust's
    ``app.timer`` too, where an exception crashes the worker: a task that only observes (the consumer lag
    gauge) must not stop the sessions. Takes no argument, so Faust passes it none."""

    async def run() -> None:
        try:
            await tick()
        except Exception as exc:
            log.warning("a periodic task failed; it runs again at its next interval", extra={"kv": {
                "task": name, "exception": type(exc).__name__}})
            if failed is not None:
                failed()

    run.__name__ = run.__qualname__ = name  # what Faust's traces and a reader of its tasks see
    return run


class Periodic(Service):
    """Calls ``tick`` every ``interval_s`` seconds from the start of the worker to its stop, one call at a
    time. Guarantees: an exception in ``tick`` is logged (its type only) and the next tick still comes."""

    def __init__(
        self,
        interval_s: float,
        tick: Callable[[], Awaitable[None]],
        name: str,
        failed: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.interval_s = interval_s
        self._guarded = guarded(tick, name, failed)

    async def on_started(self) -> None:
        self.add_future(self._run())

    async def _run(self) -> None:
        while not self.should_stop:
            await self.sleep(self.interval_s)
            if self.should_stop:
                return
            await self._guarded()
