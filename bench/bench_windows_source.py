"""CPU of the Windows source, run by hand on Windows: ``python bench/bench_windows_source.py [--seconds 20]``.

Measures the process CPU time (``time.process_time``, all threads) of the real :class:`WindowsSource`
(WinEvent hooks + UI Automation thread, input hooks off) over ``--seconds``:

1. at rest: nothing changes on the desk;
2. under switching: this script brings two Notepad windows it opened to the foreground alternately,
   ``--rate`` switches per second.

Baseline measured in the same run: the design it replaced, a loop polling GetForegroundWindow +
GetWindowTextW every 0.5 s (without its UI Automation reads, so the baseline is a lower bound of the old
cost). Ratios are source / baseline. Goal: at rest well under 0.1% of a core; under switching, each switch
costs one UI Automation read.

On anything but Windows it says so and exits 2 (the hooks and UI Automation exist only there); the
platform-free desk logic can be benchmarked anywhere with ``--logic``: DeskWatcher reads per second on a
recorded Chrome tree, against a bare tree walk of the same tree.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_during(seconds: float, work: threading.Thread | None = None) -> float:
    """CPU seconds this process used during ``seconds`` of wall time (``work`` runs meanwhile)."""
    start = time.process_time()
    if work is not None:
        work.start()
    time.sleep(seconds)
    if work is not None:
        work.join()
    return time.process_time() - start


def polling_baseline(seconds: float) -> float:
    from agent.sources.win32 import Win32

    api = Win32()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.5):
            hwnd = api.foreground()
            if hwnd:
                api.window_text(hwnd)

    t = threading.Thread(target=loop, daemon=True)
    start = time.process_time()
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    return time.process_time() - start


def source_cpu(seconds: float, rate: float) -> tuple[float, float, int]:
    """(CPU at rest, CPU under switching, snapshots seen) of the real source."""
    from agent.sources.windows import WindowsSource
    from scripts.windows_smoke import bring_to_front

    seen = [0]
    source = WindowsSource(input_listeners=lambda on_input: [])
    loop = asyncio.new_event_loop()
    runner = threading.Thread(
        target=lambda: loop.run_until_complete(source.run(lambda obs: seen.__setitem__(0, seen[0] + 1))),
        daemon=True,
    )
    runner.start()
    time.sleep(3)  # start-up: the initial window list, the first read
    rest = cpu_during(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"{n}.txt" for n in ("a", "b")]
        for f in files:
            f.write_text(f.stem, encoding="utf-8")
        pads = [subprocess.Popen(["notepad.exe", str(f)]) for f in files]
        time.sleep(3)

        def switch() -> None:
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                bring_to_front(pads[i % 2].pid)
                i += 1
                time.sleep(1 / rate)

        busy = cpu_during(seconds, threading.Thread(target=switch))
        for p in pads:
            p.terminate()
    loop.call_soon_threadsafe(source.stop)
    runner.join(15)
    return rest, busy, seen[0]


def logic_bench(n: int) -> None:
    from agent.sources import win32 as w
    from agent.sources.windesk import DeskWatcher
    from agent.sources.winhooks import HookEvent
    from tests.test_windows_desk import Desk, browser
    from tests.windows_trees import all_nodes

    desk = Desk()
    win, _strip, _omni = browser(*((f"Tab {i}", i == 0) for i in range(30)))
    hwnd = desk.add(0x1_0000_0100, "chrome.exe", win)
    watcher = DeskWatcher(desk, desk.initial())
    ts = datetime.now(UTC)
    watcher.start(hwnd, ts, 0.0)
    t0 = time.perf_counter()
    for i in range(n):
        watcher.handle(HookEvent(w.EVENT_SYSTEM_FOREGROUND, hwnd), ts, float(i))
    per_read = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        all_nodes(win)
    per_walk = (time.perf_counter() - t0) / n
    print(f"desk logic: {per_read * 1e6:.1f} us per foreground read of a 30-tab Chrome tree; "
          f"baseline (bare walk of the tree): {per_walk * 1e6:.1f} us; ratio {per_read / per_walk:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU of the Windows source (see the module docstring)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    parser.add_argument("--rate", type=float, default=2.0, help="foreground switches per second (default 2)")
    parser.add_argument("--logic", action="store_true", help="benchmark the platform-free desk logic only")
    parser.add_argument("--reads", type=int, default=2000, help="--logic: reads to time (default 2000)")
    args = parser.parse_args()
    if args.logic:
        logic_bench(args.reads)
        return 0
    if sys.platform != "win32":
        print(f"bench_windows_source: needs Windows (this is {sys.platform!r}); nothing measured. "
              "The platform-free logic: --logic", file=sys.stderr)
        return 2
    base = polling_baseline(args.seconds)
    rest, busy, seen = source_cpu(args.seconds, args.rate)
    pct = 100 / args.seconds
    print(f"baseline (0.5 s foreground poll, no UIA): {base * pct:.3f}% of a core")
    print(f"source at rest: {rest * pct:.3f}% of a core (ratio {rest / base if base else float('inf'):.2f})")
    print(f"source under {args.rate:g} switches/s: {busy * pct:.3f}% of a core "
          f"(ratio {busy / base if base else float('inf'):.2f}); {seen} snapshots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
