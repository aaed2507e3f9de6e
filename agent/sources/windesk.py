"""The Windows desk, platform-free: WinEvent notifications and UI Automation reads in, window snapshots out.

:class:`DeskWatcher` is driven by the UI Automation thread of :mod:`agent.sources.windows` with the
:class:`agent.sources.winhooks.HookEvent` records of the hook thread, and reads windows through a
:class:`DeskPlatform` (real: :mod:`agent.sources.winuia`; tests: recorded element trees). It decides what
the product's event types need and says so on the snapshot (``new_window``, ``known``, ``document_event``),
the recorder then names the events:

- windows open when the agent starts are known: no ``WindowOpen`` for them, and no ``DocumentOpen`` for the
  document they show (documents seen before a restart are restored from the persisted state);
- a window that appears later is ``WindowOpen`` when it first comes to the foreground;
- in a browser each tab is a window (``window_id`` = ``hwnd:tab``): a tab that did not exist when the
  window was first read is ``WindowOpen`` when first selected, a new URL in the same tab is ``WindowOpen``,
  selecting another tab is ``WindowSwitch``, a title change in the same tab is ``WindowUpdate``;
- Excel's active sheet (UI Automation: the grid's name or the selected sheet tab; else the platform's
  other means, Excel's COM object model through pywin32) is re-read at every event from its window and,
  because a sheet switch is not reliably announced by a WinEvent and changes no title, polled every
  ``sheet_poll_s`` while Excel is in the foreground (one property read of the remembered grid): every
  switch is a ``SheetOpen``;
- name changes of the window itself and selection changes are read after :data:`SETTLE_S`, everything
  else of the foreground process (page element names, values, created/destroyed objects) after
  :data:`SETTLE_SLOW_S`: a busy page costs at most one read per second;
- shell surfaces (:mod:`agent.sources.winshell`) produce nothing;
- extended mode: parameters from focus changes (:mod:`agent.sources.winfields`), dropped when the window
  changes.

Times are passed in (``ts`` for events, ``mono`` monotonic seconds for scheduling): no clock here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from agent.observations import Observation, WindowSnapshot
from agent.sources import win32 as w
from agent.sources.common import Debouncer
from agent.sources.winbrowser import AddressBars, TabStrips, browser_of, tab_title
from agent.sources.windocs import DocumentTracker, ExcelSheets, excel_workbook, is_excel, parse_document_title
from agent.sources.winfields import FocusFields
from agent.sources.winhooks import HookEvent
from agent.sources.winshell import is_shell_surface
from agent.sources.wintree import hierarchy
from proto.events import InputClass

#: Coalescing delay for the window's own title changes and selection changes (a page load renames a window
#: several times; a tab or sheet switch selects and unselects).
SETTLE_S = 0.15
#: Coalescing delay for everything else of the foreground process (names of page elements, values, objects
#: created and destroyed): a busy page raises many, read at most once per this delay.
SETTLE_SLOW_S = 1.0
SHEET_POLL_S = 1.0
PRUNE_S = 60.0
STATE_FILE = "windows-desk.json"


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """What plain Win32 calls say about a top-level window."""

    hwnd: int
    title: str
    class_name: str
    pid: int
    exe_path: str
    version: str = ""


class DeskPlatform(Protocol):
    """The reads :class:`DeskWatcher` needs (UI Automation elements are duck-typed, see wintree)."""

    def window_info(self, hwnd: int) -> WindowInfo | None: ...

    def element(self, hwnd: int) -> Any: ...

    def focused(self) -> Any | None: ...

    def window_alive(self, hwnd: int, pid: int) -> bool: ...

    def excel_sheet(self, hwnd: int) -> str:
        """The active sheet of an Excel window by other means than UI Automation ("" if unknown)."""
        ...


def app_name(exe_path: str) -> str:
    """The program name: the executable's file name ("chrome.exe")."""
    return re.split(r"[\\/]", exe_path)[-1] if exe_path else ""


@dataclass
class _Window:
    pid: int
    initial: bool
    seen: bool = False
    tabs: set[str] = field(default_factory=set)
    urls: dict[str, str] = field(default_factory=dict)


def _content(s: WindowSnapshot) -> WindowSnapshot:
    return msgspec.structs.replace(
        s, ts=datetime(2000, 1, 1), input="none", new_window=False, known=False, document_event=None
    )


