"""The Win32 functions the Windows source calls, each with a declared ABI, and thin helpers over them.

Every function gets ``argtypes`` and ``restype`` when :func:`bind` loads it, so ctypes never falls back to
its default conversion (Python int -> C ``int``), which on 64-bit Windows truncates or rejects handles
(python.exe's module handle is above 2**32). Handles are ``HANDLE``/``HWND``/``HMODULE`` (pointer sized);
integers use fixed-width types (``DWORD = c_uint32``, ``BOOL = c_int32``) and the pointer-sized message
parameters ``WPARAM``/``LPARAM``/``LRESULT`` are ``c_size_t``/``c_ssize_t``: none of ``wintypes``'
``c_long``-based names, whose width differs between Windows (32 bits) and the Linux test machine (64), is
used, so the strict stand-in of the tests (tests/test_windows_abi.py) checks the widths Windows will use.

Callbacks are ``WINFUNCTYPE`` prototypes (stdcall on 32-bit, the x64 convention on 64-bit).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from ctypes import wintypes
from typing import Any, Final

if sys.platform == "win32":
    from ctypes import WINFUNCTYPE, WinDLL
else:  # the tests' strict stand-in puts both on ctypes before importing this module
    WINFUNCTYPE: Any = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
    WinDLL: Any = getattr(ctypes, "WinDLL", None)

# ---- types (fixed widths: the same meaning on the Linux test machine) -------------------------------------

DWORD = ctypes.c_uint32
BOOL = ctypes.c_int32
UINT = ctypes.c_uint32
LONG = ctypes.c_int32
ATOM = ctypes.c_uint16
WPARAM = ctypes.c_size_t
LPARAM = ctypes.c_ssize_t
LRESULT = ctypes.c_ssize_t
HANDLE = wintypes.HANDLE
HWND = wintypes.HWND
HMODULE = wintypes.HMODULE
HINSTANCE = wintypes.HINSTANCE
HWINEVENTHOOK = wintypes.HANDLE
LPCWSTR = wintypes.LPCWSTR
LPWSTR = wintypes.LPWSTR
LPVOID = wintypes.LPVOID

WNDPROC = WINFUNCTYPE(LRESULT, HWND, UINT, WPARAM, LPARAM)
WNDENUMPROC = WINFUNCTYPE(BOOL, HWND, LPARAM)
WINEVENTPROC = WINFUNCTYPE(None, HWINEVENTHOOK, DWORD, HWND, LONG, LONG, DWORD, DWORD)


class POINT(ctypes.Structure):
    _fields_ = [("x", LONG), ("y", LONG)]


class MSG(ctypes.Structure):
    _fields_ = [
        ("hWnd", HWND), ("message", UINT), ("wParam", WPARAM), ("lParam", LPARAM), ("time", DWORD),
        ("pt", POINT), ("lPrivate", DWORD),
    ]


class LASTINPUTINFO(ctypes.Structure):
    _fields_ = [("cbSize", UINT), ("dwTime", DWORD)]


class WNDCLASSW(ctypes.Structure):
    _fields_ = [
        ("style", UINT), ("lpfnWndProc", WNDPROC), ("cbClsExtra", ctypes.c_int),
        ("cbWndExtra", ctypes.c_int), ("hInstance", HINSTANCE), ("hIcon", HANDLE),
        ("hCursor", HANDLE), ("hbrBackground", HANDLE), ("lpszMenuName", LPCWSTR),
        ("lpszClassName", LPCWSTR),
    ]


class VS_FIXEDFILEINFO(ctypes.Structure):
    _fields_ = [(name, DWORD) for name in (
        "dwSignature", "dwStrucVersion", "dwFileVersionMS", "dwFileVersionLS", "dwProductVersionMS",
        "dwProductVersionLS", "dwFileFlagsMask", "dwFileFlags", "dwFileOS", "dwFileType", "dwFileSubtype",
        "dwFileDateMS", "dwFileDateLS",
    )]


# ---- constants ------------------------------------------------------------------------------------------

HWND_MESSAGE: Final = -3
WM_QUIT: Final = 0x0012
WM_USER: Final = 0x0400
NOTIFY_FOR_THIS_SESSION: Final = 0
DEVICE_NOTIFY_WINDOW_HANDLE: Final = 0
PROCESS_QUERY_LIMITED_INFORMATION: Final = 0x1000
GA_ROOT: Final = 2
WINEVENT_OUTOFCONTEXT: Final = 0x0000
WINEVENT_SKIPOWNPROCESS: Final = 0x0002
EVENT_SYSTEM_FOREGROUND: Final = 0x0003
EVENT_OBJECT_CREATE: Final = 0x8000
EVENT_OBJECT_DESTROY: Final = 0x8001
EVENT_OBJECT_FOCUS: Final = 0x8005
EVENT_OBJECT_SELECTION: Final = 0x8006
EVENT_OBJECT_SELECTIONREMOVE: Final = 0x8008
EVENT_OBJECT_NAMECHANGE: Final = 0x800C
EVENT_OBJECT_VALUECHANGE: Final = 0x800E
OBJID_WINDOW: Final = 0
CHILDID_SELF: Final = 0
NERR_SUCCESS: Final = 0
NET_SETUP_WORKGROUP_NAME: Final = 2
NET_SETUP_DOMAIN_NAME: Final = 3

# ---- the declared ABI: dll -> function -> (restype, argtypes) ---------------------------------------------

P = ctypes.POINTER
PROTOTYPES: Final[dict[str, dict[str, tuple[Any, list[Any]]]]] = {
    "user32": {
        "GetForegroundWindow": (HWND, []),
        "GetWindowTextLengthW": (ctypes.c_int, [HWND]),
        "GetWindowTextW": (ctypes.c_int, [HWND, LPWSTR, ctypes.c_int]),
        "GetClassNameW": (ctypes.c_int, [HWND, LPWSTR, ctypes.c_int]),
        "GetWindowThreadProcessId": (DWORD, [HWND, P(DWORD)]),
        "GetAncestor": (HWND, [HWND, UINT]),
        "IsWindow": (BOOL, [HWND]),
        "IsWindowVisible": (BOOL, [HWND]),
        "EnumWindows": (BOOL, [WNDENUMPROC, LPARAM]),
        "GetLastInputInfo": (BOOL, [P(LASTINPUTINFO)]),
        "SetWinEventHook": (HWINEVENTHOOK, [DWORD, DWORD, HMODULE, WINEVENTPROC, DWORD, DWORD, DWORD]),
        "UnhookWinEvent": (BOOL, [HWINEVENTHOOK]),
        "GetMessageW": (BOOL, [P(MSG), HWND, UINT, UINT]),
        "TranslateMessage": (BOOL, [P(MSG)]),
        "DispatchMessageW": (LRESULT, [P(MSG)]),
        "PostThreadMessageW": (BOOL, [DWORD, UINT, WPARAM, LPARAM]),
        "DefWindowProcW": (LRESULT, [HWND, UINT, WPARAM, LPARAM]),
        "RegisterClassW": (ATOM, [P(WNDCLASSW)]),
        "UnregisterClassW": (BOOL, [LPCWSTR, HINSTANCE]),
        "CreateWindowExW": (HWND, [
            DWORD, LPCWSTR, LPCWSTR, DWORD, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
            HWND, HANDLE, HINSTANCE, LPVOID,
        ]),
        "DestroyWindow": (BOOL, [HWND]),
        "RegisterSuspendResumeNotification": (HANDLE, [HANDLE, DWORD]),
        "UnregisterSuspendResumeNotification": (BOOL, [HANDLE]),
    },
    "kernel32": {
        "GetModuleHandleW": (HMODULE, [LPCWSTR]),
        "GetCurrentThreadId": (DWORD, []),
        "GetTickCount": (DWORD, []),
        "OpenProcess": (HANDLE, [DWORD, BOOL, DWORD]),
        "QueryFullProcessImageNameW": (BOOL, [HANDLE, DWORD, LPWSTR, P(DWORD)]),
        "CloseHandle": (BOOL, [HANDLE]),
    },
    "wtsapi32": {
        "WTSRegisterSessionNotification": (BOOL, [HWND, DWORD]),
        "WTSUnRegisterSessionNotification": (BOOL, [HWND]),
    },
    "version": {
        "GetFileVersionInfoSizeW": (DWORD, [LPCWSTR, P(DWORD)]),
        "GetFileVersionInfoW": (BOOL, [LPCWSTR, DWORD, DWORD, LPVOID]),
        "VerQueryValueW": (BOOL, [LPVOID, LPCWSTR, P(LPVOID), P(UINT)]),
    },
    "netapi32": {
        "NetGetJoinInformation": (DWORD, [LPCWSTR, P(LPWSTR), P(ctypes.c_int)]),
        "NetApiBufferFree": (DWORD, [LPVOID]),
    },
}

Loader = Callable[[str], Any]


def last_error() -> int:
    """The calling thread's last Win32 error (``use_last_error`` DLLs), 0 where there is none."""
    get = getattr(ctypes, "get_last_error", None)
    return int(get()) if get is not None else 0


