"""Windows smoke run (CI: .github/workflows/windows-agent.yml): the real Windows source, recorder and privacy
filter for ``--seconds`` with the events written as JSON Lines, while this script drives the desk itself:
two Notepad windows on files it creates (opened after the agent started, then switched between), and,
when Excel is installed, a workbook whose sheets it activates one after the other. It then reads the JSONL
back with the consumers' parser and checks the event types the seed defines.

Only meaningful on Windows, in an interactive desktop session; elsewhere it says so and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.identity import detect_identity
from agent.recorder import make_recorder
from agent.runner import load_privacy
from agent.settings import AgentSettings
from agent.sources import select_source
from proto.codec import event_from_json, event_to_json

EXCEL_PS = r"""
$xl = New-Object -ComObject Excel.Application
$xl.Visible = $true
$wb = $xl.Workbooks.Add()
$null = $wb.Worksheets.Add()
$null = $wb.Worksheets.Add()
Start-Sleep -Seconds 3
foreach ($i in 1..3) { $wb.Worksheets.Item($i).Activate(); Start-Sleep -Seconds 2 }
$wb.Saved = $true
$xl.Quit()
"""


def excel_installed() -> bool:
    import winreg  # type: ignore[import-not-found,unused-ignore]

    try:
        winreg.OpenKey(winreg.HKEY_CLASSES_ROOT, "Excel.Application\\CLSID")
    except OSError:
        return False
    return True


def bring_to_front(pid: int) -> None:
    """SetForegroundWindow on ``pid``'s main window, after a synthetic Alt press (the foreground lock lets
    a process that just received input take the foreground); SwitchToThisWindow when that was refused."""
    from ctypes import wintypes

    user32: Any = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    enum_proc = ctypes.WINFUNCTYPE(  # type: ignore[attr-defined,unused-ignore]
        ctypes.c_int32, wintypes.HWND, ctypes.c_ssize_t)
    user32.EnumWindows.argtypes, user32.EnumWindows.restype = [enum_proc, ctypes.c_ssize_t], ctypes.c_int32
    user32.GetWindowThreadProcessId.argtypes = [wintypes.HWND, ctypes.POINTER(ctypes.c_uint32)]
    user32.GetWindowThreadProcessId.restype = ctypes.c_uint32
    user32.IsWindowVisible.argtypes, user32.IsWindowVisible.restype = [wintypes.HWND], ctypes.c_int32
    user32.SetForegroundWindow.argtypes, user32.SetForegroundWindow.restype = [wintypes.HWND], ctypes.c_int32
    user32.keybd_event.argtypes = [ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint32, ctypes.c_size_t]
    user32.keybd_event.restype = None
    user32.SwitchToThisWindow.argtypes = [wintypes.HWND, ctypes.c_int32]
    user32.SwitchToThisWindow.restype = None
    user32.GetForegroundWindow.argtypes, user32.GetForegroundWindow.restype = [], wintypes.HWND
    found: list[int] = []

    def cb(hwnd: int | None, _l: int) -> int:
        owner = ctypes.c_uint32()
        user32.GetWindowThreadProcessId(hwnd, ctypes.byref(owner))
        if hwnd and owner.value == pid and user32.IsWindowVisible(hwnd):
            found.append(hwnd)
        return 1

    user32.EnumWindows(enum_proc(cb), 0)
    if found:
        user32.keybd_event(0x12, 0, 0, 0)  # VK_MENU down
        user32.keybd_event(0x12, 0, 2, 0)  # up
        user32.SetForegroundWindow(found[0])
        if user32.GetForegroundWindow() != found[0]:
            user32.SwitchToThisWindow(found[0], 1)  # Task Manager's "Switch to": fewer restrictions


def drive_desk(work: Path, use_excel: bool, stop: threading.Event) -> None:
    a, b = work / "alpha.txt", work / "beta.txt"
    a.write_text("alpha\n", encoding="utf-8")
    b.write_text("beta\n", encoding="utf-8")
    time.sleep(3)
    pads = []
    for f in (a, b):
        p = subprocess.Popen(["notepad.exe", str(f)])
        pads.append(p)
        time.sleep(3)
        bring_to_front(p.pid)
        time.sleep(2)
    for p in (pads[0], pads[1], pads[0]):  # switches between windows that exist
        bring_to_front(p.pid)
        time.sleep(2)
    if use_excel:
        subprocess.run(["powershell", "-NoProfile", "-Command", EXCEL_PS], check=False, timeout=60)
    stop.wait(60)
    for p in pads:
        p.terminate()


async def record(seconds: float, out_path: Path, state: Path, drive: bool, use_excel: bool) -> None:
    settings = AgentSettings(state_dir=str(state), source="windows")
    source = select_source(settings)
    recorder = make_recorder(settings, detect_identity(str(uuid.uuid4())), 0, load_privacy(settings))
    with open(out_path, "wb") as out:  # noqa: ASYNC230 - small appends; this is a test driver
        def write(events: list[Any]) -> None:
            for e in events:
                out.write(event_to_json(e) + b"\n")
            out.flush()

        write(recorder.start(datetime.now(UTC)))
        task = asyncio.create_task(source.run(lambda obs: write(recorder.observe(obs))))
        stop = threading.Event()
        driver = threading.Thread(target=drive_desk, args=(state, use_excel, stop), daemon=True)
        if drive:
            driver.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end and not task.done():
            await asyncio.sleep(1)
            write(recorder.tick(datetime.now(UTC), source.idle_ms()))
        source.stop()
        stop.set()
        await asyncio.wait_for(task, 15)  # raises when the source failed
        write(recorder.stop(datetime.now(UTC)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the agent runs (default 30)")
    parser.add_argument("--jsonl", type=Path, default=Path("windows-smoke.jsonl"), help="JSON Lines output")
    parser.add_argument("--no-drive", action="store_true", help="only record; open no window")
    args = parser.parse_args(argv)
    if sys.platform != "win32":
        print("windows_smoke: needs Windows with an interactive desktop; this is "
              f"{sys.platform!r}: nothing run", file=sys.stderr)
        return 2
    use_excel = excel_installed()
    with tempfile.TemporaryDirectory(prefix="desktrace-smoke-") as tmp:
        asyncio.run(record(args.seconds, args.jsonl, Path(tmp), not args.no_drive, use_excel))
    events = [event_from_json(line) for line in args.jsonl.read_bytes().splitlines() if line.strip()]
    types = Counter(type(e).__name__ for e in events)
    print(f"windows_smoke: {len(events)} events: {dict(sorted(types.items()))} (excel: {use_excel})")
    expected = {"AgentStart", "AgentStop"}
    if not args.no_drive:
        expected |= {"WindowOpen", "DocumentOpen", "WindowSwitch"} | ({"SheetOpen"} if use_excel else set())
        notepads = [e for e in events if type(e).__name__ == "WindowOpen" and
                    getattr(e, "app", "").lower() == "notepad.exe"]
        if len(notepads) < 2:
            print("windows_smoke: expected a WindowOpen for each of the two Notepad windows", file=sys.stderr)
            return 1
    missing = expected - set(types)
    if missing:
        print(f"windows_smoke: missing event types {sorted(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
