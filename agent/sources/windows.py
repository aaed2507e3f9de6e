"""The Windows source: thin platform calls only; every decision is in :mod:`agent.sources.winlogic`.

Cannot run (nor be type-checked: mypy skips it) on Linux; keep it small and obvious.

Threads, each handing observations to the asyncio loop with ``call_soon_threadsafe``:

- ``desktrace-uia``: polls the foreground window every ``poll_s`` (GetForegroundWindow + GetWindowTextW are
  cheap); when the window or its title changed, and every ``recheck_s`` for browsers (single-page sites
  change the URL without the title) and in extended mode (field edits), it reads the window through UI
  Automation (``uiautomation``, COM initialised in the thread) and builds the snapshot with
  :func:`winlogic.describe_window`. Polling coalesces bursts of title changes (no separate debounce).
- ``desktrace-notify``: a hidden message-only window (parent ``HWND_MESSAGE``) registered with
  ``WTSRegisterSessionNotification`` (lock, unlock, logon, logoff, connect, disconnect) and
  ``RegisterSuspendResumeNotification`` (suspend, resume: message-only windows get no broadcast messages,
  so WM_POWERBROADCAST must be asked for explicitly); ``GetMessageW`` loop, ended by WM_QUIT.
- pynput's low-level hooks (``WH_MOUSE_LL``, ``WH_KEYBOARD_LL``; pynput >= 1.8 passes ``injected`` from the
  LLMHF_INJECTED / LLKHF_INJECTED flags, which SendInput and RPA robots set).

Idle: GetLastInputInfo against GetTickCount.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from ctypes import wintypes
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import uiautomation as auto
from pynput import keyboard, mouse

from agent.observations import InputObservation, Observation, ObservationSink, PresenceObservation
from agent.sources import winlogic as wl
from agent.sources.common import ForegroundTracker, InputAttributor

log = logging.getLogger("desktrace.agent.sources.windows")

user32 = ctypes.WinDLL("user32", use_last_error=True)
kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
wtsapi32 = ctypes.WinDLL("wtsapi32", use_last_error=True)
version_dll = ctypes.WinDLL("version", use_last_error=True)

LRESULT = ctypes.c_ssize_t
WNDPROC = ctypes.WINFUNCTYPE(LRESULT, wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM)
WNDENUMPROC = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
HWND_MESSAGE = wintypes.HWND(-3)
WM_QUIT = 0x0012
NOTIFY_FOR_THIS_SESSION = 0
DEVICE_NOTIFY_WINDOW_HANDLE = 0
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000


class LASTINPUTINFO(ctypes.Structure):
    _fields_ = [("cbSize", wintypes.UINT), ("dwTime", wintypes.DWORD)]


class WNDCLASSW(ctypes.Structure):
    _fields_ = [
        ("style", wintypes.UINT), ("lpfnWndProc", WNDPROC), ("cbClsExtra", ctypes.c_int),
        ("cbWndExtra", ctypes.c_int), ("hInstance", wintypes.HINSTANCE), ("hIcon", wintypes.HICON),
        ("hCursor", wintypes.HANDLE), ("hbrBackground", wintypes.HBRUSH), ("lpszMenuName", wintypes.LPCWSTR),
        ("lpszClassName", wintypes.LPCWSTR),
    ]


class VS_FIXEDFILEINFO(ctypes.Structure):
    _fields_ = [
        ("dwSignature", wintypes.DWORD), ("dwStrucVersion", wintypes.DWORD),
        ("dwFileVersionMS", wintypes.DWORD), ("dwFileVersionLS", wintypes.DWORD),
        ("dwProductVersionMS", wintypes.DWORD), ("dwProductVersionLS", wintypes.DWORD),
        ("dwFileFlagsMask", wintypes.DWORD), ("dwFileFlags", wintypes.DWORD), ("dwFileOS", wintypes.DWORD),
        ("dwFileType", wintypes.DWORD), ("dwFileSubtype", wintypes.DWORD), ("dwFileDateMS", wintypes.DWORD),
        ("dwFileDateLS", wintypes.DWORD),
    ]


user32.DefWindowProcW.argtypes = [wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
user32.DefWindowProcW.restype = LRESULT
user32.CreateWindowExW.restype = wintypes.HWND
user32.GetForegroundWindow.restype = wintypes.HWND
user32.PostThreadMessageW.argtypes = [wintypes.DWORD, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
user32.RegisterSuspendResumeNotification.restype = wintypes.HANDLE
kernel32.OpenProcess.restype = wintypes.HANDLE
kernel32.GetModuleHandleW.restype = wintypes.HMODULE


def _now() -> datetime:
    return datetime.now(UTC)


def idle_ms() -> int:
    info = LASTINPUTINFO()
    info.cbSize = ctypes.sizeof(info)
    if not user32.GetLastInputInfo(ctypes.byref(info)):
        return 0
    return wl.idle_from_ticks(kernel32.GetTickCount(), info.dwTime)


def window_text(hwnd: int) -> str:
    n = user32.GetWindowTextLengthW(hwnd)
    buf = ctypes.create_unicode_buffer(n + 1)
    user32.GetWindowTextW(hwnd, buf, n + 1)
    return buf.value


def window_pid(hwnd: int) -> int:
    pid = wintypes.DWORD()
    user32.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
    return int(pid.value)


def process_exe(pid: int) -> str:
    handle = kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return ""
    try:
        size = wintypes.DWORD(32768)
        buf = ctypes.create_unicode_buffer(size.value)
        if kernel32.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size)):
            return buf.value
        return ""
    finally:
        kernel32.CloseHandle(handle)


def file_version(path: str) -> str:
    size = version_dll.GetFileVersionInfoSizeW(path, None)
    if not size:
        return ""
    data = ctypes.create_string_buffer(size)
    if not version_dll.GetFileVersionInfoW(path, 0, size, data):
        return ""
    ptr = ctypes.c_void_p()
    length = wintypes.UINT()
    if not version_dll.VerQueryValueW(data, "\\", ctypes.byref(ptr), ctypes.byref(length)) or not ptr.value:
        return ""
    info = ctypes.cast(ptr, ctypes.POINTER(VS_FIXEDFILEINFO)).contents
    ms, ls = info.dwFileVersionMS, info.dwFileVersionLS
    return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"


def top_level_windows() -> list[int]:
    found: list[int] = []

    def cb(hwnd: int, _lparam: int) -> bool:
        if user32.IsWindowVisible(hwnd):
            found.append(int(hwnd))
        return True

    user32.EnumWindows(WNDENUMPROC(cb), 0)
    return found


class WindowsSource:
    """Watches the interactive Windows session (see the module docstring).

    Guarantees: observations reach ``emit`` on the asyncio loop that called :meth:`run`; a snapshot is
    emitted only when the foreground window or what it shows changed; in extended mode editable fields are
    read, and a field whose IsPassword is true is listed as such without its Value pattern ever being
    called (:class:`winlogic.FieldTracker`); without extended mode no field is visited at all.
    """

    def __init__(self, *, extended_mode: bool = False, poll_s: float = 0.5, recheck_s: float = 2.0) -> None:
        self.extended_mode = extended_mode
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self._stop = threading.Event()
        self._attributor = InputAttributor()
        self._presence = wl.PresenceDebouncer()
        self._versions: dict[str, str] = {}
        self._notify_thread_id = 0
        self._wndproc: Any = None  # keeps the ctypes callback alive

    # ---- Source protocol -------------------------------------------------------------------------------

    async def run(self, emit: ObservationSink) -> None:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()

        def deliver(obs: Observation) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(emit, obs)

        def fail(exc: BaseException) -> None:
            if not failed.done():
                failed.set_exception(exc)

        def guarded(target: Any) -> Any:
            def main() -> None:
                try:
                    target(deliver)
                except BaseException as exc:
                    log.exception("windows source thread failed")
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(fail, exc)
            return main

        def on_input(kind: Literal["click", "scroll", "key"], injected: bool) -> None:
            ts = _now()
            self._attributor.on_input(ts, injected)
            deliver(InputObservation(ts=ts, kind=kind, injected=bool(injected)))

        # pynput stops a listener whose callback returns False: these return None, always.
        def on_click(x: int, y: int, button: Any, pressed: bool, injected: bool = False) -> None:
            if pressed:
                on_input("click", injected)

        def on_scroll(x: int, y: int, dx: int, dy: int, injected: bool = False) -> None:
            on_input("scroll", injected)

        def on_press(key: Any, injected: bool = False) -> None:
            on_input("key", injected)

        mouse_listener = mouse.Listener(on_click=on_click, on_scroll=on_scroll)
        key_listener = keyboard.Listener(on_press=on_press)
        threads = [
            threading.Thread(target=guarded(self._ui_loop), name="desktrace-uia", daemon=True),
            threading.Thread(target=guarded(self._notify_loop), name="desktrace-notify", daemon=True),
        ]
        self._stop.clear()
        for t in threads:
            t.start()
        mouse_listener.start()
        key_listener.start()
        try:
            stopped = asyncio.ensure_future(asyncio.to_thread(self._stop.wait))
            done, _ = await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
            if failed in done:
                failed.result()
        finally:
            self.stop()
            mouse_listener.stop()
            key_listener.stop()
            for t in threads:
                await asyncio.to_thread(t.join, 5)

    def stop(self) -> None:
        self._stop.set()
        if self._notify_thread_id:
            user32.PostThreadMessageW(self._notify_thread_id, WM_QUIT, 0, 0)

    def idle_ms(self) -> int:
        return idle_ms()

    # ---- foreground window (UI Automation) ---------------------------------------------------------------

    def _ui_loop(self, deliver: ObservationSink) -> None:
        with auto.UIAutomationInitializerInThread(debug=False):
            tracker = ForegroundTracker(str(h) for h in top_level_windows())
            docs = wl.DocumentTracker()
            fields = wl.FieldTracker() if self.extended_mode else None
            bars = wl.AddressBars()
            last: tuple[int, str] = (0, "")
            last_read = 0.0
            while not self._stop.wait(self.poll_s):
                hwnd = user32.GetForegroundWindow()
                if not hwnd:
                    continue
                hwnd = int(hwnd)
                title = window_text(hwnd)
                now = time.monotonic()
                changed = (hwnd, title) != last
                if not changed and now - last_read < self.recheck_s:
                    continue
                pid = window_pid(hwnd)
                exe = process_exe(pid)
                if not changed and not (self.extended_mode or wl.browser_of(exe)):
                    continue
                last, last_read = (hwnd, title), now
                try:
                    snap = self._read(hwnd, title, pid, exe, docs, fields, bars)
                except Exception:
                    log.warning("reading the foreground window failed", exc_info=True)
                    continue
                out = tracker.observe(snap)
                if out is not None:
                    deliver(out)

    def _read(
        self, hwnd: int, title: str, pid: int, exe: str,
        docs: wl.DocumentTracker, fields: wl.FieldTracker | None, bars: wl.AddressBars,
    ) -> Any:
        control = auto.ControlFromHandle(hwnd)
        try:
            focused = auto.GetFocusedControl()
        except Exception:
            focused = None
        if exe and exe not in self._versions:
            try:
                self._versions[exe] = file_version(exe)
            except OSError:
                self._versions[exe] = ""
        ts = _now()
        snap = wl.describe_window(
            ts=ts, window_id=str(hwnd), window=control, title=title,
            process=wl.ProcessInfo(pid=pid, exe_path=exe, version=self._versions.get(exe, "")),
            focused=focused, fields=fields, address_bars=bars, input=self._attributor.cause(ts),
        )
        is_dialog = getattr(control, "ClassName", "") == "#32770"
        event = docs.observe(str(hwnd), wl.app_name(exe), title, is_dialog=is_dialog)
        if event is not None:
            snap = msgspec.structs.replace(snap, document_event=event)
        return snap

    # ---- session and power notifications -----------------------------------------------------------------

    def _notify_loop(self, deliver: ObservationSink) -> None:
        def wndproc(hwnd: int, message: int, wparam: int, lparam: int) -> int:
            kind = wl.presence_kind(message, wparam)
            if kind is not None and self._presence.accept(kind):
                deliver(PresenceObservation(ts=_now(), kind=kind))
            if message == wl.WM_POWERBROADCAST:
                return 1
            return int(user32.DefWindowProcW(hwnd, message, wparam, lparam))

        self._wndproc = WNDPROC(wndproc)
        instance = kernel32.GetModuleHandleW(None)
        wc = WNDCLASSW()
        wc.lpfnWndProc = self._wndproc
        wc.hInstance = instance
        wc.lpszClassName = "DesktraceAgentNotify"
        user32.RegisterClassW(ctypes.byref(wc))
        hwnd = user32.CreateWindowExW(
            0, wc.lpszClassName, "desktrace", 0, 0, 0, 0, 0, HWND_MESSAGE, None, instance, None
        )
        if not hwnd:
            raise OSError(ctypes.get_last_error(), "CreateWindowExW (message-only window) failed")
        if not wtsapi32.WTSRegisterSessionNotification(hwnd, NOTIFY_FOR_THIS_SESSION):
            log.warning("WTSRegisterSessionNotification failed: no lock/unlock/logon/logoff events")
        power = user32.RegisterSuspendResumeNotification(hwnd, DEVICE_NOTIFY_WINDOW_HANDLE)
        self._notify_thread_id = kernel32.GetCurrentThreadId()
        try:
            msg = wintypes.MSG()
            while not self._stop.is_set() and user32.GetMessageW(ctypes.byref(msg), None, 0, 0) > 0:
                user32.TranslateMessage(ctypes.byref(msg))
                user32.DispatchMessageW(ctypes.byref(msg))
        finally:
            self._notify_thread_id = 0
            wtsapi32.WTSUnRegisterSessionNotification(hwnd)
            if power:
                user32.UnregisterSuspendResumeNotification(power)
            user32.DestroyWindow(hwnd)
            user32.UnregisterClassW(wc.lpszClassName, instance)


__all__ = ["WindowsSource", "idle_ms"]
