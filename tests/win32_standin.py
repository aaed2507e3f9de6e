"""A strict stand-in for ``ctypes.WinDLL`` on Linux: a small fake Windows session whose functions refuse to
be called without declared ``argtypes``/``restype``, check every argument against the declared type at the
width 64-bit Windows gives it, hand out handles above 2**32, and truncate return values to the declared
restype like the real ABI would (a handle returned as ``c_int`` comes back cut, and the next call with it
fails as an invalid handle).

Integer widths are ``ctypes.sizeof`` of the declared type: on Windows x64 the real ABI's; on Linux the
same for ``c_int``/``c_uint`` (32), ``c_size_t``/``c_ssize_t`` and pointers (64), but ``c_long``/``c_ulong``
are 64 bits there and 32 on Windows, so tests/test_windows_abi.py checks separately that the declarations
never use them nor ``wintypes``' names built on them (``DWORD``, ``BOOL``, ``LONG``, ``WPARAM``...).
"""

from __future__ import annotations

import ctypes
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

_UNSET = object()
_INT_CODES = frozenset("bBhHiIlLqQ")
HANDLE_BASE = 0x1_0000_0000  # every handle this stand-in hands out is above 2**32


def _code(t: Any) -> str | None:
    return getattr(t, "_type_", None) if isinstance(getattr(t, "_type_", None), str) else None


def check_arg(i: int, t: Any, value: Any) -> Any:
    """``value`` as the callee would see it through argtype ``t``; ctypes.ArgumentError when it cannot be
    passed as that type on 64-bit Windows."""
    code = _code(t)
    if code in _INT_CODES:
        if isinstance(value, t):
            value = value.value
        if not isinstance(value, int):
            raise ctypes.ArgumentError(f"argument {i}: {value!r} is not an integer for {t.__name__}")
        bits = ctypes.sizeof(t) * 8
        lo, hi = (0, 2**bits - 1) if code.isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if not lo <= value <= hi:
            raise ctypes.ArgumentError(f"argument {i}: {value:#x} does not fit {t.__name__} ({bits} bits)")
        return value
    if code == "P":
        if value is None:
            return None
        if isinstance(value, ctypes.c_void_p):
            return value.value
        if isinstance(value, int):
            if not -(2**63) <= value < 2**64:
                raise ctypes.ArgumentError(f"argument {i}: {value:#x} is wider than a pointer")
            return value & (2**64 - 1)
    try:
        t.from_param(value)
    except (TypeError, ValueError) as exc:
        raise ctypes.ArgumentError(f"argument {i}: {exc}") from None
    return value


def shape_result(t: Any, value: Any) -> Any:
    """What the caller gets back through restype ``t`` (the register cut to the declared width)."""
    if t is None:
        return None
    code = _code(t)
    if code in _INT_CODES:
        bits = ctypes.sizeof(t) * 8
        v = int(value or 0) & (2**bits - 1)
        return v - 2**bits if code.islower() and v >= 2 ** (bits - 1) else v
    if code == "P":
        return int(value) if value else None
    return value


class StrictFunction:
    def __init__(self, dll: StrictDLL, name: str) -> None:
        self.dll = dll
        self.__name__ = name
        self.argtypes: Any = _UNSET
        self.restype: Any = _UNSET

    def __call__(self, *args: Any) -> Any:
        name = f"{self.dll.name}.{self.__name__}"
        if self.argtypes is _UNSET or self.argtypes is None or self.restype is _UNSET:
            raise AssertionError(f"{name} called without declared argtypes and restype")
        if len(args) != len(self.argtypes):
            raise TypeError(f"{name} takes {len(self.argtypes)} arguments ({len(args)} given)")
        values = [check_arg(i + 1, t, a) for i, (t, a) in enumerate(zip(self.argtypes, args, strict=True))]
        impl = self.dll.session.impl(self.dll.name, self.__name__)
        return shape_result(self.restype, impl(*values))


