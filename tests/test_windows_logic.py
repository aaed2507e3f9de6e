"""The Windows source's interpretation (agent.sources.winlogic) on small fake UI Automation trees shaped like
the real ones, plus the platform-free helpers every source shares and the start-up source selection."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from agent.observations import PresenceKind, WindowSnapshot
from agent.sources import SourceUnavailable, select_source
from agent.sources import winlogic as wl
from agent.sources.common import Debouncer, ForegroundTracker, InputAttributor
from proto.events import UiNode
from tests.windows_trees import Fake, all_nodes, chrome_window, firefox_window

T0 = datetime(2024, 5, 6, 9, 0, 0, tzinfo=UTC)


def test_chrome_address_bar_is_the_omnibox_not_a_page_field() -> None:
    win = chrome_window()
    bar = wl.find_address_bar(win, "chromium")
    assert bar is not None and bar.ClassName == "OmniboxViewViews"
    assert wl.browser_url(win, "chromium") == "https://mail.example.com/inbox?x=1"


def test_edge_uses_the_chromium_omnibox_and_its_title_decorations() -> None:
    win = chrome_window(title="Inbox and 3 more pages - Work - Microsoft\u200b Edge", url="https://contoso.com/a")
    browser = wl.browser_of(r"C:\Edge\msedge.exe")
    assert browser == "chromium"
    assert (wl.tab_title(win.Name), wl.browser_url(win, browser)) == ("Inbox", "https://contoso.com/a")


def test_firefox_address_bar_by_its_automation_id() -> None:
    win = firefox_window()
    bar = wl.find_address_bar(win, "firefox")
    assert bar is not None and bar.AutomationId == "urlbar-input"
    assert wl.tab_title(win.Name) == "Mozilla"
    # trimming the query is the privacy filter's job, not the source's
    assert wl.browser_url(win, "firefox") == "https://www.mozilla.org/en-US/?utm_source=x#top"


def test_fallback_address_bar_is_the_first_edit_in_the_browsers_toolbar() -> None:
    win = chrome_window()
    for n in all_nodes(win):
        n.ClassName = ""  # a Chromium build that does not expose view class names
    bar = wl.find_address_bar(win, "chromium")
    assert bar is not None and bar.Name == "Address and search bar"


def test_address_bar_is_searched_once_per_window() -> None:
    win = chrome_window()
    walks = 0
    original = win.GetChildren

    def counting() -> list[Fake]:
        nonlocal walks
        walks += 1
        return original()

    win.GetChildren = counting  # type: ignore[method-assign]
    bars = wl.AddressBars()
    assert bars.url("0x1", win, "chromium") == "https://mail.example.com/inbox?x=1"
    omnibox = wl.find_address_bar(win, "chromium")
    assert omnibox is not None
    walks = 0
    omnibox._value = "https://mail.example.com/sent"
    assert bars.url("0x1", win, "chromium") == "https://mail.example.com/sent"
    assert walks == 0
    omnibox._value = None  # the element stopped answering: searched again
    assert bars.url("0x1", win, "chromium") == ""
    assert walks == 1


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("example.com", "https://example.com"),
        ("example.com/a/b?q=1", "https://example.com/a/b?q=1"),
        ("http://intranet:8080/x", "http://intranet:8080/x"),
        ("localhost:3000/app", "https://localhost:3000/app"),
        ("10.1.2.3/admin", "https://10.1.2.3/admin"),
        ("about:blank", "about:blank"),
        ("file:///C:/docs/a.pdf", "file:///C:/docs/a.pdf"),
        ("how to bake bread", ""),  # a search being typed is not a URL
        ("", ""),
    ],
)
def test_normalise_url(text: str, url: str) -> None:
    assert wl.normalise_url(text) == url


@pytest.mark.parametrize(
    ("exe", "browser"),
    [
        ("chrome.exe", "chromium"), (r"C:\x\MSEDGE.EXE", "chromium"), ("firefox.exe", "firefox"),
        ("excel.exe", None),
    ],
)
def test_browser_of(exe: str, browser: str | None) -> None:
    assert wl.browser_of(exe) == browser


def test_page_content_is_not_searched() -> None:
    win = chrome_window()
    visited = [el for el, _ in wl.walk(win)]
    page = win.children[0].children[0]
    assert page in visited and not any(c in visited for c in page.children)


# ---- Excel -------------------------------------------------------------------------------------------


def excel_window(with_grid: bool = True) -> Fake:
    tabs = Fake("Tab", "Sheet Tab Bar",
                Fake("TabItem", "Summary"), Fake("TabItem", "Q3 forecast", selected=True))
    desk = Fake("Pane", "", Fake("Pane", "Q3 forecast", cls="EXCEL7") if with_grid else Fake("Pane", "Grid"),
                cls="XLDESK")
    return Fake("Window", "Budget 2024.xlsx - Excel", Fake("Pane", "", desk, tabs), cls="XLMAIN")


@pytest.mark.parametrize("with_grid", [True, False])
def test_excel_workbook_and_active_sheet(with_grid: bool) -> None:
    win = excel_window(with_grid)
    assert wl.is_excel(r"C:\Office\EXCEL.EXE")
    assert (wl.excel_workbook(win.Name), wl.excel_sheet(win)) == ("Budget 2024.xlsx", "Q3 forecast")


@pytest.mark.parametrize(
    ("title", "book"),
    [
        ("Budget.xlsx - Excel", "Budget.xlsx"),
        ("Book1 - Excel", "Book1"),
        ("Old.xls  [Compatibility Mode] - Excel", "Old.xls"),
        ("Report.xlsx - Microsoft Excel", "Report.xlsx"),
        ("Inbox - Outlook", ""),
    ],
)
def test_excel_workbook_from_title(title: str, book: str) -> None:
    assert wl.excel_workbook(title) == book


# ---- hierarchy ---------------------------------------------------------------------------------------


def test_hierarchy_from_window_to_focused_element() -> None:
    win = chrome_window()
    omnibox = wl.find_address_bar(win, "chromium")
    assert wl.hierarchy(win, omnibox) == [
        UiNode(name="Inbox - Google Chrome", control_type="Window"),
        UiNode(name="", control_type="Pane"),
        UiNode(name="", control_type="Pane"),
        UiNode(name="", control_type="ToolBar"),
        UiNode(name="Address and search bar", control_type="Edit"),
    ]
    elsewhere = Fake("Edit", "in another window")
    assert wl.hierarchy(win, elsewhere) == [UiNode(name="Inbox - Google Chrome", control_type="Window")]


def test_vanishing_elements_read_as_empty() -> None:
    class Gone(Fake):
        def GetChildren(self) -> list[Fake]:
            raise RuntimeError("UIA_E_ELEMENTNOTAVAILABLE")

    win = Fake("Window", "x", Gone("Pane"))
    assert wl.find_address_bar(win, "chromium") is None
    assert wl.excel_sheet(win) == ""


# ---- documents -----------------------------------------------------------------------------------------


def test_notepad_untitled_then_save_as_then_edit_and_save() -> None:
    docs = wl.DocumentTracker()
    seq = ["Untitled - Notepad", "*Untitled - Notepad", "notes.txt - Notepad", "*notes.txt - Notepad",
           "notes.txt - Notepad", "notes.txt - Notepad"]
    assert [docs.observe("0x40", "notepad.exe", t) for t in seq] == [None, None, "save", None, "save", None]


def test_word_open_switch_document_and_save_as_dialog() -> None:
    docs = wl.DocumentTracker()
    assert docs.observe("0x50", "WINWORD.EXE", "Report.docx - Word") == "open"
    assert docs.observe("0x50", "WINWORD.EXE", "Plan.docx - Word") == "open"
    assert docs.observe("0x51", "WINWORD.EXE", "Save As", is_dialog=True) is None
    assert docs.observe("0x50", "WINWORD.EXE", "Plan v2.docx - Word") == "save"
    assert docs.observe("0x60", "chrome.exe", "Plan v2.docx - Word") is None  # not a document app


@pytest.mark.parametrize(
    ("exe", "title", "doc"),
    [
        ("code.exe", "\u25cf main.py - project - Visual Studio Code", wl.DocumentTitle("main.py", True)),
        ("notepad++.exe", "*C:\\a\\b.txt - Notepad++", wl.DocumentTitle("C:\\a\\b.txt", True)),
        ("EXCEL.EXE", "Budget.xlsx - Excel", wl.DocumentTitle("Budget.xlsx", False)),
        ("WINWORD.EXE", "Word", None),
    ],
)
def test_parse_document_title(exe: str, title: str, doc: wl.DocumentTitle | None) -> None:
    assert wl.parse_document_title(exe, title) == doc


# ---- presence ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "wparam", "kind"),
    [
        (wl.WM_WTSSESSION_CHANGE, 0x7, "Lock"), (wl.WM_WTSSESSION_CHANGE, 0x8, "Unlock"),
        (wl.WM_WTSSESSION_CHANGE, 0x5, "Logon"), (wl.WM_WTSSESSION_CHANGE, 0x6, "Logoff"),
        (wl.WM_WTSSESSION_CHANGE, 0x2, "Lock"), (wl.WM_WTSSESSION_CHANGE, 0x9, None),
        (wl.WM_POWERBROADCAST, 0x4, "Suspend"), (wl.WM_POWERBROADCAST, 0x12, "Resume"),
        (wl.WM_POWERBROADCAST, 0x7, "Resume"), (wl.WM_POWERBROADCAST, 0xA, None), (0x0010, 0x7, None),
    ],
)
def test_presence_kind(message: int, wparam: int, kind: str | None) -> None:
    assert wl.presence_kind(message, wparam) == kind


def test_presence_debouncer_collapses_duplicates() -> None:
    deb = wl.PresenceDebouncer()
    seq: list[PresenceKind] = [
        "Unlock", "Lock", "Lock", "Unlock", "Suspend", "Resume", "Resume", "Logoff", "Logon", "Logon",
    ]
    assert [k for k in seq if deb.accept(k)] == ["Lock", "Unlock", "Suspend", "Resume", "Logoff", "Logon"]


def test_idle_from_ticks_survives_the_49_day_wrap() -> None:
    assert wl.idle_from_ticks(10_000, 4_000) == 6_000
    assert wl.idle_from_ticks(5, 0xFFFF_FFF0) == 21


# ---- helpers shared by all sources --------------------------------------------------------------------


def ws(wid: str, title: str, **kw: Any) -> WindowSnapshot:
    return WindowSnapshot(ts=kw.pop("ts", T0), window_id=wid, title=title, app="a.exe", **kw)


def test_foreground_tracker_new_windows_and_duplicates() -> None:
    tr = ForegroundTracker(initial_windows=["1"])
    out = [tr.observe(s) for s in [
        ws("1", "a"), ws("1", "a", ts=T0 + timedelta(seconds=5), input="hardware"), ws("2", "b"),
        ws("1", "a"), ws("1", "a2"), ws("2", "b"), ws("1", "a2", document_event="save"),
    ]]
    assert [(o.window_id, o.title, o.new_window) if o else None for o in out] == [
        ("1", "a", False), None, ("2", "b", True), ("1", "a", False), ("1", "a2", False), ("2", "b", False),
        ("1", "a2", False),
    ]
    tr.forget(["2"])
    again = tr.observe(ws("2", "b"))
    assert again is not None and again.new_window


def test_input_attribution_window() -> None:
    at = InputAttributor(timedelta(seconds=1))
    assert at.cause(T0) == "none"
    at.on_input(T0, injected=True)
    assert at.cause(T0 + timedelta(milliseconds=400)) == "injected"
    at.on_input(T0 + timedelta(seconds=2), injected=False)
    assert at.cause(T0 + timedelta(seconds=2, milliseconds=999)) == "hardware"
    assert at.cause(T0 + timedelta(seconds=3, milliseconds=1)) == "none"
    assert at.cause(T0 + timedelta(seconds=1)) == "none"  # before the input


def test_debouncer_fires_once_per_burst_and_never_starves() -> None:
    d = Debouncer(0.1)
    assert not d.fire(0.0) and d.timeout(0.0, 0.5) == 0.5
    d.poke(1.0)
    d.poke(1.05)  # a burst does not postpone the read
    assert d.timeout(1.06, 0.5) == pytest.approx(0.04)
    assert not d.fire(1.09)
    assert d.fire(1.1) and not d.fire(1.2)


# ---- source selection --------------------------------------------------------------------------------


def test_select_source_without_display_names_what_is_missing() -> None:
    with pytest.raises(SourceUnavailable, match="DISPLAY is not set"):
        select_source(None, platform="linux", environ={})
    with pytest.raises(SourceUnavailable, match="Wayland"):
        select_source(None, platform="linux", environ={"WAYLAND_DISPLAY": "wayland-0"})
    with pytest.raises(SourceUnavailable, match="'darwin'"):
        select_source({"source": "auto"}, platform="darwin", environ={})
    with pytest.raises(SourceUnavailable, match="needs Windows"):
        select_source({"source": "windows"}, platform="linux", environ={"DISPLAY": ":0"})
    with pytest.raises(SourceUnavailable, match="unknown source 'mac'"):
        select_source({"source": "mac"}, platform="linux", environ={"DISPLAY": ":0"})


@pytest.mark.skipif(sys.platform == "win32", reason="python-xlib is installed on Linux only")
def test_select_source_picks_x11_with_a_display() -> None:
    from agent.sources.x11 import X11Source

    src = select_source(SimpleNamespace(source="auto"), platform="linux", environ={"DISPLAY": ":77"})
    assert isinstance(src, X11Source)