class DeskWatcher:
    """Turns hook events into window snapshots (rules in the module docstring).

    Guarantees: a snapshot is returned only when the foreground window or what it shows changed (or it
    carries ``new_window``/``document_event``); every snapshot says ``known`` or ``new_window``; nothing is
    returned for a shell surface; :meth:`state` holds what a restart needs, and :attr:`state_changed` says
    when it should be saved again."""

    def __init__(
        self, platform: DeskPlatform, initial: Iterable[tuple[int, int]], *,
        extended_mode: bool = False, field_max_chars: int = 256, web_fields: bool = False,
        cause: Callable[[datetime], InputClass] = lambda ts: "none",
        state: dict[str, Any] | None = None, sheet_poll_s: float = SHEET_POLL_S,
    ) -> None:
        self.platform = platform
        self.cause = cause
        self.sheet_poll_s = sheet_poll_s
        self.extended_mode = extended_mode
        self.fields = FocusFields(max_chars=field_max_chars, web_fields=web_fields) if extended_mode else None
        self._initial = dict(initial)
        self._windows: dict[int, _Window] = {}
        self._docs = DocumentTracker()
        self._bars = AddressBars()
        self._strips = TabStrips()
        self._sheets = ExcelSheets()
        self._settle = Debouncer(SETTLE_S)
        self._settle_slow = Debouncer(SETTLE_SLOW_S)
        self._foreground = 0
        self._fg_excel = False
        self._last: WindowSnapshot | None = None
        self._next_poll = 0.0
        self._next_prune = PRUNE_S
        self.state_changed = False
        self._doc_pids: dict[str, int] = {}
        restored: dict[str, list[Any]] = {}
        saved = (state or {}).get("documents", {})
        for wid, entry in (saved.items() if isinstance(saved, dict) else ()):
            # a damaged or foreign state file must not stop the agent: its bad entries are skipped
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)
                    and isinstance(entry[1], str) and str(wid).isdigit()):
                continue
            if self._initial.get(int(wid)) == entry[0]:  # the same window of the same process
                restored[wid] = [entry[1], bool(entry[2])]
                self._doc_pids[wid] = entry[0]
        self._docs.load(restored)

    # ---- input ------------------------------------------------------------------------------------------

    def start(self, foreground: int, ts: datetime, mono: float) -> list[Observation]:
        self._next_prune = mono + PRUNE_S
        self._foreground = foreground
        return self._read(foreground, ts, mono) if foreground else []

    def handle(self, ev: HookEvent, ts: datetime, mono: float) -> list[Observation]:
        if ev.event == w.EVENT_SYSTEM_FOREGROUND:
            self._foreground = ev.hwnd
            self._settle.cancel()
            self._settle_slow.cancel()
            return self._read(ev.hwnd, ts, mono)
        if ev.hwnd != self._foreground:
            return []
        if ev.event == w.EVENT_OBJECT_FOCUS:
            return self._focus(ts) if self.fields is not None else []
        own_title = ev.event == w.EVENT_OBJECT_NAMECHANGE and (ev.id_object, ev.id_child) == (
            w.OBJID_WINDOW, w.CHILDID_SELF)
        selection = w.EVENT_OBJECT_SELECTION <= ev.event <= w.EVENT_OBJECT_SELECTIONREMOVE
        (self._settle if own_title or selection else self._settle_slow).poke(mono)
        return []

    def tick(self, ts: datetime, mono: float) -> list[Observation]:
        out: list[Observation] = []
        fast, slow = self._settle.fire(mono), self._settle_slow.fire(mono)
        if fast or slow:
            self._settle.cancel()
            self._settle_slow.cancel()
            out += self._read(self._foreground, ts, mono)
        elif self._fg_excel and mono >= self._next_poll and self._last is not None:
            self._next_poll = mono + self.sheet_poll_s
            if self._sheet(self._foreground, self.platform.element(self._foreground)) != self._last.sheet:
                out += self._read(self._foreground, ts, mono)
        if mono >= self._next_prune:
            self._next_prune = mono + PRUNE_S
            self._prune()
        return out

    def timeout(self, mono: float, default: float) -> float:
        """How long the caller may wait for the next hook event before calling :meth:`tick`."""
        t = self._settle_slow.timeout(mono, self._settle.timeout(mono, default))
        if self._fg_excel:
            t = min(t, max(0.0, self._next_poll - mono))
        return t

    # ---- reading ----------------------------------------------------------------------------------------

    def _read(self, hwnd: int, ts: datetime, mono: float) -> list[Observation]:
        info = self.platform.window_info(hwnd)
        if info is None:
            return []
        if is_shell_surface(info.class_name, info.exe_path):
            self._fg_excel = False
            return []  # the desktop, taskbar, Start, search, lock screen: not recorded
        win = self._windows.get(hwnd)
        if win is None or win.pid != info.pid:
            win = self._windows[hwnd] = _Window(pid=info.pid, initial=self._initial.get(hwnd) == info.pid)
        first_read = not win.seen
        win.seen = True
        new = first_read and not win.initial
        element = self.platform.element(hwnd)
        app = app_name(info.exe_path)
        wid = window_id = str(hwnd)
        tab = url = sheet = file_path = ""
        browser = browser_of(app)
        self._fg_excel = is_excel(app)
        if browser is not None:
            tab = tab_title(info.title)
            url = self._bars.url(wid, element, browser)
            tabs = self._strips.read(wid, element)
            selected = tabs.selected if tabs is not None else ""
            if tabs is not None and selected:
                window_id = f"{hwnd}:{selected}"
                if first_read:
                    win.tabs = set(tabs.keys)
                elif selected not in win.tabs:
                    new = True  # a tab opened after the window was first read
                win.tabs = (win.tabs & tabs.keys) | {selected}
            before = win.urls.get(selected)
            if before is not None and self._bars.editing(wid):
                url = before  # the address bar shows what is being typed: the page did not change yet
            if before and url and url != before:
                new = True  # another page in the same tab
            win.urls = {k: v for k, v in win.urls.items() if tabs is None or k in tabs.keys}
            win.urls[selected] = url
        elif self._fg_excel:
            file_path = excel_workbook(info.title)
            sheet = self._sheet(hwnd, element)
            self._next_poll = mono + self.sheet_poll_s
        else:
            doc = parse_document_title(app, info.title)
            file_path = doc.name if doc is not None else ""
        if first_read and win.initial:
            self._docs.seed(wid, app, info.title)
        before_docs = self._docs.dump().get(wid)
        doc_event = self._docs.observe(wid, app, info.title, is_dialog=info.class_name == "#32770")
        if self._docs.dump().get(wid) != before_docs:
            self._doc_pids[wid] = info.pid
            self.state_changed = True
        fields = None
        if self.fields is not None:
            self.fields.window(window_id)
            fields = self.fields.fields()
        snap = WindowSnapshot(
            ts=ts, window_id=window_id, app=app, app_version=info.version, exe_path=info.exe_path,
            pid=info.pid, title=info.title, tab=tab, url=url, file_path=file_path, sheet=sheet,
            hierarchy=hierarchy(element, self.platform.focused()), fields=fields,
            document_event=doc_event, new_window=new, known=not new, input=self.cause(ts),
        )
        return self._emit(snap)

    def _sheet(self, hwnd: int, element: Any) -> str:
        return self._sheets.sheet(str(hwnd), element) or self.platform.excel_sheet(hwnd)

    def _focus(self, ts: datetime) -> list[Observation]:
        assert self.fields is not None
        last = self._last
        if last is None or not last.window_id.split(":")[0] == str(self._foreground):
            return []
        self.fields.window(last.window_id)
        if not self.fields.focus(self.platform.focused(), browser=browser_of(last.app) is not None):
            return []
        return self._emit(msgspec.structs.replace(
            last, ts=ts, fields=self.fields.fields(), new_window=False, known=True, document_event=None,
            input="none",
        ))

    def _emit(self, snap: WindowSnapshot) -> list[Observation]:
        if (
            not snap.new_window and snap.document_event is None and self._last is not None
            and _content(self._last) == _content(snap)
        ):
            return []
        self._last = snap
        return [snap]

    # ---- state ------------------------------------------------------------------------------------------

    def _prune(self) -> None:
        for hwnd, win in list(self._windows.items()):
            if not self.platform.window_alive(hwnd, win.pid):
                del self._windows[hwnd]
                wid = str(hwnd)
                self._docs.forget(wid)
                self._doc_pids.pop(wid, None)
                self._bars.forget(wid)
                self._strips.forget(wid)
                self._sheets.forget(wid)
                self.state_changed = True

    def state(self) -> dict[str, Any]:
        """What a restart needs: each window's document and the process it belongs to."""
        docs = self._docs.dump()
        return {"documents": {wid: [self._doc_pids.get(wid, 0), *doc] for wid, doc in docs.items()}}


def load_state(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Atomically replace the persisted desk state."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(state_dir / STATE_FILE)
