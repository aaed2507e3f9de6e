"""The Windows source against a strict stand-in for ``ctypes.WinDLL`` (tests/win32_standin.py): every Win32
function declared, handles above 2**32 surviving every declared type, and the notify/hook thread, the
foreground tracking and shutdown driven through it on Linux."""

from __future__ import annotations

import ast
import asyncio
import ctypes
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.observations import Observation, PresenceObservation, WindowSnapshot
from agent.sources import win32 as w
from agent.sources import winpresence
from tests.win32_standin import HANDLE_BASE, FakeSession, StrictDLL
from tests.windows_trees import Fake


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSession]:
    """ctypes.WinDLL/WINFUNCTYPE replaced by the stand-in, and agent.sources.win32 imported against it."""
    s = FakeSession()
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error=False: s.loader(name), raising=False)
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: 0, raising=False)
    importlib.reload(w)
    yield s
    monkeypatch.undo()
    importlib.reload(w)


def test_every_function_is_declared_with_fixed_width_types(session: FakeSession) -> None:
    api = w.Win32()
    for dll_name, functions in w.PROTOTYPES.items():
        dll = api.dlls[dll_name]
        assert isinstance(dll, StrictDLL)
        for fname in functions:
            fn = getattr(dll, fname)
            assert isinstance(fn.argtypes, list), fname
            assert fn.restype is not None or fname in ("x",), fname
    # wintypes' names built on c_long are 32 bits on Windows and 64 on Linux: the stand-in could not check
    # them for what they are on Windows, so the declarations must not use them
    tree = ast.parse(Path(w.__file__).read_text(encoding="utf-8"))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    llp64 = {"DWORD", "BOOL", "LONG", "ULONG", "WPARAM", "LPARAM", "UINT", "MSG", "c_long", "c_ulong"}
    assert not used & llp64
    assert {"c_size_t", "c_ssize_t", "c_uint32", "c_int32"} <= used


def test_the_stand_in_refuses_what_64_bit_windows_would(session: FakeSession) -> None:
    dll = session.loader("user32")
    handle = HANDLE_BASE + 0x10
    session.windows[handle] = dict(title="x", cls="c", pid=1, exe="a.exe", visible=True, wndproc=None)
    with pytest.raises(AssertionError, match="without declared"):
        dll.IsWindow(handle)
    dll.IsWindow.argtypes = [ctypes.c_int]  # a handle declared as int: cut on Windows
    dll.IsWindow.restype = w.BOOL
    with pytest.raises(ctypes.ArgumentError, match="does not fit"):
        dll.IsWindow(handle)
    dll.IsWindow.argtypes = [w.HWND]
    assert dll.IsWindow(handle) == 1
    # a handle returned through a 32-bit restype comes back cut, and the next call with it fails
    session.foreground = handle
    dll.GetForegroundWindow.argtypes, dll.GetForegroundWindow.restype = [], ctypes.c_int
    cut = dll.GetForegroundWindow()
    assert cut != handle
    dll.GetWindowTextLengthW.argtypes, dll.GetWindowTextLengthW.restype = [w.HWND], ctypes.c_int
    dll.GetWindowTextLengthW(cut)
    assert session.errors and "invalid window handle" in session.errors[0]


def test_helpers_through_the_declared_abi(session: FakeSession) -> None:
    api = w.Win32()
    hwnd = session.add_window("Budget.xlsx - Excel", "XLMAIN", 4242, r"C:\Office\EXCEL.EXE")
    assert hwnd > 2**32
    assert api.window_text(hwnd) == "Budget.xlsx - Excel"
    assert api.class_name(hwnd) == "XLMAIN"
    assert api.window_pid(hwnd) == 4242
    assert api.process_exe(4242) == r"C:\Office\EXCEL.EXE"
    assert api.file_version(r"C:\Office\EXCEL.EXE") == ""
    assert api.top_level_windows() == [hwnd]
    assert api.root_of(hwnd) == hwnd
    assert api.idle_ms() == 4000
    assert api.workgroup() == "WORKGROUP"
    assert session.errors == [] and session.process_handles == set()


class TreeAutomation:
    """uiautomation's two entry points the platform uses, answering with recorded trees."""

    def __init__(self, trees: dict[int, Fake]) -> None:
        self.trees = trees

    def ControlFromHandle(self, hwnd: int) -> Fake:
        return self.trees[hwnd]

    def GetFocusedControl(self) -> None:
        return None


