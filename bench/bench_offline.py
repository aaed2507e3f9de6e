"""``desktrace-sessionize`` against a bare read + decode of the same JSON Lines file, whole processes, in one
run (run by hand: ``nice .venv/bin/python bench/bench_offline.py``).

For each file size (``--days``: the same users over 1 day, then over several days, so only the file's
length changes), prints the wall time and peak RSS of

- the baseline: a fresh Python process that reads the file line by line and decodes every line with the
  same msgspec JSON decoder (``proto.codec.read_jsonl``), keeping nothing;
- the subject: the ``desktrace-sessionize`` console script on the same file, output to ``/dev/null``, once
  per ``--jobs`` value (by default 1, then 0 = one job per CPU);

and their ratios (target: time <= 4x the baseline; peak memory independent of the file's length: compare
a file longer than the 3-day retention horizon with one twice as long, e.g. ``--days 1 4 8``). The
events are the users of ``tests.support.events.generate_events``, with about 10% of each user's events
displaced by up to a few minutes (out of order) and 5% duplicates. Files are cached in ``--dir``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proto import events as E
from tests.support.events import generate_events
from tests.support.process import BIN
from tests.support.stream import write_jsonl

_MEASURE = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(dt, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, rc)
"""

_BARE = r"""
import sys
from proto.codec import read_jsonl
n = 0
with open(sys.argv[1], "rb") as f:
    for _, item in read_jsonl(f):
        n += 1
"""


def disorder(events: list[E.Envelope], rng: random.Random, ratio: float = 0.1) -> list[E.Envelope]:
    """The events in time order, except that about ``ratio`` of them arrive up to 300 positions late,
    and 5% are sent twice."""
    keyed = [(i + (rng.randint(1, 300) if rng.random() < ratio else 0), i, e) for i, e in enumerate(events)]
    keyed += [(i + rng.randint(1, 3000), -i, e) for i, e in enumerate(events) if rng.random() < 0.05]
    keyed.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in keyed]


def make_file(directory: Path, users: int, hours: float, days: int) -> tuple[Path, int]:
    path = directory / f"offline-{users}u-{hours:g}h-{days}d.jsonl"
    if path.exists():
        return path, sum(1 for _ in path.open("rb"))
    rng = random.Random(5)
    events: list[E.Envelope] = []
    for d in range(days):
        start = datetime(2026, 3, 2, 7, 30, tzinfo=UTC) + timedelta(days=d)
        events += generate_events(seed=100 + d, users=users, hours=hours, start=start)
    events.sort(key=lambda e: e.ts)
    events = disorder(events, rng)
    write_jsonl(events, path)
    return path, len(events)


def measure(cmd: list[str]) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds, peak RSS (MiB) and exit status of ``cmd`` as a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    dt, cpu, rss, rc = out.stdout.split()
    return float(dt), float(cpu), int(rss) / 1024, int(rc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=433)
    p.add_argument("--hours", type=float, default=6.0, help="hours of activity per user-day")
    p.add_argument("--days", type=int, nargs="+", default=[1, 4], help="file lengths to compare, in days")
    p.add_argument("--repeat", type=int, default=2, help="pairs per file (the best of each side is kept)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/desktrace-bench-offline"))
    p.add_argument("--retention", type=float, help="passed to desktrace-sessionize (seconds)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 0],
                   help="--jobs values to run the tool with (0: all CPUs; the first one's peak RSS is "
                   "compared across file lengths: with several jobs it is the largest job's)")
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    tool = str(BIN / "desktrace-sessionize")
    rows = []
    for days in a.days:
        path, n = make_file(a.dir, a.users, a.hours, days)
        extra = ["--retention", str(a.retention)] if a.retention else []
        base = [float("inf"), float("inf"), 0.0]  # wall, CPU, peak MiB
        tools = {jobs: [float("inf"), float("inf"), 0.0] for jobs in a.jobs}
        for _ in range(a.repeat):  # alternate, so every side sees the same load
            t, c, m, _rc = measure([sys.executable, "-c", _BARE, str(path)])
            base = [min(base[0], t), min(base[1], c), max(base[2], m)]
            for jobs, best in tools.items():
                t, c, m, rc = measure([tool, "--jobs", str(jobs), *extra, str(path)])
                if rc not in (0, 1):
                    raise SystemExit(f"desktrace-sessionize failed with {rc}")
                tools[jobs] = [min(best[0], t), min(best[1], c), max(best[2], m)]
        print(
            f"{a.users} users x {days} day(s), {n:,} events: bare read+decode {base[0]:6.2f}s "
            f"({base[1]:.2f}s CPU) {base[2]:6.1f} MiB",
            flush=True,
        )
        for jobs, (t, c, m) in tools.items():
            print(
                f"  desktrace-sessionize --jobs {jobs}{' (all CPUs)' if jobs == 0 else ''}: {t:6.2f}s "
                f"({c:.2f}s CPU) {m:6.1f} MiB | ratio wall {t / base[0]:.2f}x, CPU {c / base[1]:.2f}x",
                flush=True,
            )
        rows.append((days, n, tools[a.jobs[0]][2]))
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"peak RSS of --jobs {a.jobs[0]}: {last[2]:.1f} MiB for {last[1]:,} events vs {first[2]:.1f} MiB "
            f"for {first[1]:,} (x{last[2] / first[2]:.2f} for x{last[1] / first[1]:.2f} the events)"
        )

if __name__ == "__main__":
    main()
