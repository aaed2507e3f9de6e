"""The UI Automation side of the Windows source: the :class:`DeskPlatform` over ``uiautomation`` and
Win32, and the loop of the ``desktrace-uia`` thread.

UI Automation is used only on that thread, with COM initialised there
(``uiautomation.UIAutomationInitializerInThread``): it is fed by a queue of
:class:`agent.sources.winhooks.HookEvent` records and never runs inside a WinEvent callback. When UI
Automation finds no sheet in an Excel window and pywin32 is installed, Excel's COM object model (on the
same COM-initialised thread) gives it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.observations import ObservationSink
from agent.sources import win32 as w
from agent.sources.windesk import DeskWatcher, WindowInfo, load_state, save_state
from agent.sources.winhooks import HookEvent

log = logging.getLogger("desktrace.agent.sources.windows")

#: Put on the queue to end the loop.
STOP = HookEvent(event=-1, hwnd=0)


class UiaPlatform:
    """Reads windows through Win32 (titles, classes, processes) and UI Automation (elements)."""

    def __init__(self, api: w.Win32, auto: Any) -> None:
        self.api = api
        self.auto = auto
        self._versions: dict[str, str] = {}
        self._excel: Any = None  # the running Excel.Application; False when pywin32 is missing

    def window_info(self, hwnd: int) -> WindowInfo | None:
        if not self.api.is_window(hwnd):
            return None
        pid = self.api.window_pid(hwnd)
        exe = self.api.process_exe(pid)
        if exe and exe not in self._versions:
            try:
                self._versions[exe] = self.api.file_version(exe)
            except OSError:
                self._versions[exe] = ""
        return WindowInfo(
            hwnd=hwnd, title=self.api.window_text(hwnd), class_name=self.api.class_name(hwnd), pid=pid,
            exe_path=exe, version=self._versions.get(exe, ""),
        )

    def element(self, hwnd: int) -> Any:
        return self.auto.ControlFromHandle(hwnd)

    def focused(self) -> Any | None:
        try:
            return self.auto.GetFocusedControl()
        except Exception:
            return None

    def window_alive(self, hwnd: int, pid: int) -> bool:
        return self.api.is_window(hwnd) and self.api.window_pid(hwnd) == pid

    def excel_sheet(self, hwnd: int) -> str:
        """The active sheet of the Excel window ``hwnd`` through Excel's COM object model (pywin32, when
        installed; ``Window.Hwnd`` exists since Excel 2013), "" otherwise."""
        if self._excel is False:
            return ""
        try:
            if self._excel is None:
                import win32com.client  # type: ignore[import-not-found,unused-ignore]

                self._excel = win32com.client.GetActiveObject("Excel.Application")
            app: Any = self._excel
            for window in app.Windows:
                if int(window.Hwnd) == hwnd:
                    return str(window.ActiveSheet.Name)
            return str(app.ActiveSheet.Name) if int(app.Hwnd) == hwnd else ""
        except ImportError:
            self._excel = False  # no pywin32: UI Automation only
            return ""
        except Exception:  # Excel busy (a cell in edit mode rejects calls), closed, or another instance
            self._excel = None
            return ""


def uia_loop(
    platform: Any, events: queue.Queue[HookEvent], deliver: ObservationSink, stop: threading.Event, *,
    initial: list[tuple[int, int]], foreground: int, state_dir: Path | None,
    make_watcher: Callable[..., DeskWatcher] = DeskWatcher, **watcher_kw: Any,
) -> None:
    """Runs a :class:`DeskWatcher` on ``events`` until :data:`STOP` arrives or ``stop`` is set; persists
    its state in ``state_dir`` when it changes. Platform-free (the caller initialises COM)."""
    state = load_state(state_dir) if state_dir is not None else {}
    watcher = make_watcher(platform, initial, state=state, **watcher_kw)

    def now() -> tuple[datetime, float]:
        return datetime.now(UTC), time.monotonic()

    def out(observations: list[Any]) -> None:
        for obs in observations:
            deliver(obs)
        if watcher.state_changed and state_dir is not None:
            watcher.state_changed = False
            try:
                save_state(state_dir, watcher.state())
            except OSError:
                log.warning("could not save the desk state", exc_info=True)

    try:
        out(watcher.start(foreground, *now()))
    except Exception:
        log.warning("reading the foreground window failed", exc_info=True)
    while not stop.is_set():
        try:
            ev = events.get(timeout=watcher.timeout(time.monotonic(), 1.0))
        except queue.Empty:
            ev = None
        if ev is STOP:
            break
        try:
            if ev is not None:
                out(watcher.handle(ev, *now()))
            out(watcher.tick(*now()))
        except Exception:  # one window failing to read (it closed, it hangs) must not stop the source
            log.warning("reading the foreground window failed", exc_info=True)


def run_uia_thread(
    api: w.Win32, events: queue.Queue[HookEvent], deliver: ObservationSink, stop: threading.Event,
    **kw: Any,
) -> None:
    """The ``desktrace-uia`` thread: COM initialised, UI Automation platform, :func:`uia_loop`."""
    import uiautomation as auto

    with auto.UIAutomationInitializerInThread(debug=False):
        platform = UiaPlatform(api, auto)
        uia_loop(platform, events, deliver, stop, **kw)
