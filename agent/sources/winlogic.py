"""Platform-free interpretation for the Windows source. :mod:`agent.sources.windows` does the platform calls
(UI Automation through ``uiautomation``, pynput hooks, WTS and power notifications) and hands this module
plain values and element objects; everything that decides what those mean lives here and is tested
without Windows, on small fake element trees.

Elements are duck-typed like ``uiautomation`` Controls: ``Name``, ``ControlTypeName``, ``ClassName``,
``AutomationId``, ``IsPassword``, ``HasKeyboardFocus``, ``GetChildren()``, ``GetParentControl()``,
``GetValuePattern().Value`` and ``GetSelectionItemPattern().IsSelected``.

How the browser address bar is found (language independent: no localized names are used):

- Chrome, Edge (and other Chromium browsers: Brave, Vivaldi, Opera): the omnibox is the element whose
  ``ClassName`` is ``OmniboxViewViews`` (Chromium's views expose their class names through UIA); fallback:
  the first ``Edit`` inside a ``ToolBar``.
- Firefox: the element whose ``AutomationId`` is ``urlbar-input`` (Firefox exposes the DOM id of its own
  UI); fallback: the first ``Edit`` inside a ``ToolBar``.

The search never enters ``Document`` elements (the page itself: large, and not the browser's UI), stops at
:data:`MAX_DEPTH` levels and :data:`MAX_NODES` elements.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from agent.observations import PresenceKind, WindowSnapshot
from proto.events import FieldValue, InputClass, UiNode

MAX_DEPTH: Final = 16
MAX_NODES: Final = 3000
#: Fields read per window in extended mode, at most.
MAX_FIELDS: Final = 100

Browser = Literal["chromium", "firefox"]


class Element(Protocol):
    """What this module reads of a UI Automation element (a ``uiautomation.Control``)."""

    Name: str
    ControlTypeName: str
    ClassName: str
    AutomationId: str

    def GetChildren(self) -> list[Any]: ...


# ---- tree walking ------------------------------------------------------------------------------------


def _attr(el: Any, name: str, default: Any = "") -> Any:
    """An element property; UIA raises when an element vanished meanwhile: that reads as ``default``."""
    try:
        value = getattr(el, name)
    except Exception:
        return default
    return default if value is None else value


def _children(el: Any) -> list[Any]:
    try:
        return list(el.GetChildren() or [])
    except Exception:
        return []


def walk(
    root: Any,
    *,
    skip: Callable[[Any], bool] = lambda el: _attr(el, "ControlTypeName") == "DocumentControl",
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Iterator[tuple[Any, int]]:
    """Breadth-first ``(element, depth)`` below ``root`` (root excluded), not entering elements for which
    ``skip`` is true (they are yielded, their children are not), bounded in depth and count."""
    queue: deque[tuple[Any, int]] = deque((c, 1) for c in _children(root))
    seen = 0
    while queue and seen < max_nodes:
        el, depth = queue.popleft()
        seen += 1
        yield el, depth
        if depth < max_depth and not skip(el):
            queue.extend((c, depth + 1) for c in _children(el))


def _never(_el: Any) -> bool:
    return False


def first(root: Any, pred: Callable[[Any], bool], **kw: Any) -> Any | None:
    for el, _ in walk(root, **kw):
        if pred(el):
            return el
    return None


def control_type(el: Any) -> str:
    """``EditControl`` -> ``Edit`` (the UIA control type name without the suffix uiautomation adds)."""
    name = str(_attr(el, "ControlTypeName"))
    return name[: -len("Control")] if name.endswith("Control") else name


# ---- browsers ----------------------------------------------------------------------------------------

#: Executable file name (lower case) -> browser family.
BROWSERS: Final[dict[str, Browser]] = {
    "chrome.exe": "chromium",
    "msedge.exe": "chromium",
    "brave.exe": "chromium",
    "vivaldi.exe": "chromium",
    "opera.exe": "chromium",
    "chromium.exe": "chromium",
    "firefox.exe": "firefox",
}

#: What browsers append to the active tab's title in their window title.
TITLE_SUFFIXES: Final = (
    " - Google Chrome", " - Chromium", " - Brave", " - Vivaldi", " - Opera",
    " - Microsoft\u200b Edge", " - Microsoft Edge",
    " \u2014 Mozilla Firefox", " - Mozilla Firefox",
)
_EDGE_MORE_PAGES = re.compile(r" and \d+ more pages?$")
_EDGE_PROFILE = re.compile(r" - [^-]{1,40}$")


def browser_of(exe_name: str) -> Browser | None:
    """The browser family of a process, from its executable's file name (any case, with or without path)."""
    base = re.split(r"[\\/]", exe_name)[-1].lower()
    return BROWSERS.get(base)


