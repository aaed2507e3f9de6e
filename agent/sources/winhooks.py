"""The message-loop thread of the Windows source: WinEvent hooks and session/power notifications.

One thread (``desktrace-hooks``) owns everything that needs a message loop:

- ``SetWinEventHook`` with ``WINEVENT_OUTOFCONTEXT | WINEVENT_SKIPOWNPROCESS`` (no DLL injected into other
  processes; Windows calls the callback on this thread while it pumps messages):
  ``EVENT_SYSTEM_FOREGROUND`` and ``EVENT_OBJECT_NAMECHANGE`` system-wide, ``EVENT_OBJECT_FOCUS``
  system-wide in extended mode, and ``EVENT_OBJECT_CREATE``/``DESTROY``, the selection events and
  ``EVENT_OBJECT_VALUECHANGE`` scoped to the foreground process only (they are frequent; tabs, Excel's
  sheet tabs and an address bar whose URL changes without a title change are what they serve),
  re-scoped when the foreground process changes;
- a hidden message-only window registered for ``WTSRegisterSessionNotification`` (lock, unlock, logon,
  logoff, console/remote connect) and ``RegisterSuspendResumeNotification`` (suspend, resume);
- ``GetMessageW`` until ``WM_QUIT``, which :meth:`HookThread.stop` posts with ``PostThreadMessageW``.

The callbacks do no UI Automation (a cross-process call inside a WinEvent callback re-enters the message
loop): they filter cheaply (name changes only of the foreground window's tree) and hand
:class:`HookEvent` records to ``on_event``; the UI Automation thread does the reading.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.observations import PresenceKind
from agent.sources import win32 as w
from agent.sources.winpresence import WM_POWERBROADCAST, PresenceDebouncer, presence_kind

log = logging.getLogger("desktrace.agent.sources.windows")

CLASS_NAME = "DesktraceAgentNotify"


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One WinEvent as the hook thread passed it on (``hwnd`` is the top-level window it concerns)."""

    event: int
    hwnd: int
    id_object: int = 0
    id_child: int = 0