def _source(session: FakeSession, trees: dict[int, Fake], tmp_path: Path) -> Any:
    from agent.sources import winuia
    from agent.sources.windows import WindowsSource

    def run_uia(api: w.Win32, events: Any, deliver: Any, stop: Any, **kw: Any) -> None:
        winuia.uia_loop(winuia.UiaPlatform(api, TreeAutomation(trees)), events, deliver, stop, **kw)

    return WindowsSource(state_dir=tmp_path, run_uia=run_uia, input_listeners=lambda on_input: [])


async def _until(pred: Any, what: str, within_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_hook_thread_foreground_tracking_presence_and_shutdown(
    session: FakeSession, tmp_path: Path
) -> None:
    pad = session.add_window("notes.txt - Notepad", "Notepad", 100, r"C:\Windows\notepad.exe")
    later_title = "todo.txt - Notepad"
    trees = {pad: Fake("Window", "notes.txt - Notepad", cls="Notepad")}
    session.foreground = pad
    source = _source(session, trees, tmp_path)
    got: list[Observation] = []
    task = asyncio.create_task(source.run(got.append))
    await _until(lambda: source.hooks is not None and source.hooks.ready.is_set(), "the hook thread")
    await _until(lambda: any(isinstance(o, WindowSnapshot) for o in got), "the first snapshot")
    # a window that opens after the start, and comes to the foreground: the hook callback gets its handle
    # through the WINEVENTPROC prototype, the UIA thread reads it through the declared functions
    new = session.add_window(later_title, "Notepad", 101, r"C:\Windows\notepad.exe")
    trees[new] = Fake("Window", later_title, cls="Notepad")
    session.winevent(w.EVENT_SYSTEM_FOREGROUND, new)
    await _until(lambda: any(isinstance(o, WindowSnapshot) and o.window_id == str(new) for o in got), "new")
    snaps = [o for o in got if isinstance(o, WindowSnapshot)]
    assert [(s.window_id, s.known, s.new_window, s.document_event) for s in snaps] == [
        (str(pad), True, False, None), (str(new), False, True, "open"),
    ]
    assert snaps[1].exe_path == r"C:\Windows\notepad.exe" and snaps[1].pid == 101
    # the shell's taskbar in front: nothing
    bar = session.add_window("", "Shell_TrayWnd", 5, r"C:\Windows\explorer.exe")
    session.winevent(w.EVENT_SYSTEM_FOREGROUND, bar)
    # a session lock through the message-only window's WNDPROC
    notify = next(h for h, v in session.windows.items() if v["wndproc"] is not None)
    assert notify > 2**32 and notify in session.wts and session.power
    session.send(notify, winpresence.WM_WTSSESSION_CHANGE, 0x7)
    await _until(lambda: any(isinstance(o, PresenceObservation) for o in got), "the lock")
    assert [o.kind for o in got if isinstance(o, PresenceObservation)] == ["Lock"]
    assert len([o for o in got if isinstance(o, WindowSnapshot)]) == 2
    # shutdown: the loop ends on WM_QUIT and everything is released
    hooks = set(session.hooks)
    assert len(hooks) >= 2
    source.stop()
    await asyncio.wait_for(task, 20)
    assert session.hooks == {} and set(session.unhooked) >= hooks
    assert notify not in session.windows and session.classes == {} and session.wts == set()
    assert session.power == set() and session.process_handles == set()
    assert session.errors == []
    assert (tmp_path / "windows-desk.json").exists()  # what a restart needs


async def test_a_failing_thread_makes_the_source_raise(session: FakeSession, tmp_path: Path) -> None:
    session.fail.add("CreateWindowExW")
    source = _source(session, {}, tmp_path)
    with pytest.raises(OSError, match="CreateWindowExW"):
        await asyncio.wait_for(source.run(lambda o: None), 20)
    assert session.errors == [] and session.hooks == {}


class FailingSource:
    async def run(self, emit: Any) -> None:
        raise OSError("CreateWindowExW failed")

    def stop(self) -> None:
        pass

    def idle_ms(self) -> int:
        return 0


def test_the_agent_exits_non_zero_when_its_source_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.sources
    from agent import cli

    monkeypatch.setattr(agent.sources, "select_source", lambda settings: FailingSource())
    code = cli.main(["run", "--state-dir", str(tmp_path), "--source", "windows",
                     "--kafka-bootstrap", "127.0.0.1:9", "--linger-s", "300"])
    assert code == 1