def tab_title(window_title: str) -> str:
    """The active tab's title: the browser window title without the browser's name (and, for Edge, without
    its profile name and "and N more pages")."""
    for suffix in TITLE_SUFFIXES:
        if window_title.endswith(suffix):
            title = window_title[: -len(suffix)]
            if "Edge" in suffix:
                stripped = _EDGE_PROFILE.sub("", title)
                title = stripped if stripped else title
                title = _EDGE_MORE_PAGES.sub("", title)
            return title
    return window_title


def _in_toolbar_edit(root: Any) -> Any | None:
    for bar, _ in walk(root):
        if control_type(bar) == "ToolBar":
            edit = first(bar, lambda el: control_type(el) == "Edit")
            if edit is not None:
                return edit
    return None


def find_address_bar(window: Any, browser: Browser) -> Any | None:
    """The address bar element of a browser window (see the module docstring), or None."""
    if browser == "chromium":
        found = first(window, lambda el: _attr(el, "ClassName") == "OmniboxViewViews")
    else:
        found = first(window, lambda el: _attr(el, "AutomationId") == "urlbar-input")
    return found if found is not None else _in_toolbar_edit(window)


_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HOSTLIKE = re.compile(
    r"^(localhost|[\w-]+(\.[\w-]+)+|\[[0-9a-fA-F:]+\]|\d{1,3}(\.\d{1,3}){3})"  # host
    r"(:\d+)?([/?#].*)?$"  # port, path
)


def normalise_url(text: str) -> str:
    """The URL an address bar shows, as a full URL. Chromium hides ``https://`` (and sometimes ``www.``)
    while the bar is not focused: a scheme-less host gets ``https://`` (an ``http`` page is then reported as
    ``https``; the host and path are right). Text that is not a URL (a search being typed) gives ""."""
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        return ""
    if _SCHEME.match(text) and not _HOSTLIKE.match(text):
        return text
    if _HOSTLIKE.match(text):
        return "https://" + text
    return ""


def read_value(el: Any) -> str | None:
    """The value of an element through its Value pattern (never called for password fields)."""
    try:
        pattern = el.GetValuePattern()
        value = pattern.Value if pattern is not None else None
    except Exception:
        return None
    return None if value is None else str(value)


def browser_url(window: Any, browser: Browser) -> str:
    bar = find_address_bar(window, browser)
    if bar is None or is_password(bar):
        return ""
    return normalise_url(read_value(bar) or "")


class AddressBars:
    """Remembers each browser window's address bar element, so a window's tree is searched once, not at
    every read (UI Automation calls cross processes: a tree walk costs milliseconds per element).

    Guarantee: :meth:`url` returns what :func:`browser_url` would; a remembered element that no longer
    answers is searched for again. At most ``max_windows`` windows are remembered (oldest dropped first).
    """

    def __init__(self, max_windows: int = 256) -> None:
        self.max_windows = max_windows
        self._bars: dict[str, Any] = {}

    def url(self, window_id: str, window: Any, browser: Browser) -> str:
        bar = self._bars.get(window_id)
        if bar is not None:
            value = read_value(bar)
            if value is not None:
                return normalise_url(value)
        bar = find_address_bar(window, browser)
        if bar is None or is_password(bar):
            self._bars.pop(window_id, None)
            return ""
        self._bars.pop(window_id, None)
        self._bars[window_id] = bar
        while len(self._bars) > self.max_windows:
            self._bars.pop(next(iter(self._bars)))
        return normalise_url(read_value(bar) or "")

    def forget(self, window_id: str) -> None:
        self._bars.pop(window_id, None)


# ---- Excel -------------------------------------------------------------------------------------------

_EXCEL_SUFFIX = re.compile(r"\s+[-\u2013\u2014]\s+(Microsoft\s+)?Excel(\s+\(.*\))?$")
_EXCEL_DECOR = re.compile(
    r"\s+(\[(Read-Only|Compatibility Mode|Group|Shared)\]|\s*-\s*(Saved|Saving\u2026))+$"
)


def excel_workbook(window_title: str) -> str:
    """The workbook name from an Excel window title ("Budget.xlsx - Excel" -> "Budget.xlsx"); Excel shows
    only the file name, so this is what ``file_path`` can carry for Excel."""
    title, found = _EXCEL_SUFFIX.subn("", window_title.strip())
    if not found:
        return ""
    return _EXCEL_DECOR.sub("", title).strip()


