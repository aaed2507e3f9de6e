"""Task mining against a real PostgreSQL: ``desktrace-report export|flow|tasks`` (subprocesses) over events
written by the raw sink's writer, checked against a hand-built log with a known graph and against pm4py."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from tests.mining_fixture import (
    ALICE,
    ALICE_29_EDGES,
    BOB,
    EXPECTED_TRACES,
    FULL_URL,
    NASTY_TITLE,
    load_fixture,
)

pytestmark = pytest.mark.postgres

REPORT = str(Path(sys.executable).parent / "desktrace-report")
XES_NS = "{http://www.xes-standard.org/}"


def run_report(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
    full.update({"DESKTRACE_PG_DSN": dsn, **env})
    return subprocess.run([REPORT, *args], env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture
def db(fresh_pg_dsn: str) -> str:
    asyncio.run(load_fixture(fresh_pg_dsn))
    return fresh_pg_dsn


def export(db: str, tmp_path: Path, fmt: str = "xes", *extra: str, **env: str) -> Path:
    out = tmp_path / f"log.{fmt}"
    done = run_report(
        db,
        "export",
        "--format",
        fmt,
        "--from",
        "2026-03-28",
        "--to",
        "2026-03-29",
        "--out",
        str(out),
        *extra,
        **env,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^export: \d+ traces, \d+ events in ", done.stderr, re.M), done.stderr
    return out


def xes_traces(path: Path) -> dict[str, list[dict[str, str]]]:
    """The traces of an XES file read with the standard library's XML parser: name -> event attributes."""
    root = ET.parse(path).getroot()
    out: dict[str, list[dict[str, str]]] = {}
    for tr in root.iter(f"{XES_NS}trace"):
        name = next(
            a.get("value") for a in tr if a.tag != f"{XES_NS}event" and a.get("key") == "concept:name"
        )
        assert name is not None
        out[name] = [{a.get("key", ""): a.get("value", "") for a in ev} for ev in tr.iter(f"{XES_NS}event")]
    return out


def test_export_xes_traces_events_and_attributes(db: str, tmp_path: Path) -> None:
    path = export(db, tmp_path)
    traces = xes_traces(path)
    assert {k: [e["concept:name"] for e in v] for k, v in traces.items()} == EXPECTED_TRACES
    alice29 = traces[f"{ALICE}/2026-03-29"]
    # Time order, UTC timestamps with milliseconds; the first event is 00:30 local on 03-29 (23:30 UTC 03-28).
    assert alice29[0]["time:timestamp"] == "2026-03-28T23:30:00.000+00:00"
    assert [e["time:timestamp"] for e in alice29] == sorted(e["time:timestamp"] for e in alice29)
    assert {e["org:resource"] for e in alice29} == {ALICE}
    excel = alice29[2]
    assert excel["event_type"] == "WindowSwitch"
    assert excel["document"] == "Budget.xlsx"  # the file name, never its directory
    assert excel["sheet"] == "Q1"
    # The title survives XML escaping; characters XML 1.0 forbids become U+FFFD, tab and newline stay.
    assert excel["title"] == NASTY_TITLE.replace("\x07", "\ufffd").replace("\x1b", "\ufffd")
    assert alice29[3]["event_type"] == "WindowUpdate" and alice29[3]["sheet"] == "Q2"
    chrome = alice29[4]
    assert chrome["url_domain"] == "intranet.example.com"
    # Privacy: by default no full URL leaves the database, and no path of it either.
    assert "url" not in chrome
    assert "/hr/people" not in path.read_text(encoding="utf-8")
    bob = traces[f"{BOB}/2026-03-28"]
    assert [e["event_type"] for e in bob] == ["WindowOpen", "DocumentSave", "WindowSwitch"]
    assert bob[0]["document"] == "Contract 2026-17.docx"