class StrictDLL:
    def __init__(self, session: FakeSession, name: str) -> None:
        self.session = session
        self.name = name
        self._functions: dict[str, StrictFunction] = {}

    def __getattr__(self, fname: str) -> StrictFunction:
        if fname.startswith("_"):
            raise AttributeError(fname)
        fn = self._functions.get(fname)
        if fn is None:
            fn = self._functions[fname] = StrictFunction(self, fname)
        return fn


class FakeSession:
    """A Windows session for the stand-in: top-level windows, a foreground window, message queues per
    thread, WinEvent hooks, and the session's module/process/notification handles (all above 2**32).

    ``errors`` lists every call that got a handle this session never handed out (or already released)."""

    def __init__(self) -> None:
        self._ids = itertools.count(HANDLE_BASE + 0x1000, 0x10)
        self.module = HANDLE_BASE + 0x4000_0000  # like python.exe's image base 0x140000000
        self.windows: dict[int, dict[str, Any]] = {}
        self.foreground = 0
        self.errors: list[str] = []
        self.hooks: dict[int, tuple[int, int, Any, int]] = {}
        self.unhooked: list[int] = []
        self.classes: dict[str, Any] = {}
        self.process_handles: set[int] = set()
        self.power: set[int] = set()
        self.wts: set[int] = set()
        self.queues: dict[int, queue.Queue[tuple[Any, ...]]] = {}
        self._thread_ids: dict[int, int] = {}
        self._tids = itertools.count(4000, 4)
        self._lock = threading.Lock()
        self.fail: set[str] = set()

    def new_handle(self) -> int:
        return next(self._ids)

    def loader(self, name: str) -> StrictDLL:
        return StrictDLL(self, name)

    def add_window(self, title: str, cls: str, pid: int, exe: str, *, visible: bool = True) -> int:
        hwnd = self.new_handle()
        self.windows[hwnd] = dict(title=title, cls=cls, pid=pid, exe=exe, visible=visible, wndproc=None)
        return hwnd

    # ---- driving ------------------------------------------------------------------------------------------

    def _hook_queue(self) -> queue.Queue[tuple[Any, ...]]:
        # the thread that set the hooks gets the events (WINEVENT_OUTOFCONTEXT)
        tid = next(t for t, q in self.queues.items())
        return self.queues[tid]

    def winevent(self, event: int, hwnd: int, id_object: int = 0, id_child: int = 0) -> None:
        if event == 0x0003:
            self.foreground = hwnd
        self._hook_queue().put(("winevent", event, hwnd, id_object, id_child))

    def send(self, hwnd: int, message: int, wparam: int, lparam: int = 0) -> None:
        self._hook_queue().put(("message", hwnd, message, wparam, lparam))

    # ---- helpers --------------------------------------------------------------------------------------

    def _valid_window(self, fn: str, hwnd: int | None) -> bool:
        if hwnd in self.windows:
            return True
        self.errors.append(f"{fn}: invalid window handle {hwnd!r}")
        return False

    def _tid(self) -> int:
        with self._lock:
            ident = threading.get_ident()
            if ident not in self._thread_ids:
                tid = self._thread_ids[ident] = next(self._tids)
                self.queues[tid] = queue.Queue()
            return self._thread_ids[ident]

    # ---- the functions ------------------------------------------------------------------------------------

    def impl(self, dll: str, name: str) -> Callable[..., Any]:
        if name in self.fail:
            return lambda *a: 0
        fn = getattr(self, f"{dll}_{name}", None)
        if fn is None:
            raise AssertionError(f"the stand-in has no {dll}.{name}")
        return fn  # type: ignore[no-any-return]

    def user32_GetForegroundWindow(self) -> int:
        return self.foreground

    def user32_GetWindowTextLengthW(self, hwnd: int) -> int:
        return len(self.windows[hwnd]["title"]) if self._valid_window("GetWindowTextLengthW", hwnd) else 0

    def user32_GetWindowTextW(self, hwnd: int, buf: Any, n: int) -> int:
        if not self._valid_window("GetWindowTextW", hwnd):
            return 0
        buf.value = self.windows[hwnd]["title"][: n - 1]
        return len(buf.value)

    def user32_GetClassNameW(self, hwnd: int, buf: Any, n: int) -> int:
        if not self._valid_window("GetClassNameW", hwnd):
            return 0
        buf.value = self.windows[hwnd]["cls"][: n - 1]
        return len(buf.value)

    def user32_GetWindowThreadProcessId(self, hwnd: int, pid: Any) -> int:
        if not self._valid_window("GetWindowThreadProcessId", hwnd):
            return 0
        pid._obj.value = self.windows[hwnd]["pid"]
        return 1

    def user32_GetAncestor(self, hwnd: int, flags: int) -> int:
        return hwnd if self._valid_window("GetAncestor", hwnd) else 0

    def user32_IsWindow(self, hwnd: int) -> int:
        return int(hwnd in self.windows)

    def user32_IsWindowVisible(self, hwnd: int) -> int:
        return int(self._valid_window("IsWindowVisible", hwnd) and self.windows[hwnd]["visible"])

    def user32_EnumWindows(self, proc: Any, lparam: int) -> int:
        for hwnd in list(self.windows):
            if not proc(hwnd, lparam):  # through the WNDENUMPROC prototype: the handle must survive it
                break
        return 1

    def user32_GetLastInputInfo(self, info: Any) -> int:
        info._obj.dwTime = 1000
        return 1

    def user32_SetWinEventHook(self, lo: int, hi: int, module: Any, proc: Any, pid: int, tid: int,
                               flags: int) -> int:
        self._tid()
        h = self.new_handle()
        self.hooks[h] = (lo, hi, proc, pid)
        return h

    def user32_UnhookWinEvent(self, h: int) -> int:
        if self.hooks.pop(h, None) is None:
            self.errors.append(f"UnhookWinEvent: unknown hook {h!r}")
            return 0
        self.unhooked.append(h)
        return 1

    def user32_GetMessageW(self, msg: Any, hwnd: Any, lo: int, hi: int) -> int:
        q = self.queues[self._tid()]
        while True:
            item = q.get()
            if item[0] == "quit":
                return 0
            if item[0] == "winevent":
                _, event, target, obj, child = item
                pid = self.windows.get(target, {}).get("pid", 0)
                for h, (elo, ehi, proc, hpid) in list(self.hooks.items()):
                    if elo <= event <= ehi and hpid in (0, pid):
                        proc(h, event, target, obj, child, 0, 0)  # through the WINEVENTPROC prototype
                continue
            _, target, message, wparam, lparam = item
            m = msg._obj
            m.hWnd, m.message, m.wParam, m.lParam = target, message, wparam, lparam
            return 1

    def user32_TranslateMessage(self, msg: Any) -> int:
        return 0

    def user32_DispatchMessageW(self, msg: Any) -> int:
        m = msg._obj
        if not self._valid_window("DispatchMessageW", m.hWnd):
            return 0
        return int(self.windows[m.hWnd]["wndproc"](m.hWnd, m.message, m.wParam, m.lParam))

    def user32_PostThreadMessageW(self, tid: int, message: int, wparam: int, lparam: int) -> int:
        if tid not in self.queues:
            self.errors.append(f"PostThreadMessageW: thread {tid} has no message queue")
            return 0
        self.queues[tid].put(("quit",) if message == 0x0012 else ("message", 0, message, wparam, lparam))
        return 1

    def user32_DefWindowProcW(self, hwnd: int, message: int, wparam: int, lparam: int) -> int:
        return 0

    def user32_RegisterClassW(self, wc: Any) -> int:
        c = wc._obj
        if c.hInstance != self.module:
            self.errors.append(f"RegisterClassW: hInstance {c.hInstance!r} is not the module handle")
            return 0
        self.classes[c.lpszClassName] = c.lpfnWndProc
        return 0xC001

    def user32_UnregisterClassW(self, name: str, instance: int) -> int:
        if instance != self.module or name not in self.classes:
            self.errors.append(f"UnregisterClassW({name!r}, {instance!r})")
            return 0
        del self.classes[name]
        return 1

    def user32_CreateWindowExW(self, ex: int, cls: str, title: str, style: int, x: int, y: int, w: int,
                               h: int, parent: int, menu: Any, instance: int, param: Any) -> int:
        self._tid()
        if instance != self.module or parent != 2**64 - 3 or cls not in self.classes:
            self.errors.append(f"CreateWindowExW: instance {instance!r}, parent {parent!r}, class {cls!r}")
            return 0
        hwnd = self.add_window(title, cls, 1, "python.exe", visible=False)
        self.windows[hwnd]["wndproc"] = self.classes[cls]
        return hwnd

    def user32_DestroyWindow(self, hwnd: int) -> int:
        if not self._valid_window("DestroyWindow", hwnd):
            return 0
        del self.windows[hwnd]
        return 1

    def user32_RegisterSuspendResumeNotification(self, hwnd: int, flags: int) -> int:
        if not self._valid_window("RegisterSuspendResumeNotification", hwnd):
            return 0
        h = self.new_handle()
        self.power.add(h)
        return h

    def user32_UnregisterSuspendResumeNotification(self, h: int) -> int:
        if h not in self.power:
            self.errors.append(f"UnregisterSuspendResumeNotification: {h!r}")
            return 0
        self.power.discard(h)
        return 1

    def kernel32_GetModuleHandleW(self, name: Any) -> int:
        return self.module

    def kernel32_GetCurrentThreadId(self) -> int:
        return self._tid()

    def kernel32_GetTickCount(self) -> int:
        return 5000

    def kernel32_OpenProcess(self, access: int, inherit: int, pid: int) -> int:
        h = self.new_handle()
        self.process_handles.add(h)
        self.windows_pids = getattr(self, "windows_pids", {})
        self.windows_pids[h] = pid
        return h

    def kernel32_QueryFullProcessImageNameW(self, h: int, flags: int, buf: Any, size: Any) -> int:
        if h not in self.process_handles:
            self.errors.append(f"QueryFullProcessImageNameW: invalid process handle {h!r}")
            return 0
        pid = self.windows_pids[h]
        exe = next((w["exe"] for w in self.windows.values() if w["pid"] == pid), "")
        buf.value = exe
        size._obj.value = len(exe)
        return 1

    def kernel32_CloseHandle(self, h: int) -> int:
        if h not in self.process_handles:
            self.errors.append(f"CloseHandle: invalid handle {h!r}")
            return 0
        self.process_handles.discard(h)
        return 1

    def wtsapi32_WTSRegisterSessionNotification(self, hwnd: int, flags: int) -> int:
        if not self._valid_window("WTSRegisterSessionNotification", hwnd):
            return 0
        self.wts.add(hwnd)
        return 1

    def wtsapi32_WTSUnRegisterSessionNotification(self, hwnd: int) -> int:
        if hwnd not in self.wts:
            self.errors.append(f"WTSUnRegisterSessionNotification: {hwnd!r}")
            return 0
        self.wts.discard(hwnd)
        return 1

    def version_GetFileVersionInfoSizeW(self, path: str, handle: Any) -> int:
        return 0  # no version resource

    def netapi32_NetGetJoinInformation(self, server: Any, name: Any, status: Any) -> int:
        name._obj.value = "WORKGROUP"
        status._obj.value = 2
        return 0

    def netapi32_NetApiBufferFree(self, p: Any) -> int:
        return 0