def _is_selected(el: Any) -> bool:
    try:
        pattern = el.GetSelectionItemPattern()
        return bool(pattern is not None and pattern.IsSelected)
    except Exception:
        return False


def excel_sheet(window: Any) -> str:
    """The active sheet of an Excel window: the name of the worksheet grid (ClassName ``EXCEL7``, whose UIA
    name is the sheet name), else the selected ``TabItem`` of the sheet tab bar."""
    grid = first(window, lambda el: _attr(el, "ClassName") == "EXCEL7",
                 skip=lambda el: control_type(el) in ("DataGrid", "Table", "Document"))
    if grid is not None and _attr(grid, "Name"):
        return str(_attr(grid, "Name"))
    for tabs, _ in walk(window, skip=lambda el: control_type(el) in ("DataGrid", "Table", "Document")):
        if control_type(tabs) != "Tab":
            continue
        for item in _children(tabs):
            if control_type(item) == "TabItem" and _is_selected(item):
                return str(_attr(item, "Name"))
    return ""


def is_excel(exe_name: str) -> bool:
    return re.split(r"[\\/]", exe_name)[-1].lower() == "excel.exe"


# ---- hierarchy ---------------------------------------------------------------------------------------


def hierarchy(top: Any, focused: Any | None, *, max_depth: int = 32) -> list[UiNode]:
    """Names and control types from the top-level window down to the focused element (the window alone when
    the focus is elsewhere or unknown). Only names (labels) and types are read, never values."""

    def node(el: Any) -> UiNode:
        return UiNode(name=str(_attr(el, "Name")), control_type=control_type(el))

    chain: list[Any] = []
    el = focused
    top_key = _key(top)
    while el is not None and len(chain) < max_depth:
        if _key(el) == top_key:
            return [node(top), *(node(e) for e in reversed(chain))]
        chain.append(el)
        try:
            el = el.GetParentControl()
        except Exception:
            el = None
    return [node(top)]


def _key(el: Any) -> Any:
    """Identity of an element across wrapper objects: its runtime id when it has one, else the object."""
    try:
        rid = el.GetRuntimeId()
    except Exception:
        rid = None
    return tuple(rid) if rid else id(el)


# ---- fields (extended mode) -------------------------------------------------------------------------

EDITABLE_TYPES: Final = frozenset({"Edit", "ComboBox", "Spinner"})


def is_password(el: Any) -> bool:
    return bool(_attr(el, "IsPassword", False))


@dataclass
class FieldTracker:
    """Reads the editable fields of windows in extended mode and says which were edited.

    Guarantees: a field whose ``IsPassword`` is true is listed with ``password=True`` and ``value=None``,
    and its Value pattern is never called; a password field counts as edited once it has had the keyboard
    focus while the window was read; another field is edited when its value differs from the value read
    for it before (per window; the first read of a field is not an edit).
    """

    max_fields: int = MAX_FIELDS
    _values: dict[tuple[str, str], str | None] = field(default_factory=dict)
    _password_focused: set[tuple[str, str]] = field(default_factory=set)

    def read(self, window_id: str, window: Any) -> list[FieldValue]:
        out: list[FieldValue] = []
        counts: dict[str, int] = {}
        for el, _ in walk(window, skip=_never):
            if control_type(el) not in EDITABLE_TYPES:
                continue
            name = str(_attr(el, "Name"))
            ident = str(_attr(el, "AutomationId")) or name
            counts[ident] = counts.get(ident, 0) + 1
            key = (window_id, f"{ident}#{counts[ident]}")
            if is_password(el):
                if _attr(el, "HasKeyboardFocus", False):
                    self._password_focused.add(key)
                out.append(FieldValue(name=name, control_type=control_type(el), value=None,
                                      edited=key in self._password_focused, password=True))
            else:
                value = read_value(el)
                before = self._values.get(key, value)
                self._values[key] = value
                out.append(FieldValue(name=name, control_type=control_type(el), value=value,
                                      edited=before != value))
            if len(out) >= self.max_fields:
                break
        return out

    def forget(self, window_id: str) -> None:
        self._values = {k: v for k, v in self._values.items() if k[0] != window_id}
        self._password_focused = {k for k in self._password_focused if k[0] != window_id}


# ---- documents -----------------------------------------------------------------------------------------