def test_export_full_urls_only_with_reports_show_urls(db: str, tmp_path: Path) -> None:
    path = export(db, tmp_path, "xes", "--user", ALICE, DESKTRACE_REPORTS_SHOW_URLS="true")
    traces = xes_traces(path)
    assert set(traces) == {f"{ALICE}/2026-03-28", f"{ALICE}/2026-03-29"}
    assert traces[f"{ALICE}/2026-03-29"][4]["url"] == FULL_URL
    ocel = export(db, tmp_path, "ocel")
    assert "/hr/people" not in ocel.read_text(encoding="utf-8")


def test_export_loads_in_pm4py_with_the_same_counts(db: str, tmp_path: Path) -> None:
    import pm4py

    path = export(db, tmp_path)
    df = pm4py.read_xes(str(path))
    assert len(df) == sum(len(v) for v in EXPECTED_TRACES.values())
    assert df["case:concept:name"].nunique() == len(EXPECTED_TRACES)
    per_case = df.groupby("case:concept:name")["concept:name"].apply(list).to_dict()
    assert per_case == EXPECTED_TRACES
    assert set(df["org:resource"]) == {ALICE, BOB}
    variants = pm4py.get_variants(df)
    assert sum(variants.values()) == 3


def test_flow_json_known_graph(db: str) -> None:
    done = run_report(
        db, "flow", "--from", "2026-03-29", "--to", "2026-03-29", "--user", ALICE, "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    g = json.loads(done.stdout)
    assert set(g) == {"edges", "start", "end"}
    assert {(e["from"], e["to"]): (e["count"], e["median_s"]) for e in g["edges"]} == ALICE_29_EDGES
    assert g["start"] == {"Chrome": 1}
    assert g["end"] == {"Outlook": 1}
    # Edges come most frequent first.
    assert [e["count"] for e in g["edges"]] == sorted((e["count"] for e in g["edges"]), reverse=True)


def test_flow_equals_pm4py_dfg_of_the_export(db: str, tmp_path: Path) -> None:
    import pm4py

    path = export(db, tmp_path)
    df = pm4py.read_xes(str(path))
    dfg, start, end = pm4py.discover_dfg(df)
    perf, _, _ = pm4py.discover_performance_dfg(df)
    done = run_report(db, "flow", "--from", "2026-03-28", "--to", "2026-03-29", "--format", "json")
    assert done.returncode == 0, done.stderr
    g = json.loads(done.stdout)
    ours = {(e["from"], e["to"]): e["count"] for e in g["edges"]}
    assert ours == dict(dfg)
    assert g["start"] == dict(start)
    assert g["end"] == dict(end)
    for e in g["edges"]:
        assert e["median_s"] == pytest.approx(perf[(e["from"], e["to"])]["median"], abs=0.001)
    # Bob's Word -> Word and Word -> Outlook come from his trace only.
    assert ours[("Word", "Word")] == 1 and ours[("Word", "Outlook")] == 1


def test_flow_window_level_table_dot_and_svg(db: str) -> None:
    args = ("flow", "--from", "2026-03-29", "--to", "2026-03-29", "--user", ALICE)
    win = run_report(db, *args, "--level", "window", "--format", "json")
    assert win.returncode == 0, win.stderr
    edges = {(e["from"], e["to"]): e["count"] for e in json.loads(win.stdout)["edges"]}
    assert edges[("Outlook · Inbox", "Excel · Budget.xlsx")] == 2
    assert edges[("Excel · Budget.xlsx", "Chrome · intranet.example.com")] == 2
    table = run_report(db, *args, "--format", "table")
    assert table.returncode == 0 and "Chrome" in table.stdout and "START: Chrome (1)" in table.stdout
    dot = run_report(db, *args, "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith("digraph dfg {")
    svg = run_report(db, *args, "--format", "svg")
    assert svg.returncode == 0, svg.stderr
    root = ET.fromstring(svg.stdout)
    assert root.tag.endswith("svg")
    assert "Outlook (3)" in svg.stdout


def test_export_ocel2_json(db: str, tmp_path: Path) -> None:
    path = export(db, tmp_path, "ocel")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert len(doc["events"]) == 14
    ids = {o["id"]: o["type"] for o in doc["objects"]}
    assert ids[f"user:{ALICE}"] == "user" and ids[f"user:{BOB}"] == "user"
    assert ids["application:Excel"] == "application"
    assert ids["document:Budget.xlsx"] == "document"
    assert {t["name"] for t in doc["objectTypes"]} == {"user", "application", "document"}
    save = next(e for e in doc["events"] if e["type"] == "DocumentSave")
    rels = {r["objectId"]: r["qualifier"] for r in save["relationships"]}
    assert rels == {
        f"user:{BOB}": "performed by",
        "application:Word": "in",
        "document:Contract 2026-17.docx": "on",
    }
    import pm4py

    ocel = pm4py.read_ocel2_json(str(path))
    assert len(ocel.events) == 14
    assert len(ocel.objects) == len(doc["objects"])


def test_tasks_cli(db: str) -> None:
    done = run_report(
        db, "tasks", "--from", "2026-03-29", "--to", "2026-03-29", "--user", ALICE, "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["steps"], r["count"], r["users"]) for r in rows] == [
        (["Outlook", "Excel", "Chrome"], 2, 1),
        (["Excel", "Chrome", "Outlook"], 2, 1),
    ]
    assert rows[0]["median_s"] == 195.0 and rows[0]["total_s"] == 390.0
    # With G = 10 s every pause splits the work: nothing recurs.
    short = run_report(
        db, "tasks", "--from", "2026-03-29", "--to", "2026-03-29", "--user", ALICE, "--gap", "10"
    )
    assert short.returncode == 0 and "no recurring sequence" in short.stdout


def test_team_flag(db: str, tmp_path: Path) -> None:
    args = ("flow", "--from", "2026-03-28", "--to", "2026-03-29", "--team", "ops", "--format", "json")
    missing = run_report(db, *args)
    assert missing.returncode == 2 and "DESKTRACE_TEAMS_FILE" in missing.stderr
    # The one team file of the reports and the gateway, roles and all.
    teams = tmp_path / "teams.toml"
    teams.write_text(
        '[teams]\nops = ["CORP\\\\bob"]\nfinance = ["corp\\\\alice"]\n'
        '[roles.olga]\nrole = "lead"\nteams = ["ops"]\n'
    )
    ops = run_report(db, *args, DESKTRACE_TEAMS_FILE=str(teams))
    assert ops.returncode == 0, ops.stderr
    assert json.loads(ops.stdout)["start"] == {"Word": 1}
    unknown = run_report(db, *args[:-3], "nobody", "--format", "json", DESKTRACE_TEAMS_FILE=str(teams))
    assert unknown.returncode == 2 and "finance, ops" in unknown.stderr
    out = tmp_path / "finance.xes"
    fin = run_report(
        db,
        "export",
        "--from",
        "2026-03-28",
        "--to",
        "2026-03-29",
        "--team",
        "finance",
        "--out",
        str(out),
        DESKTRACE_TEAMS_FILE=str(teams),
    )
    assert fin.returncode == 0, fin.stderr
    assert set(xes_traces(out)) == {f"{ALICE}/2026-03-28", f"{ALICE}/2026-03-29"}
    # The same file as JSON, given by the flag the report commands take.
    as_json = tmp_path / "teams.json"
    as_json.write_text('{"teams": {"ops": ["corp\\\\bob"]}}')
    flag = run_report(db, *args, "--teams-file", str(as_json))
    assert flag.returncode == 0, flag.stderr
    assert json.loads(flag.stdout)["start"] == {"Word": 1}


def test_clear_errors(fresh_pg_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "x.xes"
    no_tables = run_report(
        fresh_pg_dsn, "export", "--from", "2026-03-28", "--to", "2026-03-29", "--out", str(out)
    )
    assert no_tables.returncode == 2 and "desktrace-sink migrate" in no_tables.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # no half-written file left behind
    backwards = run_report(fresh_pg_dsn, "flow", "--from", "2026-03-29", "--to", "2026-03-28")
    assert backwards.returncode == 2 and "--to is before --from" in backwards.stderr
    for cmd in ("export", "flow", "tasks"):
        assert run_report(fresh_pg_dsn, cmd, "--help").returncode == 0


def test_stream_in_small_fetches_gives_the_same_traces(db: str) -> None:
    import asyncpg

    from reports.export import stream_traces

    async def read(prefetch: int) -> tuple[list[tuple[str, list[str]]], list[int]]:
        seen: list[int] = []
        conn = await asyncpg.connect(db)
        try:
            traces = [
                (t.name, [e.app for e in t.events])
                async for t in stream_traces(
                    conn, date(2026, 3, 28), date(2026, 3, 29), on_rows=seen.append, prefetch=prefetch
                )
            ]
        finally:
            await conn.close()
        return traces, seen

    whole, calls = asyncio.run(read(5000))
    assert dict(whole) == EXPECTED_TRACES and calls == [14, 14]
    for prefetch in (1, 3, 13):
        chunked, progress = asyncio.run(read(prefetch))
        assert chunked == whole
        assert progress[-1] == 14 and progress == sorted(progress)


def test_flow_equals_pm4py_on_a_simulated_fleet(fresh_pg_dsn: str, tmp_path: Path) -> None:
    """Agreement on realistic data: the agent simulator's users (real recorder, every event type, bursts of
    UI events in the same millisecond, several zones) over two days."""
    from datetime import UTC, datetime, timedelta

    import pm4py

    from agent.simulator import Fleet, make_users
    from tests.mining_fixture import write_events

    fleet = Fleet(make_users(3, 5), datetime(2026, 3, 9, tzinfo=UTC), timedelta(days=2))
    events = list(fleet.events())
    asyncio.run(write_events(fresh_pg_dsn, events))
    out = tmp_path / "fleet.xes"
    span = ("--from", "2026-03-09", "--to", "2026-03-10")
    done = run_report(fresh_pg_dsn, "export", *span, "--out", str(out))
    assert done.returncode == 0, done.stderr
    df = pm4py.read_xes(str(out))
    ui = [e for e in events if type(e).category == "ui"]
    assert 0 < len(df) <= len(ui)
    dfg, start, end = pm4py.discover_dfg(df)
    perf, _, _ = pm4py.discover_performance_dfg(df)
    flow_out = run_report(fresh_pg_dsn, "flow", *span, "--format", "json")
    assert flow_out.returncode == 0, flow_out.stderr
    g = json.loads(flow_out.stdout)
    assert {(e["from"], e["to"]): e["count"] for e in g["edges"]} == dict(dfg)
    assert g["start"] == dict(start) and g["end"] == dict(end)
    for e in g["edges"]:
        assert e["median_s"] == pytest.approx(perf[(e["from"], e["to"])]["median"], abs=0.001)
    assert sum(e["count"] for e in g["edges"]) == len(df) - df["case:concept:name"].nunique()


@pytest.mark.postgres
def test_flow_resolves_a_bare_login_like_the_reports(db: str) -> None:
    """``flow --user alice`` means the one user key whose login is alice (as ``desktrace-report --user``,
    which knows users by their sessions); a login nobody has exits 1 naming it."""

    async def a_session() -> None:
        conn = await asyncpg.connect(db)
        try:
            await conn.execute(
                "INSERT INTO sessions (session_id, user_key, kind, started_at, ended_at, duration_s) "
                "VALUES ('s1', $1, 'active', '2026-03-28 08:00Z', '2026-03-28 09:00Z', 3600)", "corp\\alice"
            )
        finally:
            await conn.close()

    asyncio.run(a_session())
    span = ("--from", "2026-03-28", "--to", "2026-03-29", "--format", "json")
    whole = run_report(db, "flow", *span, "--user", "corp\\alice")
    bare = run_report(db, "flow", *span, "--user", "Alice")
    assert whole.returncode == 0 and bare.returncode == 0, (whole.stderr, bare.stderr)
    assert json.loads(bare.stdout) == json.loads(whole.stdout) and json.loads(whole.stdout)["edges"]
    unknown = run_report(db, "flow", *span, "--user", "nobody-such")
    assert unknown.returncode == 1 and "nobody-such" in unknown.stderr
