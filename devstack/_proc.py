"""Process helpers shared by the Kafka and PostgreSQL launchers: pid files, liveness, stopping, progress."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Called with one line of human progress; the default writes it to stderr.
Progress = Callable[[str], None]


class DevstackError(RuntimeError):
    """A local service cannot be set up or started; the message says what is missing and how to fix it."""


def stderr_progress(line: str) -> None:
    print(f"desktrace-local: {line}", file=sys.stderr, flush=True)


def quiet(_line: str) -> None:
    """A :data:`Progress` that says nothing."""


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").split("\n", 1)[0].strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    """The state letter of ``/proc/PID/stat`` (``Z`` for a zombie), or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie. Reaps it when it is an exited child of ours."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        return False
    state = _proc_state(pid)
    if state is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def live_pid(pid_file: Path, *markers: str) -> int | None:
    """The pid in ``pid_file`` when that process runs and its command line (when readable) holds every one
    of ``markers``; None for a missing or stale pid file (the process gone, or its pid reused)."""
    pid = read_pid(pid_file)
    if pid is None or not pid_alive(pid):
        return None
    cmd = cmdline(pid)
    if cmd and not all(m in cmd for m in markers):
        return None
    return pid


def terminate(pid: int, timeout: float, group: bool = True, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` (to the process group when ``group``), wait up to ``timeout`` s, then SIGKILL.
    Returns True when the process stopped within the timeout (False when it had to be killed)."""

    def send(s: int) -> None:
        try:
            if group:
                os.killpg(pid, s)
            else:
                os.kill(pid, s)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, s)

    send(sig)
    if wait_gone(pid, timeout):
        return True
    send(signal.SIGKILL)
    wait_gone(pid, 10.0)
    return False


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return True


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, also when an event loop is already running in
    this thread (then in a helper thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="devstack-sync", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class Ticker:
    """Emits 'still waiting' progress at most every ``every`` seconds."""

    def __init__(self, progress: Progress, what: str, every: float = 5.0) -> None:
        self.progress = progress
        self.what = what
        self.every = every
        self.t0 = time.monotonic()
        self.last = self.t0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.progress(f"waiting for {self.what} ({now - self.t0:.0f}s)")