#: Executable (lower case) -> the application name its window titles end with.
DOCUMENT_APPS: Final[dict[str, str]] = {
    "winword.exe": "Word",
    "excel.exe": "Excel",
    "powerpnt.exe": "PowerPoint",
    "notepad.exe": "Notepad",
    "wordpad.exe": "WordPad",
    "notepad++.exe": "Notepad++",
    "acrobat.exe": "Adobe Acrobat",
    "acrord32.exe": "Adobe Acrobat Reader",
    "soffice.bin": "LibreOffice",
    "code.exe": "Visual Studio Code",
}
#: Names applications give a document that was never saved.
UNTITLED: Final = re.compile(
    r"^(Untitled|Document\d*|Book\d*|Presentation\d*|new \d+|Sans titre|Unbenannt)(\.\w+)?$", re.I
)
#: Titles of the common "Save As" dialog (a few languages).
SAVE_DIALOG_TITLES: Final = frozenset({
    "save as", "save", "enregistrer sous", "speichern unter", "guardar como", "salva con nome", "opslaan als",
})


@dataclass(frozen=True, slots=True)
class DocumentTitle:
    name: str
    dirty: bool


def parse_document_title(exe_name: str, title: str) -> DocumentTitle | None:
    """The document a document application's window shows, and whether it has unsaved changes (a ``*`` or
    ``●`` marker); None for other applications or titles without a document."""
    app = DOCUMENT_APPS.get(re.split(r"[\\/]", exe_name)[-1].lower())
    if app is None:
        return None
    text = title.strip()
    dirty = False
    for marker in ("*", "\u25cf"):
        if text.startswith(marker):
            text, dirty = text[len(marker):].strip(), True
    parts = re.split(r"\s+[-\u2013\u2014]\s+", text)
    if len(parts) < 2:
        return None
    name = parts[0].strip()
    if name.endswith("*"):
        name, dirty = name[:-1].strip(), True
    if app == "Excel":
        name = excel_workbook(title.lstrip("*\u25cf ").strip()) or name
    name = re.sub(r"\s+\[(Read-Only|Compatibility Mode)\]$", "", name)
    return DocumentTitle(name=name, dirty=dirty) if name else None


class DocumentTracker:
    """Tells document opens and saves from window title transitions and Save dialogs.

    Guarantees, per window:

    - ``open`` when a window first shows a named (not untitled) document, or switches to another named
      document without a Save dialog in between;
    - ``save`` when the unsaved-changes marker disappears from the same document; when an untitled
      document gets a name (Save As); and when the foreground returns from a Save dialog to a document
      window (the dialog was confirmed or not: a Save dialog closing with the title unchanged is a save only
      if the title's dirty marker went away, else nothing);
    - nothing for any other title change.
    """

    def __init__(self) -> None:
        self._docs: dict[str, DocumentTitle] = {}
        self._save_dialog_for: str | None = None
        self._last_window: str | None = None

    def observe(self, window_id: str, exe_name: str, title: str, *, is_dialog: bool = False
                ) -> Literal["open", "save"] | None:
        if is_dialog and title.strip().lower().rstrip(".\u2026") in SAVE_DIALOG_TITLES:
            self._save_dialog_for = self._last_window
            return None
        from_dialog, self._save_dialog_for = self._save_dialog_for, None
        self._last_window = window_id
        doc = parse_document_title(exe_name, title)
        if doc is None:
            return None
        before = self._docs.get(window_id)
        self._docs[window_id] = doc
        named = not UNTITLED.match(doc.name)
        if before is None:
            return "open" if named else None
        if before.name == doc.name:
            if before.dirty and not doc.dirty:
                return "save"
            return None
        if UNTITLED.match(before.name) and named:
            return "save"  # Save As of a new document
        if from_dialog == window_id and named:
            return "save"  # Save As under another name
        return "open" if named else None

    def forget(self, window_id: str) -> None:
        self._docs.pop(window_id, None)


# ---- presence ----------------------------------------------------------------------------------------

WM_WTSSESSION_CHANGE: Final = 0x02B1
WM_POWERBROADCAST: Final = 0x0218

#: WTS session change codes (wParam of WM_WTSSESSION_CHANGE) -> presence kinds. A disconnected session (fast
#: user switching, an RDP client gone) cannot be used: it counts as locked until it is connected again.
WTS_CODES: Final[dict[int, PresenceKind]] = {
    0x1: "Unlock",  # WTS_CONSOLE_CONNECT
    0x2: "Lock",  # WTS_CONSOLE_DISCONNECT
    0x3: "Unlock",  # WTS_REMOTE_CONNECT
    0x4: "Lock",  # WTS_REMOTE_DISCONNECT
    0x5: "Logon",  # WTS_SESSION_LOGON
    0x6: "Logoff",  # WTS_SESSION_LOGOFF
    0x7: "Lock",  # WTS_SESSION_LOCK
    0x8: "Unlock",  # WTS_SESSION_UNLOCK
}