class HookThread:
    """Runs the message loop (see the module docstring).

    Guarantees: ``on_event`` gets foreground changes, name changes of the foreground window's tree, focus
    changes (``focus=True``) and create/destroy/selection events of the foreground process; ``on_presence``
    gets session and power notifications already de-duplicated by :class:`PresenceDebouncer`; every hook,
    notification registration, window and class is released when the loop ends; a failure to set up raises
    in :meth:`run` (the caller's thread wrapper reports it)."""

    def __init__(
        self, api: w.Win32, on_event: Callable[[HookEvent], None],
        on_presence: Callable[[PresenceKind], None], *, focus: bool = False,
    ) -> None:
        self.api = api
        self.on_event = on_event
        self.on_presence = on_presence
        self.focus = focus
        self.thread_id = 0
        self.ready = threading.Event()
        self._quit = threading.Event()
        self._presence = PresenceDebouncer()
        self._foreground = 0
        self._scoped_pid = 0
        self._scoped: list[int] = []
        self._hooks: list[int] = []
        # ctypes callbacks must outlive every call Windows makes to them
        self._wndproc: Any = w.WNDPROC(self._window_proc)
        self._winevent: Any = w.WINEVENTPROC(self._event_proc)

    # ---- callbacks (on this thread) ---------------------------------------------------------------------

    def _window_proc(self, hwnd: int | None, message: int, wparam: int, lparam: int) -> int:
        kind = presence_kind(message, wparam)
        if kind is not None and self._presence.accept(kind):
            self.on_presence(kind)
        if message == WM_POWERBROADCAST:
            return 1
        return int(self.api.user32.DefWindowProcW(hwnd, message, wparam, lparam))

    def _event_proc(
        self, hook: int | None, event: int, hwnd: int | None, id_object: int, id_child: int,
        thread: int, time_ms: int,
    ) -> None:
        try:
            self._on_winevent(event, int(hwnd or 0), id_object, id_child)
        except Exception:  # an exception must not unwind into user32
            log.warning("WinEvent callback failed", exc_info=True)

    def _on_winevent(self, event: int, hwnd: int, id_object: int, id_child: int) -> None:
        if not hwnd:
            return
        if event == w.EVENT_SYSTEM_FOREGROUND:
            self._foreground = hwnd
            self._rescope(hwnd)
            self.on_event(HookEvent(event, hwnd, id_object, id_child))
            return
        root = hwnd if (id_object == w.OBJID_WINDOW and hwnd == self._foreground) else self.api.root_of(hwnd)
        if root != self._foreground:
            return  # another window's business (a clock, a background download)
        self.on_event(HookEvent(event, root, id_object, id_child))

    # ---- hooks ------------------------------------------------------------------------------------------

    def _hook(self, first: int, last: int, pid: int = 0) -> int:
        flags = w.WINEVENT_OUTOFCONTEXT | w.WINEVENT_SKIPOWNPROCESS
        handle = self.api.user32.SetWinEventHook(first, last, None, self._winevent, pid, 0, flags)
        return int(handle or 0)

    def _rescope(self, hwnd: int) -> None:
        """Create/destroy and selection events of the foreground process only."""
        pid = self.api.window_pid(hwnd)
        if pid == self._scoped_pid:
            return
        for h in self._scoped:
            self.api.user32.UnhookWinEvent(h)
        self._scoped = []
        self._scoped_pid = pid
        if pid:
            self._scoped = [h for h in (
                self._hook(w.EVENT_OBJECT_CREATE, w.EVENT_OBJECT_DESTROY, pid),
                self._hook(w.EVENT_OBJECT_SELECTION, w.EVENT_OBJECT_SELECTIONREMOVE, pid),
                self._hook(w.EVENT_OBJECT_VALUECHANGE, w.EVENT_OBJECT_VALUECHANGE, pid),
            ) if h]

    # ---- the loop ---------------------------------------------------------------------------------------

    def run(self) -> None:
        api = self.api
        user32 = api.user32
        instance = api.kernel32.GetModuleHandleW(None)
        wc = w.WNDCLASSW()
        wc.lpfnWndProc = self._wndproc
        wc.hInstance = instance
        wc.lpszClassName = CLASS_NAME
        if not user32.RegisterClassW(ctypes.byref(wc)):
            raise OSError(w.last_error(), "RegisterClassW failed")
        hwnd = user32.CreateWindowExW(
            0, CLASS_NAME, "desktrace", 0, 0, 0, 0, 0, w.HWND_MESSAGE, None, instance, None
        )
        power = None
        try:
            if not hwnd:
                raise OSError(w.last_error(), "CreateWindowExW (message-only window) failed")
            # the thread has a message queue now (PostThreadMessageW to a thread without one fails)
            self.thread_id = int(api.kernel32.GetCurrentThreadId())
            if not api.wtsapi32.WTSRegisterSessionNotification(hwnd, w.NOTIFY_FOR_THIS_SESSION):
                log.warning("WTSRegisterSessionNotification failed: no lock/unlock/logon/logoff events")
            power = user32.RegisterSuspendResumeNotification(hwnd, w.DEVICE_NOTIFY_WINDOW_HANDLE)
            self._hooks = [self._hook(w.EVENT_SYSTEM_FOREGROUND, w.EVENT_SYSTEM_FOREGROUND),
                           self._hook(w.EVENT_OBJECT_NAMECHANGE, w.EVENT_OBJECT_NAMECHANGE)]
            if self.focus:
                self._hooks.append(self._hook(w.EVENT_OBJECT_FOCUS, w.EVENT_OBJECT_FOCUS))
            if not all(self._hooks):
                raise OSError(w.last_error(), "SetWinEventHook failed")
            self._foreground = api.foreground()
            if self._foreground:
                self._rescope(self._foreground)
            self.ready.set()
            msg = w.MSG()
            while not self._quit.is_set():
                got = user32.GetMessageW(ctypes.byref(msg), None, 0, 0)
                if got == -1:
                    raise OSError(w.last_error(), "GetMessageW failed")
                if got == 0:  # WM_QUIT
                    break
                user32.TranslateMessage(ctypes.byref(msg))
                user32.DispatchMessageW(ctypes.byref(msg))
        finally:
            for h in [*self._hooks, *self._scoped]:
                if h:
                    user32.UnhookWinEvent(h)
            self._hooks, self._scoped = [], []
            if hwnd:
                api.wtsapi32.WTSUnRegisterSessionNotification(hwnd)
                if power:
                    user32.UnregisterSuspendResumeNotification(power)
                user32.DestroyWindow(hwnd)
            user32.UnregisterClassW(CLASS_NAME, instance)
            self.thread_id = 0
            self.ready.set()

    def stop(self) -> None:
        """Ends the loop (from any thread)."""
        self._quit.set()
        if self.thread_id:
            self.api.user32.PostThreadMessageW(self.thread_id, w.WM_QUIT, 0, 0)


__all__ = ["HookEvent", "HookThread"]
