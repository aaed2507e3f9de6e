"""CPU time of processes read from ``/proc`` (Linux), for the benches: one parser of ``/proc/<pid>/stat``."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int, task: int | None = None) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` (or of one thread's, ``task``) after the command name, so that
    ``[0]`` is the state, ``[1]`` the parent, ``[11:13]`` user and system time, ``[13:15]`` those of
    reaped children; None once the process is gone."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_seconds(
    pid: int, task: int | None = None, *, children: bool = False, gone: float | None = None
) -> float:
    """User + system CPU seconds of a process (or of its thread ``task``); with ``children``, its reaped
    children's too. A process that is gone raises ProcessLookupError, or gives ``gone`` when set."""
    fields = stat_fields(pid, task)
    if fields is None:
        if gone is None:
            raise ProcessLookupError(pid)
        return gone
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / CLK_TCK


def parent(pid: int) -> int:
    """The parent's pid (0 once the process is gone)."""
    fields = stat_fields(pid)
    return int(fields[1]) if fields is not None else 0


def busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