#: Power broadcast codes (wParam of WM_POWERBROADCAST) -> presence kinds.
PBT_CODES: Final[dict[int, PresenceKind]] = {
    0x4: "Suspend",  # PBT_APMSUSPEND
    0x6: "Resume",  # PBT_APMRESUMECRITICAL
    0x7: "Resume",  # PBT_APMRESUMESUSPEND (after user input)
    0x12: "Resume",  # PBT_APMRESUMEAUTOMATIC (always, first)
}


def presence_kind(message: int, wparam: int) -> PresenceKind | None:
    """The presence kind of a window message, or None for messages and codes that are not presence."""
    if message == WM_WTSSESSION_CHANGE:
        return WTS_CODES.get(wparam)
    if message == WM_POWERBROADCAST:
        return PBT_CODES.get(wparam)
    return None


class PresenceDebouncer:
    """Drops presence notifications that change nothing.

    Guarantee: ``Lock``/``Unlock`` and ``Suspend``/``Resume`` come out alternating (a lock followed by the
    console disconnect of fast user switching is one Lock; PBT_APMRESUMEAUTOMATIC followed by
    PBT_APMRESUMESUSPEND is one Resume); ``Logoff`` also ends a lock; ``Logon`` comes out once per logoff.
    The first Unlock/Resume without a prior Lock/Suspend is dropped (the agent was not running then).
    """

    def __init__(self) -> None:
        self._locked = False
        self._suspended = False
        self._logged_on = True

    def accept(self, kind: PresenceKind) -> bool:
        if kind == "Lock":
            changed, self._locked = not self._locked, True
        elif kind == "Unlock":
            changed, self._locked = self._locked, False
        elif kind == "Suspend":
            changed, self._suspended = not self._suspended, True
        elif kind == "Resume":
            changed, self._suspended = self._suspended, False
        elif kind == "Logoff":
            changed, self._logged_on, self._locked = self._logged_on, False, False
        else:  # Logon
            changed, self._logged_on = not self._logged_on, True
        return changed


# ---- input and idle ----------------------------------------------------------------------------------


def idle_from_ticks(now_ticks: int, last_input_ticks: int) -> int:
    """Milliseconds since the last input from GetTickCount and LASTINPUTINFO.dwTime, both 32-bit tick
    counts that wrap every 49.7 days."""
    return (now_ticks - last_input_ticks) & 0xFFFFFFFF


def input_class(injected: bool) -> InputClass:
    return "injected" if injected else "hardware"


# ---- the snapshot ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """The foreground window's process as the platform layer read it."""

    pid: int = 0
    exe_path: str = ""
    version: str = ""


def app_name(exe_path: str) -> str:
    """The program name: the executable's file name ("chrome.exe")."""
    return re.split(r"[\\/]", exe_path)[-1] if exe_path else ""


def describe_window(
    *,
    ts: datetime,
    window_id: str,
    window: Any,
    title: str,
    process: ProcessInfo,
    focused: Any | None = None,
    fields: FieldTracker | None = None,
    address_bars: AddressBars | None = None,
    input: InputClass = "none",
) -> WindowSnapshot:
    """The snapshot of a foreground window. ``fields`` is given only in extended mode; without it no field
    is visited at all. ``address_bars`` remembers browsers' address bars between calls."""
    exe = process.exe_path
    app = app_name(exe)
    tab = url = sheet = file_path = ""
    browser = browser_of(app)
    if browser is not None:
        tab = tab_title(title)
        url = (address_bars.url(window_id, window, browser) if address_bars is not None
               else browser_url(window, browser))
    elif is_excel(app):
        file_path = excel_workbook(title)
        sheet = excel_sheet(window)
    else:
        doc = parse_document_title(app, title)
        file_path = doc.name if doc is not None else ""
    return WindowSnapshot(
        ts=ts,
        window_id=window_id,
        app=app,
        app_version=process.version,
        exe_path=exe,
        pid=process.pid,
        title=title,
        tab=tab,
        url=url,
        file_path=file_path,
        sheet=sheet,
        hierarchy=hierarchy(window, focused),
        fields=fields.read(window_id, window) if fields is not None else None,
        input=input,
    )
