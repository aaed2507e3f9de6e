"""The Windows desk rules (agent.sources.windesk and the modules it uses) on recorded element trees, through
the real recorder so that the event types asserted are the ones the agent writes: windows open at start,
tabs, URLs, Excel sheets, shell surfaces, restarts, extended-mode parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.identity import Identity
from agent.observations import Observation, WindowSnapshot
from agent.recorder import Recorder
from agent.sources import win32 as w
from agent.sources.windesk import DeskWatcher, WindowInfo, load_state, save_state
from agent.sources.winhooks import HookEvent
from proto.events import FieldValue
from tests.windows_trees import SECRET, Fake, all_nodes, chrome_window

T0 = datetime(2024, 5, 6, 9, 0, 0, tzinfo=UTC)


@dataclass
class Desk:
    """A recorded desk: top-level windows (Win32 facts and their UIA tree) and the focused element."""

    windows: dict[int, tuple[WindowInfo, Fake]] = field(default_factory=dict)
    focus: Fake | None = None
    reads: int = 0
    com_sheets: dict[int, str] = field(default_factory=dict)  # what Excel's COM object model says

    def add(self, hwnd: int, exe: str, tree: Fake, cls: str = "", pid: int = 0) -> int:
        self.windows[hwnd] = (WindowInfo(hwnd, tree.Name, cls or tree.ClassName, pid or hwnd % 1000 + 1, exe),
                              tree)
        return hwnd

    def retitle(self, hwnd: int, title: str) -> None:
        info, tree = self.windows[hwnd]
        tree.Name = title
        self.windows[hwnd] = (WindowInfo(hwnd, title, info.class_name, info.pid, info.exe_path), tree)

    def window_info(self, hwnd: int) -> WindowInfo | None:
        self.reads += 1
        return self.windows[hwnd][0] if hwnd in self.windows else None

    def element(self, hwnd: int) -> Any:
        return self.windows[hwnd][1]

    def focused(self) -> Any | None:
        return self.focus

    def window_alive(self, hwnd: int, pid: int) -> bool:
        return hwnd in self.windows and self.windows[hwnd][0].pid == pid

    def excel_sheet(self, hwnd: int) -> str:
        return self.com_sheets.get(hwnd, "")

    def initial(self) -> list[tuple[int, int]]:
        return [(h, info.pid) for h, (info, _) in self.windows.items()]


class Run:
    """A DeskWatcher feeding the real Recorder; collects event type names."""

    def __init__(self, desk: Desk, initial: list[tuple[int, int]], **kw: Any) -> None:
        self.desk = desk
        self.watcher = DeskWatcher(desk, initial, **kw)
        self.recorder = Recorder(Identity(agent_id="a", user="u", domain="d", host="h"), extended_mode=True)
        self.recorder.start(T0)
        self.mono = 0.0
        self.snapshots: list[WindowSnapshot] = []

    def _feed(self, obs: list[Observation]) -> list[str]:
        out: list[str] = []
        for o in obs:
            assert isinstance(o, WindowSnapshot)
            assert o.known != o.new_window  # every snapshot says which
            self.snapshots.append(o)
            out += [type(e).__name__ for e in self.recorder.observe(o)]
        return out

    def ts(self) -> datetime:
        return T0 + timedelta(seconds=self.mono)

    def start(self, fg: int) -> list[str]:
        return self._feed(self.watcher.start(fg, self.ts(), self.mono))

    def event(self, kind: int, hwnd: int) -> list[str]:
        self.mono += 1
        out = self._feed(self.watcher.handle(HookEvent(kind, hwnd), self.ts(), self.mono))
        return out + self.settle()

    def foreground(self, hwnd: int) -> list[str]:
        return self.event(w.EVENT_SYSTEM_FOREGROUND, hwnd)

    def settle(self, seconds: float = 0.5) -> list[str]:
        self.mono += seconds
        return self._feed(self.watcher.tick(self.ts(), self.mono))


def notepad(title: str = "notes.txt - Notepad", value: str = "") -> Fake:
    return Fake("Window", title, Fake("Edit", "Text editor", value=value, aid="15"), cls="Notepad")


def excel(sheet: str = "Summary") -> tuple[Fake, Fake, list[Fake]]:
    grid = Fake("Pane", sheet, cls="EXCEL7")
    items = [Fake("TabItem", n, selected=n == sheet) for n in ("Summary", "Q3 forecast")]
    win = Fake("Window", "Budget.xlsx - Excel",
               Fake("Pane", "", Fake("Pane", "", grid, cls="XLDESK"), Fake("Tab", "Sheet Tab Bar", *items)),
               cls="XLMAIN")
    return win, grid, items


def browser(*tabs: tuple[str, bool], url: str = "https://a.example/") -> tuple[Fake, Fake, Fake]:
    win = chrome_window(title=f"{next(t for t, s in tabs if s)} - Google Chrome", url=url)
    strip = Fake("Tab", "", *(Fake("TabItem", t, selected=s) for t, s in tabs))
    win.children.insert(0, strip)
    strip.parent = win
    omnibox = next(n for n in all_nodes(win) if n.ClassName == "OmniboxViewViews")
    omnibox.HasKeyboardFocus = False  # the page has the focus
    return win, strip, omnibox


def select_tab(win: Fake, strip: Fake, i: int) -> None:
    for j, t in enumerate(strip.children):
        t._selected = i == j
    win.Name = strip.children[i].Name + " - Google Chrome"


# ---- windows open at start -------------------------------------------------------------------------------


def test_windows_open_at_start_are_known_and_new_ones_open() -> None:
    desk = Desk()
    a = desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad())
    b = desk.add(0x1_0000_0020, r"C:\Office\WINWORD.EXE", Fake("Window", "Report.docx - Word", cls="OpusApp"))
    run = Run(desk, desk.initial())
    assert run.start(a) == ["WindowSwitch"]  # no WindowOpen, no DocumentOpen: both were open before
    assert run.foreground(b) == ["WindowSwitch"]
    assert run.foreground(a) == ["WindowSwitch"]
    c = desk.add(0x1_0000_0030, r"C:\Windows\notepad.exe", notepad("todo.txt - Notepad"))
    assert run.foreground(c) == ["WindowOpen", "DocumentOpen"]
    assert run.foreground(a) == ["WindowSwitch"]
    assert run.foreground(c) == ["WindowSwitch"]
    assert run.foreground(c) == []  # nothing changed


def test_title_change_is_window_update_and_save_is_document_save() -> None:
    desk = Desk()
    a = desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad())
    run = Run(desk, desk.initial())
    run.start(a)
    desk.retitle(a, "*notes.txt - Notepad")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, a) == ["WindowUpdate"]
    desk.retitle(a, "notes.txt - Notepad")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, a) == ["WindowUpdate", "DocumentSave"]


def test_a_name_change_burst_is_read_once() -> None:
    desk = Desk()
    a = desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad())
    run = Run(desk, desk.initial())
    run.start(a)
    reads = desk.reads
    for _ in range(20):
        run.watcher.handle(HookEvent(w.EVENT_OBJECT_NAMECHANGE, a), run.ts(), run.mono)
        run.mono += 0.01
    run.settle()
    assert desk.reads == reads + 1


def test_restart_reports_no_document_again_but_a_change_meanwhile(tmp_path: Path) -> None:
    desk = Desk()
    desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad("a.txt - Notepad"))
    run = Run(desk, [])  # the agent started before the window: it is new
    assert run.start(0x1_0000_0010) == ["WindowOpen", "DocumentOpen"]
    save_state(tmp_path, run.watcher.state())
    # restart: same window, same process, same document: nothing is new
    again = Run(desk, desk.initial(), state=load_state(tmp_path))
    assert again.start(0x1_0000_0010) == ["WindowSwitch"]
    # restart after the window opened another document while the agent was down
    desk.retitle(0x1_0000_0010, "b.txt - Notepad")
    third = Run(desk, desk.initial(), state=load_state(tmp_path))
    assert third.start(0x1_0000_0010) == ["WindowSwitch", "DocumentOpen"]
    # a state of another process that had the same handle is ignored (seeded as open before the start)
    desk.windows.clear()
    desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad("c.txt - Notepad"), pid=999)
    fourth = Run(desk, desk.initial(), state=load_state(tmp_path))
    assert fourth.start(0x1_0000_0010) == ["WindowSwitch"]


def test_a_damaged_state_file_is_ignored(tmp_path: Path) -> None:
    desk = Desk()
    a = desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad("a.txt - Notepad"))
    for state in ({"documents": {str(a): "x"}}, {"documents": [1, 2]}, {"documents": {str(a): [None, 1, 2]}}):
        assert Run(desk, desk.initial(), state=state).start(a) == ["WindowSwitch"]
    (tmp_path / "windows-desk.json").write_text("{not json", encoding="utf-8")
    assert load_state(tmp_path) == {}


# ---- browsers: tabs and URLs -----------------------------------------------------------------------------


def test_tabs_new_tab_is_open_switch_is_switch_title_is_update_url_is_open() -> None:
    desk = Desk()
    win, strip, omnibox = browser(("Inbox", True), ("News", False))
    hwnd = desk.add(0x2_0000_0100, r"C:\Chrome\chrome.exe", win)
    run = Run(desk, desk.initial())
    assert run.start(hwnd) == ["WindowSwitch"]
    select_tab(win, strip, 1)  # an existing tab
    desk.retitle(hwnd, win.Name)
    omnibox._value = "https://news.example/"
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowSwitch"]
    strip.children.append(Fake("TabItem", "New Tab"))  # Ctrl+T
    strip.children[-1].parent = strip
    assert run.event(w.EVENT_OBJECT_CREATE, hwnd) == []  # not selected yet: nothing changed
    select_tab(win, strip, 2)
    desk.retitle(hwnd, win.Name)
    omnibox._value = ""
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowOpen"]
    omnibox._value = "https://docs.example/start"  # the user goes somewhere in that tab
    desk.retitle(hwnd, "Start - Google Chrome")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowUpdate"]  # first URL of a new tab
    omnibox._value = "https://docs.example/other"
    desk.retitle(hwnd, "Other - Google Chrome")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowOpen"]  # a new URL in the same tab
    desk.retitle(hwnd, "(1) Other - Google Chrome")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowUpdate"]  # same page, new title
    select_tab(win, strip, 0)
    desk.retitle(hwnd, win.Name)
    omnibox._value = "https://a.example/"
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowSwitch"]
    tabs = {s.window_id for s in run.snapshots}
    assert len(tabs) == 3 and all(t.startswith(f"{hwnd}:") for t in tabs)


def test_typing_in_the_address_bar_is_no_new_url_until_the_page_changes() -> None:
    desk = Desk()
    win, _strip, omnibox = browser(("Inbox", True))
    hwnd = desk.add(0x2_0000_0100, r"C:\Chrome\chrome.exe", win)
    run = Run(desk, desk.initial())
    run.start(hwnd)
    omnibox.HasKeyboardFocus = True
    got: list[str] = []
    for typed in ("n", "ne", "news.ex", "news.example.com"):  # looks like a URL before Enter
        omnibox._value = typed
        got += run.event(w.EVENT_OBJECT_VALUECHANGE, hwnd) + run.settle(1.0)
    assert got == []
    omnibox.HasKeyboardFocus = False  # Enter: the page loads and takes the focus
    desk.retitle(hwnd, "News - Google Chrome")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowOpen"]
    assert run.snapshots[-1].url == "https://news.example.com"


def test_events_of_other_windows_are_ignored() -> None:
    desk = Desk()
    a = desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad())
    b = desk.add(0x1_0000_0020, r"C:\Windows\notepad.exe", notepad("b.txt - Notepad"))
    run = Run(desk, desk.initial())
    run.start(a)
    desk.retitle(b, "*b.txt - Notepad")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, b) == []


# ---- Excel sheets in basic mode --------------------------------------------------------------------------


def test_every_excel_sheet_switch_is_a_sheet_open_in_basic_mode() -> None:
    desk = Desk()
    win, grid, _items = excel()
    x = desk.add(0x3_0000_0200, r"C:\Office\EXCEL.EXE", win)
    run = Run(desk, desk.initial(), extended_mode=False)
    assert run.start(x) == ["WindowSwitch"]
    assert run.snapshots[-1].sheet == "Summary" and run.snapshots[-1].file_path == "Budget.xlsx"
    got: list[str] = []
    for sheet in ("Q3 forecast", "Summary", "Q3 forecast"):
        grid.Name = sheet  # a sheet switch: no title change, no WinEvent relied on
        got += run.settle(1.5)
    assert got == ["SheetOpen"] * 3
    assert run.settle(5) == []
    assert run.watcher.timeout(run.mono, 10.0) <= 1.0  # polls while Excel is in front


def test_excel_sheet_from_the_selected_sheet_tab_without_a_grid() -> None:
    desk = Desk()
    win, grid, items = excel()
    grid.ClassName = ""  # a build that does not expose the grid's class
    x = desk.add(0x3_0000_0200, r"C:\Office\EXCEL.EXE", win)
    run = Run(desk, desk.initial())
    run.start(x)
    items[0]._selected, items[1]._selected = False, True
    assert run.settle(1.5) == ["SheetOpen"]
    assert run.snapshots[-1].sheet == "Q3 forecast"


def test_excel_sheet_through_com_when_ui_automation_shows_none() -> None:
    desk = Desk()
    win, grid, _items = excel()
    grid.ClassName = ""
    win.children[0].children.pop()  # no sheet tab bar either
    x = desk.add(0x3_0000_0200, r"C:\Office\EXCEL.EXE", win)
    desk.com_sheets[x] = "Summary"
    run = Run(desk, desk.initial())
    run.start(x)
    assert run.snapshots[-1].sheet == "Summary"
    desk.com_sheets[x] = "Q3 forecast"
    assert run.settle(1.5) == ["SheetOpen"]


def test_a_busy_page_is_read_at_most_once_a_second() -> None:
    desk = Desk()
    win, _strip, _omnibox = browser(("Ticker", True))
    hwnd = desk.add(0x2_0000_0100, r"C:\Chrome\chrome.exe", win)
    run = Run(desk, desk.initial())
    run.start(hwnd)
    reads = desk.reads
    for _ in range(100):  # 10 s of page elements renaming themselves 10 times a second
        run.watcher.handle(HookEvent(w.EVENT_OBJECT_NAMECHANGE, hwnd, id_object=-4, id_child=7), run.ts(),
                           run.mono)
        run.settle(0.1)
    assert 8 <= desk.reads - reads <= 11


# ---- shell surfaces --------------------------------------------------------------------------------------


def test_shell_surfaces_are_not_recorded() -> None:
    desk = Desk()
    a = desk.add(0x1_0000_0010, r"C:\Windows\notepad.exe", notepad())
    shell = [
        desk.add(0x10, r"C:\Windows\explorer.exe", Fake("Pane", "Program Manager"), cls="Progman"),
        desk.add(0x11, r"C:\Windows\explorer.exe", Fake("Pane", ""), cls="WorkerW"),
        desk.add(0x12, r"C:\Windows\explorer.exe", Fake("Pane", "Taskbar"), cls="Shell_TrayWnd"),
        desk.add(0x13, r"C:\Windows\SystemApps\StartMenuExperienceHost.exe", Fake("Window", "Start"),
                 cls="Windows.UI.Core.CoreWindow"),
        desk.add(0x14, r"C:\Windows\SystemApps\SearchHost.exe", Fake("Window", "Search"),
                 cls="Windows.UI.Core.CoreWindow"),
        desk.add(0x15, r"C:\Windows\SystemApps\LockApp.exe", Fake("Window", "Windows Default Lock Screen"),
                 cls="Windows.UI.Core.CoreWindow"),
    ]
    explorer = desk.add(0x16, r"C:\Windows\explorer.exe", Fake("Window", "Documents"), cls="CabinetWClass")
    run = Run(desk, desk.initial())
    run.start(a)
    for s in shell:
        assert run.foreground(s) == []
        assert run.foreground(a) == []  # back to where the user was: no switch either
    assert run.foreground(explorer) == ["WindowSwitch"]  # File Explorer is an application
    assert {s.app for s in run.snapshots} == {"notepad.exe", "explorer.exe"}


# ---- extended mode ---------------------------------------------------------------------------------------


def form() -> tuple[Fake, Fake, Fake, Fake]:
    name = Fake("Edit", "Customer", aid="customer", value="ACME")
    pin = Fake("Edit", "PIN", aid="pin", value=SECRET, password=True)
    notes = Fake("Edit", "Notes", aid="notes", value="x" * 10_000)
    win = Fake("Window", "Order entry", Fake("Pane", "Form", name, pin, notes), cls="OrderWnd")
    return win, name, pin, notes


def test_extended_mode_reads_fields_on_focus_gain_and_loss_capped_never_passwords() -> None:
    desk = Desk()
    win, name, pin, notes = form()
    hwnd = desk.add(0x4_0000_0300, r"C:\Apps\orders.exe", win)
    run = Run(desk, desk.initial(), extended_mode=True, field_max_chars=256)
    run.start(hwnd)
    assert run.snapshots[-1].fields == []
    desk.focus = name
    assert run.event(w.EVENT_OBJECT_FOCUS, hwnd) == []  # clicking a field is not an event
    assert run.snapshots[-1].fields == [FieldValue(name="Customer", control_type="Edit", value="ACME")]
    name._value = "ACME Corp"
    desk.focus = pin
    run.event(w.EVENT_OBJECT_FOCUS, hwnd)
    desk.focus = notes
    run.event(w.EVENT_OBJECT_FOCUS, hwnd)
    fields = run.snapshots[-1].fields
    assert fields == [
        FieldValue(name="Customer", control_type="Edit", value="ACME Corp", edited=True),
        FieldValue(name="PIN", control_type="Edit", value=None, edited=True, password=True),
        FieldValue(name="Notes", control_type="Edit", value="x" * 256),
    ]
    assert pin.value_reads == 0
    # the parameters go on later events of that window ...
    desk.retitle(hwnd, "Order entry - 4711")
    assert run.event(w.EVENT_OBJECT_NAMECHANGE, hwnd) == ["WindowUpdate"]
    assert run.snapshots[-1].fields == fields
    # ... and are dropped when the window changes
    other = desk.add(0x4_0000_0400, r"C:\Windows\notepad.exe", notepad())
    run.foreground(other)
    assert run.snapshots[-1].fields == []


def test_cap_is_a_setting_and_basic_mode_reads_no_field() -> None:
    desk = Desk()
    win, name, _pin, _notes = form()
    hwnd = desk.add(0x4_0000_0300, r"C:\Apps\orders.exe", win)
    run = Run(desk, desk.initial(), extended_mode=True, field_max_chars=3)
    run.start(hwnd)
    desk.focus = name
    run.event(w.EVENT_OBJECT_FOCUS, hwnd)
    assert run.snapshots[-1].fields == [FieldValue(name="Customer", control_type="Edit", value="ACM")]
    basic_desk = Desk()
    win2, name2, pin2, notes2 = form()
    h2 = basic_desk.add(0x4_0000_0300, r"C:\Apps\orders.exe", win2)
    basic = Run(basic_desk, basic_desk.initial(), extended_mode=False)
    basic.start(h2)
    basic_desk.focus = name2
    basic.event(w.EVENT_OBJECT_FOCUS, h2)
    assert all(s.fields is None for s in basic.snapshots)
    assert name2.value_reads == pin2.value_reads == notes2.value_reads == 0


def test_web_page_fields_are_not_read_unless_configured() -> None:
    for web_fields, expect_read in ((False, False), (True, True)):
        desk = Desk()
        win, _strip, _omnibox = browser(("Inbox", True))
        hwnd = desk.add(0x2_0000_0100, r"C:\Chrome\chrome.exe", win)
        page_field = next(n for n in all_nodes(win) if n.Name == "Search mail")
        page_password = next(n for n in all_nodes(win) if n.IsPassword)
        run = Run(desk, desk.initial(), extended_mode=True, web_fields=web_fields)
        run.start(hwnd)
        for el in (page_field, page_password):
            desk.focus = el
            run.event(w.EVENT_OBJECT_FOCUS, hwnd)
        desk.focus = None
        run.event(w.EVENT_OBJECT_FOCUS, hwnd)
        assert (page_field.value_reads > 0) is expect_read
        assert page_password.value_reads == 0
        assert SECRET not in repr(run.snapshots)
