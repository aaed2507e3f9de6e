"""Pure parts of task mining: trace cutting at local midnight, XML escaping, the XES/OCEL writers, the DFG and
the recurring-task miner. No database (the end-to-end checks are in test_mining_db.py)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reports import export, flow, tasks
from reports.export import MiningEvent, Trace

T0 = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)


def ev(app: str, s: float, user: str = "corp\\u", **kw: Any) -> MiningEvent:
    return MiningEvent(
        user_key=user,
        ts=T0 + timedelta(seconds=s),
        type=kw.get("type", "WindowSwitch"),
        app=app,
        title=kw.get("title", ""),
        url_domain=kw.get("url_domain", ""),
        url=kw.get("url"),
        document=kw.get("document", ""),
        sheet=kw.get("sheet", ""),
        host="pc",
        event_id=f"a:{s}",
    )


def row(user: str, ts: datetime, tz: str, app: str = "X") -> dict[str, Any]:
    return {
        "user_key": user,
        "ts": ts,
        "type": "WindowSwitch",
        "tz": tz,
        "app": app,
        "url_domain": "",
        "title": "",
        "file_path": "",
        "sheet": "",
        "url": None,
        "host": "pc",
        "agent_id": "a",
        "seq": 1,
    }


def test_traces_cut_at_local_midnight_of_the_events_zone() -> None:
    ny = "America/New_York"
    rows = [
        row("corp\\a", datetime(2026, 3, 8, 4, 59, tzinfo=UTC), ny),  # 03-07 23:59 EST
        row("corp\\a", datetime(2026, 3, 8, 5, 0, tzinfo=UTC), ny),  # 03-08 00:00 EST (a 23 h day)
        row("corp\\a", datetime(2026, 3, 9, 3, 59, tzinfo=UTC), ny),  # 03-08 23:59 EDT
        row("corp\\a", datetime(2026, 3, 9, 4, 0, tzinfo=UTC), ny),  # 03-09 00:00 EDT: out of range
        row("corp\\b", datetime(2026, 3, 8, 4, 59, tzinfo=UTC), "Bogus/Zone"),  # unknown zone: UTC, 03-08
    ]
    got = [(t.name, len(t.events)) for t in export.traces_of(rows, date(2026, 3, 7), date(2026, 3, 8))]
    assert got == [("corp\\a/2026-03-07", 1), ("corp\\a/2026-03-08", 2), ("corp\\b/2026-03-08", 1)]


def test_a_zone_change_never_moves_a_trace_back_in_time() -> None:
    rows = [
        row("corp\\a", datetime(2026, 6, 1, 22, 30, tzinfo=UTC), "Europe/Berlin"),  # 06-02 00:30 local
        row("corp\\a", datetime(2026, 6, 1, 23, 0, tzinfo=UTC), "America/New_York"),  # 06-01 19:00 local
        row("corp\\a", datetime(2026, 6, 2, 12, 0, tzinfo=UTC), "America/New_York"),  # 06-02 08:00 local
    ]
    got = [(t.name, len(t.events)) for t in export.traces_of(rows, date(2026, 6, 1), date(2026, 6, 2))]
    assert got == [("corp\\a/2026-06-02", 3)]  # unique names, nothing lost


@given(st.text())
def test_xml_attr_always_parses_back(text: str) -> None:
    doc = f'<a v="{export.xml_attr(text)}"/>'
    value = ET.fromstring(doc.encode("utf-8", "surrogatepass")).get("v")
    assert value == export._ILLEGAL.sub("\ufffd", text)


def test_file_name_strips_windows_and_posix_directories() -> None:
    assert export.file_name("C:\\Users\\a\\Budget.xlsx") == "Budget.xlsx"
    assert export.file_name("/home/a/notes.txt") == "notes.txt"
    assert export.file_name("plain.docx") == "plain.docx"
    assert export.file_name("") == ""


def _xes(traces: list[Trace]) -> str:
    buf = io.StringIO()
    w = export.XesWriter(buf)
    w.begin()
    for t in traces:
        w.trace(t)
    w.end()
    return buf.getvalue()


def test_xes_writer_is_well_formed_and_omits_empty_and_hidden_fields() -> None:
    t = Trace(
        "corp\\<x>", date(2026, 5, 4), [ev("A&B", 0, title="t\x00\x1f", url_domain="d.example"), ev("C", 5)]
    )
    text = _xes([t])
    root = ET.fromstring(text)
    ns = "{http://www.xes-standard.org/}"
    (trace,) = root.iter(f"{ns}trace")
    evs = [{a.get("key"): a.get("value") for a in e} for e in trace.iter(f"{ns}event")]
    assert evs[0]["concept:name"] == "A&B" and evs[0]["title"] == "t\ufffd\ufffd"
    assert evs[0]["org:resource"] == "corp\\<x>"
    assert "url" not in evs[0] and "title" not in evs[1]
    assert evs[1]["time:timestamp"] == "2026-05-04T07:00:05.000+00:00"


def test_ocel_writer_objects_once_and_valid_json() -> None:
    buf = io.StringIO()
    w = export.OcelWriter(buf)
    w.begin()
    w.trace(
        Trace(
            "corp\\u",
            date(2026, 5, 4),
            [ev("Excel", 0, document="B.xlsx"), ev("Excel", 1, document="B.xlsx")],
        )
    )
    w.trace(Trace("corp\\v", date(2026, 5, 4), []))
    w.end()
    doc = json.loads(buf.getvalue())
    assert sorted(o["id"] for o in doc["objects"]) == [
        "application:Excel",
        "document:B.xlsx",
        "user:corp\\u",
        "user:corp\\v",
    ]
    assert len(doc["events"]) == 2 and doc["eventTypes"][0]["name"] == "WindowSwitch"


def test_dfg_counts_self_loops_starts_ends_and_medians() -> None:
    traces = [
        Trace("corp\\u", date(2026, 5, 4), [ev("A", 0), ev("B", 10), ev("B", 12), ev("A", 100)]),
        Trace("corp\\u", date(2026, 5, 5), [ev("A", 0), ev("B", 20)]),
        Trace("corp\\v", date(2026, 5, 5), [ev("C", 0)]),
    ]
    g = flow.discover(traces)
    assert {(e.src, e.dst): (e.count, e.median_s) for e in g.edges} == {
        ("A", "B"): (2, 15.0),
        ("B", "B"): (1, 2.0),
        ("B", "A"): (1, 88.0),
    }
    assert g.start == {"A": 2, "C": 1} and g.end == {"A": 1, "B": 1, "C": 1}
    assert (g.traces, g.events) == (3, 7)
    assert json.loads(flow.to_json(g))["edges"][0] == {"from": "A", "to": "B", "count": 2, "median_s": 15.0}


def test_window_level_activity() -> None:
    assert flow.window_activity(ev("Chrome", 0, url_domain="a.example", title="T")) == "Chrome · a.example"
    assert flow.window_activity(ev("Excel", 0, document="B.xlsx", sheet="Q1")) == "Excel · B.xlsx"
    assert flow.window_activity(ev("Excel", 0, sheet="Q1")) == "Excel · Q1"
    assert flow.window_activity(ev("Term", 0, title="bash")) == "Term · bash"
    assert flow.window_activity(ev("Term", 0)) == "Term"
    with pytest.raises(ValueError):
        flow.activity_of("pixel")


def test_dot_quotes_names() -> None:
    g = flow.discover([Trace("corp\\u", date(2026, 5, 4), [ev('say "hi"\\', 0), ev("B", 1)])])
    dot = flow.to_dot(g)
    assert '"say \\"hi\\"\\\\ (1)"' in dot


# Outlook, Excel, Chrome repeated: the worked example of docs/mining.md.
WORK = [
    ("Outlook", 0),
    ("Excel", 30),
    ("Excel", 90),
    ("Chrome", 120),
    ("Outlook", 240),
    ("Excel", 300),
    ("Chrome", 330),
    ("Outlook", 390),
]


def test_tasks_closed_sequences_non_overlapping() -> None:
    t = Trace("corp\\u", date(2026, 5, 4), [ev(a, s) for a, s in WORK])
    rows = tasks.recurring_tasks([t], gap_s=300)
    assert [(r.steps, r.count, r.users, r.median_s, r.total_s) for r in rows] == [
        (["Outlook", "Excel", "Chrome"], 2, 1, 195.0, 390.0),
        (["Excel", "Chrome", "Outlook"], 2, 1, 180.0, 360.0),
    ]


def test_tasks_split_at_idle_gaps_and_count_users() -> None:
    # Two users each do A B C twice, separated by a pause longer than G: the pause is never inside a task.
    traces = []
    for user in ("corp\\u", "corp\\v"):
        evs = [ev(a, s, user) for a, s in (("A", 0), ("B", 10), ("C", 20))]
        evs += [ev(a, s + 1000, user) for a, s in (("A", 0), ("B", 10), ("C", 20))]
        traces.append(Trace(user, date(2026, 5, 4), evs))
    rows = tasks.recurring_tasks(traces, gap_s=300)
    assert [(r.steps, r.count, r.users, r.median_s) for r in rows] == [(["A", "B", "C"], 4, 2, 20.0)]
    assert rows[0].total_s == 80.0
    # With G above the pause, each user's two runs join: A B C A B C recurs too, and A B C (4 times, more
    # often than the longer one) stays; their sub-sequences (A B, B C A, ...) are suppressed.
    joined = tasks.recurring_tasks(traces, gap_s=2000)
    assert sorted((r.steps, r.count) for r in joined) == [
        (["A", "B", "C"], 4),
        (["A", "B", "C", "A", "B", "C"], 2),
    ]


def test_tasks_bounds_and_repeats() -> None:
    # A B repeated 10 times in one segment: with max_len 8, A B A B A B A B occurs once without overlap.
    evs = [ev("A" if i % 2 == 0 else "B", i * 5) for i in range(20)]
    rows = tasks.recurring_tasks([Trace("corp\\u", date(2026, 5, 4), evs)], top=50, sort="count")
    assert all(2 <= len(r.steps) <= 8 for r in rows)
    by_steps = {tuple(r.steps): r.count for r in rows}
    assert by_steps[("A", "B")] == 10
    with pytest.raises(ValueError):
        tasks.TaskMiner(0)
    with pytest.raises(ValueError):
        tasks.mine([], [], min_len=1)


def test_progress_bar_on_a_terminal_plain_lines_otherwise() -> None:
    from reports.mining_cli import Progress

    tty = io.StringIO()
    p = Progress(tty, total=200, tty=True)
    p(100)
    assert tty.getvalue().startswith("\r[###############               ]  50.0% 100/200 events")
    p.done(export.ExportStats(traces=3, events=200))
    assert tty.getvalue().endswith(" events/s)\n") and "\nexport: 3 traces, 200 events in " in tty.getvalue()
    plain = io.StringIO()
    q = Progress(plain, total=None, tty=False, every_s=0.0)
    q(5000)
    assert plain.getvalue().startswith("export: 5000 events read, ") and "\r" not in plain.getvalue()


def test_team_members_read_the_shared_team_file(tmp_path: Any) -> None:
    """``--team`` reads the one team file of the reports and the gateway (TOML or JSON, roles allowed)."""
    from reports.mining_cli import MiningError, team_members

    f = tmp_path / "teams.toml"
    f.write_text(
        '[teams]\nops = ["CORP\\\\Bob", "corp\\\\carol"]\nfin = ["corp\\\\a"]\n'
        '[roles.olga]\nrole = "lead"\nteams = ["ops"]\n'
    )
    assert team_members("ops", str(f)) == ["corp\\bob", "corp\\carol"]
    assert team_members("fin", str(f)) == ["corp\\a"]
    j = tmp_path / "teams.json"
    j.write_text('{"teams": {"ops": ["corp\\\\dave"]}}')
    assert team_members("ops", str(j)) == ["corp\\dave"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[teams]\nops = "corp\\\\x"\n')
    for name, file, msg in (
        ("ops", "", "DESKTRACE_TEAMS_FILE"),
        ("ops", str(tmp_path / "none.toml"), "cannot read"),
        ("nope", str(f), r"teams: fin, ops\)"),
        ("ops", str(bad), "bad.toml"),
    ):
        with pytest.raises(MiningError, match=msg):
            team_members(name, file)


def test_no_separate_mining_team_setting() -> None:
    """The mining subcommands have no setting of their own for teams: only ``teams_file``."""
    from reports.cli import build_parser

    period = ["flow", "--from", "2026-03-28", "--to", "2026-03-28"]
    args = build_parser().parse_args([*period, "--teams-file", "t"])
    assert args.teams_file == "t" and not hasattr(args, "team_file")
    with pytest.raises(SystemExit):
        build_parser().parse_args([*period, "--team-file", "t"])


def test_tasks_render_formats() -> None:
    from reports.mining_cli import tasks_render

    rows = [tasks.TaskRow(steps=["Outlook", "Excel"], count=3, users=2, median_s=61.0, total_s=3725.0)]
    assert tasks_render(rows, "csv") == "steps,count,users,median_s,total_s\nOutlook > Excel,3,2,61.0,3725.0"
    assert json.loads(tasks_render(rows, "json"))[0]["steps"] == ["Outlook", "Excel"]
    table = tasks_render(rows, "table").splitlines()
    assert table[1].split() == ["3", "2", "0:01:01", "1:02:05", "Outlook", ">", "Excel"]
    assert tasks_render([], "table") == "no recurring sequence in this period"
