"""Directly-follows graph (DFG) of the exported traces. Pure: traces in, graph out; rendering at the end.

An edge ``A -> B`` counts every pair of consecutive events of one trace (:mod:`reports.export`) whose
activities are ``A`` then ``B`` (self-loops included, as in pm4py's DFG); its ``median_s`` is the median of
the seconds between the two events. ``start``/``end`` count the first/last activity of each trace. This is
exactly what ``pm4py.discover_dfg`` returns for the XES export (a test compares them).

Activity levels: ``app`` = the application name; ``window`` = application plus what the window shows: the
URL domain for a browser page, else the document's file name, else the sheet, else the window title.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reports.export import MiningEvent, Trace

LEVELS = ("app", "window")
FORMATS = ("json", "table", "dot", "svg")


def app_activity(e: MiningEvent) -> str:
    return e.app


def window_activity(e: MiningEvent) -> str:
    what = e.url_domain or e.document or e.sheet or e.title
    return f"{e.app} · {what}" if what else e.app


def activity_of(level: str) -> Callable[[MiningEvent], str]:
    """The activity function of ``level`` (``app`` or ``window``)."""
    if level == "app":
        return app_activity
    if level == "window":
        return window_activity
    raise ValueError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")


@dataclass(slots=True)
class Edge:
    """One directly-follows relation: ``count`` pairs, ``median_s`` seconds between them (milliseconds)."""

    src: str
    dst: str
    count: int
    median_s: float


@dataclass(slots=True)
class Dfg:
    """A directly-follows graph. ``edges`` sorted by count (largest first), then names."""

    edges: list[Edge] = field(default_factory=list)
    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    activities: dict[str, int] = field(default_factory=dict)
    traces: int = 0
    events: int = 0

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of ``desktrace-report flow --format json``."""
        return {
            "edges": [
                {"from": e.src, "to": e.dst, "count": e.count, "median_s": e.median_s} for e in self.edges
            ],
            "start": self.start,
            "end": self.end,
        }


class DfgBuilder:
    """Accumulates traces into a :class:`Dfg`. Memory: the distinct edges plus 8 bytes per event pair (the
    gaps, kept for the exact median)."""

    def __init__(self, level: str = "app") -> None:
        self.activity = activity_of(level)
        self._gaps: dict[tuple[str, str], array[int]] = {}
        self._start: dict[str, int] = {}
        self._end: dict[str, int] = {}
        self._acts: dict[str, int] = {}
        self.traces = 0
        self.events = 0

    def add(self, t: Trace) -> None:
        if not t.events:
            return
        self.traces += 1
        prev_act = ""
        prev_ms = 0
        for i, e in enumerate(t.events):
            act = self.activity(e)
            ms = round(e.ts.timestamp() * 1000)
            self._acts[act] = self._acts.get(act, 0) + 1
            if i == 0:
                self._start[act] = self._start.get(act, 0) + 1
            else:
                key = (prev_act, act)
                gaps = self._gaps.get(key)
                if gaps is None:
                    gaps = self._gaps[key] = array("q")
                gaps.append(ms - prev_ms)
            prev_act, prev_ms = act, ms
        self._end[prev_act] = self._end.get(prev_act, 0) + 1
        self.events += len(t.events)

    def result(self) -> Dfg:
        edges = [
            Edge(a, b, len(g), round(statistics.median(g) / 1000, 3)) for (a, b), g in self._gaps.items()
        ]
        edges.sort(key=lambda e: (-e.count, e.src, e.dst))
        by_count = lambda d: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))  # noqa: E731
        return Dfg(
            edges=edges,
            start=by_count(self._start),
            end=by_count(self._end),
            activities=by_count(self._acts),
            traces=self.traces,
            events=self.events,
        )


def discover(traces: Iterable[Trace], level: str = "app") -> Dfg:
    """The DFG of ``traces`` at ``level``."""
    b = DfgBuilder(level)
    for t in traces:
        b.add(t)
    return b.result()


# ---- rendering ---------------------------------------------------------------------------------------------


def to_json(g: Dfg) -> str:
    return json.dumps(g.to_dict(), ensure_ascii=False, indent=2)


def to_table(g: Dfg) -> str:
    """Plain text: one line per edge, then start and end counts."""
    if not g.edges and not g.start:
        return "no UI events in this period"
    w = max([len(e.src) for e in g.edges] + [4])
    lines = [f"{'FROM':<{w}}  {'COUNT':>7}  {'MEDIAN_S':>9}  TO"]
    for e in g.edges:
        lines.append(f"{e.src:<{w}}  {e.count:>7}  {e.median_s:>9.1f}  {e.dst}")
    lines.append("")
    lines.append("START: " + ", ".join(f"{a} ({n})" for a, n in g.start.items()))
    lines.append("END:   " + ", ".join(f"{a} ({n})" for a, n in g.end.items()))
    lines.append(f"{g.traces} traces, {g.events} events")
    return "\n".join(lines)


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"


def to_dot(g: Dfg, max_edges: int = 80) -> str:
    """Graphviz ``dot`` source: activities as boxes (with their event counts), edges labelled with count
    and median time, pen width growing with the count; the ``max_edges`` most frequent edges only."""
    edges = g.edges[:max_edges]
    top = max((e.count for e in edges), default=1)
    used = {e.src for e in edges} | {e.dst for e in edges} | set(g.start) | set(g.end)
    out = [
        "digraph dfg {",
        '  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="sans-serif"];',
        '  edge [fontname="sans-serif", fontsize=10];',
        '  "__start__" [label="", shape=circle, width=0.25, fillcolor="#3a7d44"];',
        '  "__end__" [label="", shape=doublecircle, width=0.2, fillcolor="#b03a2e"];',
    ]
    ids = {a: f"a{i}" for i, a in enumerate(sorted(used))}
    for a, i in ids.items():
        out.append(f"  {i} [label={_dot_str(f'{a} ({g.activities.get(a, 0)})')}];")
    for a, n in g.start.items():
        out.append(f'  "__start__" -> {ids[a]} [label="{n}", style=dashed];')
    for a, n in g.end.items():
        out.append(f'  {ids[a]} -> "__end__" [label="{n}", style=dashed];')
    for e in edges:
        width = 1 + 4 * e.count / top
        label = f"{e.count} · {_duration(e.median_s)}"
        out.append(f'  {ids[e.src]} -> {ids[e.dst]} [label="{label}", penwidth={width:.2f}];')
    out.append("}")
    return "\n".join(out) + "\n"


class GraphvizMissing(RuntimeError):
    """``dot`` is not installed (Debian package ``graphviz``)."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def to_svg(g: Dfg, timeout: float = 60.0) -> str:
    """The DFG drawn by Graphviz (``dot -Tsvg``); raises :class:`GraphvizMissing` without ``dot``."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizMissing("Graphviz 'dot' is not installed (apt-get install graphviz)")
    done = subprocess.run(
        [exe, "-Tsvg"], input=to_dot(g).encode("utf-8"), capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode('utf-8', 'replace')[:500]}")
    return done.stdout.decode("utf-8")


def render(g: Dfg, fmt: str) -> str:
    if fmt == "json":
        return to_json(g)
    if fmt == "table":
        return to_table(g)
    if fmt == "dot":
        return to_dot(g)
    if fmt == "svg":
        return to_svg(g)
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