def default_loader(name: str) -> Any:
    if WinDLL is None:
        raise OSError(f"{name}.dll: not Windows (ctypes has no WinDLL)")
    return WinDLL(name, use_last_error=True)


class Win32:
    """The loaded DLLs with every function of :data:`PROTOTYPES` declared, and small helpers.

    Guarantee: every function reachable as ``api.user32.X`` (etc.) has had ``argtypes`` and ``restype`` set
    before it can be called; helpers never raise for a window or process that vanished meanwhile (they
    return empty values)."""

    def __init__(self, loader: Loader = default_loader) -> None:
        self.dlls: dict[str, Any] = {}
        for dll_name, functions in PROTOTYPES.items():
            dll = loader(dll_name)
            for fname, (restype, argtypes) in functions.items():
                fn = getattr(dll, fname)
                fn.restype = restype
                fn.argtypes = argtypes
            self.dlls[dll_name] = dll
        self.user32 = self.dlls["user32"]
        self.kernel32 = self.dlls["kernel32"]
        self.wtsapi32 = self.dlls["wtsapi32"]
        self.version = self.dlls["version"]
        self.netapi32 = self.dlls["netapi32"]

    # ---- windows ----------------------------------------------------------------------------------------

    def foreground(self) -> int:
        return int(self.user32.GetForegroundWindow() or 0)

    def window_text(self, hwnd: int) -> str:
        n = self.user32.GetWindowTextLengthW(hwnd)
        if n <= 0:
            return ""
        buf = ctypes.create_unicode_buffer(n + 1)
        self.user32.GetWindowTextW(hwnd, buf, n + 1)
        return buf.value

    def class_name(self, hwnd: int) -> str:
        buf = ctypes.create_unicode_buffer(257)
        n = self.user32.GetClassNameW(hwnd, buf, 257)
        return buf.value if n > 0 else ""

    def window_pid(self, hwnd: int) -> int:
        pid = DWORD()
        self.user32.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
        return int(pid.value)

    def root_of(self, hwnd: int) -> int:
        return int(self.user32.GetAncestor(hwnd, GA_ROOT) or 0)

    def is_window(self, hwnd: int) -> bool:
        return bool(self.user32.IsWindow(hwnd))

    def top_level_windows(self, *, visible_only: bool = True) -> list[int]:
        found: list[int] = []

        def cb(hwnd: int | None, _lparam: int) -> int:
            if hwnd and (not visible_only or self.user32.IsWindowVisible(hwnd)):
                found.append(int(hwnd))
            return 1

        self.user32.EnumWindows(WNDENUMPROC(cb), 0)
        return found

    def idle_ms(self) -> int:
        from agent.sources.winpresence import idle_from_ticks

        info = LASTINPUTINFO()
        info.cbSize = ctypes.sizeof(info)
        if not self.user32.GetLastInputInfo(ctypes.byref(info)):
            return 0
        return idle_from_ticks(int(self.kernel32.GetTickCount()), int(info.dwTime))

    # ---- processes --------------------------------------------------------------------------------------

    def process_exe(self, pid: int) -> str:
        handle = self.kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return ""
        try:
            size = DWORD(32768)
            buf = ctypes.create_unicode_buffer(size.value)
            if self.kernel32.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size)):
                return buf.value
            return ""
        finally:
            self.kernel32.CloseHandle(handle)

    def file_version(self, path: str) -> str:
        size = self.version.GetFileVersionInfoSizeW(path, None)
        if not size:
            return ""
        data = ctypes.create_string_buffer(size)
        if not self.version.GetFileVersionInfoW(path, 0, size, data):
            return ""
        ptr = LPVOID()
        length = UINT()
        if not self.version.VerQueryValueW(data, "\\", ctypes.byref(ptr), ctypes.byref(length)):
            return ""
        if not ptr.value or length.value < ctypes.sizeof(VS_FIXEDFILEINFO):
            return ""
        info = VS_FIXEDFILEINFO.from_address(ptr.value)
        ms, ls = info.dwFileVersionMS, info.dwFileVersionLS
        return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"

    # ---- the computer -----------------------------------------------------------------------------------

    def workgroup(self) -> str:
        """The domain or workgroup this computer joined (NetGetJoinInformation; ``wmic`` is gone in
        Windows 11 24H2), "" when unknown."""
        name = LPWSTR()
        status = ctypes.c_int()
        if self.netapi32.NetGetJoinInformation(None, ctypes.byref(name), ctypes.byref(status)) != 0:
            return ""
        try:
            if status.value in (NET_SETUP_WORKGROUP_NAME, NET_SETUP_DOMAIN_NAME):
                return name.value or ""
            return ""
        finally:
            self.netapi32.NetApiBufferFree(name)


__all__ = ["PROTOTYPES", "WINEVENTPROC", "WNDPROC", "Win32"]
