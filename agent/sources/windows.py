"""The Windows source: wiring of three threads and pynput's input hooks; no decision is made here.

- ``desktrace-hooks`` (:mod:`agent.sources.winhooks`): the message loop with the WinEvent hooks
  (foreground, name change, focus in extended mode, create/destroy/selection of the foreground process)
  and the session/power notification window;
- ``desktrace-uia`` (:mod:`agent.sources.winuia`): COM initialised, UI Automation reads, fed by a queue
  of hook events, decisions by :class:`agent.sources.windesk.DeskWatcher`;
- pynput's low-level hooks (``WH_MOUSE_LL``, ``WH_KEYBOARD_LL``; pynput >= 1.8 passes ``injected`` from
  the LLMHF_INJECTED / LLKHF_INJECTED flags, which SendInput and RPA robots set).

Every Win32 function is called through :mod:`agent.sources.win32` (declared argtypes/restype). A thread
that fails makes :meth:`WindowsSource.run` raise, so the agent exits non-zero and Task Scheduler's restart
policy applies. Idle time: GetLastInputInfo against GetTickCount.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from agent.observations import InputObservation, Observation, ObservationSink, PresenceObservation
from agent.sources import win32 as w
from agent.sources.common import InputAttributor
from agent.sources.winhooks import HookEvent, HookThread
from agent.sources.winuia import STOP, run_uia_thread

log = logging.getLogger("desktrace.agent.sources.windows")


def _now() -> datetime:
    return datetime.now(UTC)


def _pynput_listeners(on_input: Callable[[Literal["click", "scroll", "key"], bool], None]) -> list[Any]:
    from pynput import keyboard, mouse

    # pynput stops a listener whose callback returns False: these return None, always.
    def on_click(x: int, y: int, button: Any, pressed: bool, injected: bool = False) -> None:
        if pressed:
            on_input("click", injected)

    def on_scroll(x: int, y: int, dx: int, dy: int, injected: bool = False) -> None:
        on_input("scroll", injected)

    def on_press(key: Any, injected: bool = False) -> None:
        on_input("key", injected)

    return [mouse.Listener(on_click=on_click, on_scroll=on_scroll), keyboard.Listener(on_press=on_press)]


class WindowsSource:
    """Watches the interactive Windows session (see the module docstring).

    Guarantees: observations reach ``emit`` on the asyncio loop that called :meth:`run`; :meth:`run` raises
    when a source thread fails and returns after :meth:`stop`, with every hook released; in extended mode
    field values are read on focus changes only, capped, and a password field's Value pattern is never
    called; without extended mode no field is read at all."""

    def __init__(
        self, *, extended_mode: bool = False, field_max_chars: int = 256, web_fields: bool = False,
        state_dir: Path | None = None, api: w.Win32 | None = None,
        run_uia: Callable[..., None] = run_uia_thread,
        input_listeners: Callable[..., list[Any]] = _pynput_listeners,
    ) -> None:
        self.extended_mode = extended_mode
        self.field_max_chars = field_max_chars
        self.web_fields = web_fields
        self.state_dir = state_dir
        self.api = api if api is not None else w.Win32()
        self._run_uia = run_uia
        self._input_listeners = input_listeners
        self._stop = threading.Event()
        self._attributor = InputAttributor()
        self._events: queue.Queue[HookEvent] = queue.Queue(maxsize=10_000)
        self.hooks: HookThread | None = None

    async def run(self, emit: ObservationSink) -> None:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()

        def deliver(obs: Observation) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(emit, obs)

        def fail(exc: BaseException) -> None:
            if not failed.done():
                failed.set_exception(exc)

        def guarded(target: Callable[[], None], name: str) -> threading.Thread:
            def main() -> None:
                try:
                    target()
                except BaseException as exc:
                    log.exception("windows source thread failed", extra={"kv": {"thread": name}})
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(fail, exc)
            return threading.Thread(target=main, name=name, daemon=True)

        def on_event(ev: HookEvent) -> None:
            with contextlib.suppress(queue.Full):  # a stuck UIA thread drops events, never the hooks
                self._events.put_nowait(ev)

        def on_presence(kind: Any) -> None:
            deliver(PresenceObservation(ts=_now(), kind=kind))

        def on_input(kind: Literal["click", "scroll", "key"], injected: bool) -> None:
            ts = _now()
            self._attributor.on_input(ts, injected)
            deliver(InputObservation(ts=ts, kind=kind, injected=bool(injected)))

        self._stop.clear()
        api = self.api
        hooks = self.hooks = HookThread(api, on_event, on_presence, focus=self.extended_mode)
        # every top-level window that exists now, hidden ones too (shown later, they are not new)
        initial = [(h, api.window_pid(h)) for h in api.top_level_windows(visible_only=False)]
        uia_kw: dict[str, Any] = dict(
            initial=initial, foreground=api.foreground(), state_dir=self.state_dir,
            extended_mode=self.extended_mode, field_max_chars=self.field_max_chars,
            web_fields=self.web_fields, cause=self._attributor.cause,
        )
        threads = [
            guarded(hooks.run, "desktrace-hooks"),
            guarded(lambda: self._run_uia(api, self._events, deliver, self._stop, **uia_kw), "desktrace-uia"),
        ]
        listeners = self._input_listeners(on_input)
        for t in threads:
            t.start()
        for listener in listeners:
            listener.start()
        try:
            stopped: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(self._stop.wait))
            waiters: set[asyncio.Future[Any]] = {stopped, failed}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if failed in done:
                failed.result()
        finally:
            self.stop()
            for listener in listeners:
                listener.stop()
            for t in threads:
                await asyncio.to_thread(t.join, 5)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(STOP)
        if self.hooks is not None:
            self.hooks.stop()

    def idle_ms(self) -> int:
        return self.api.idle_ms()


__all__ = ["WindowsSource"]
