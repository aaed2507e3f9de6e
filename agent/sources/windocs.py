"""Documents and Excel, platform-free: which document a window shows, document opens and saves, the
Excel workbook and its active sheet.

Opens and saves are told from window-title transitions (``*``/``●`` unsaved markers, untitled names, the
common Save As dialog); the active Excel sheet from the worksheet grid (``EXCEL7``, whose UIA name is the
sheet name) or the selected ``TabItem`` of the sheet tab bar. :class:`DocumentTracker` can be seeded with
the documents windows showed before the agent started, and exports its state, so that neither a start nor
a restart reports documents that were already open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from agent.sources.wintree import attr, children, control_type, first, is_selected, walk

# ---- Excel -------------------------------------------------------------------------------------------

_EXCEL_SUFFIX = re.compile(r"\s+[-\u2013\u2014]\s+(Microsoft\s+)?Excel(\s+\(.*\))?$")
_EXCEL_DECOR = re.compile(
    r"\s+(\[(Read-Only|Compatibility Mode|Group|Shared)\]|\s*-\s*(Saved|Saving\u2026))+$"
)
_NOT_IN_GRID = ("DataGrid", "Table", "Document")


def is_excel(exe_name: str) -> bool:
    return re.split(r"[\\/]", exe_name)[-1].lower() == "excel.exe"


def excel_workbook(window_title: str) -> str:
    """The workbook name from an Excel window title ("Budget.xlsx - Excel" -> "Budget.xlsx"); Excel shows
    only the file name, so this is what ``file_path`` can carry for Excel."""
    title, found = _EXCEL_SUFFIX.subn("", window_title.strip())
    if not found:
        return ""
    return _EXCEL_DECOR.sub("", title).strip()


def _skip_grid(el: Any) -> bool:
    return control_type(el) in _NOT_IN_GRID


def find_excel_grid(window: Any) -> Any | None:
    return first(window, lambda el: attr(el, "ClassName") == "EXCEL7", skip=_skip_grid)


def selected_sheet_tab(window: Any) -> str:
    """The name of the selected ``TabItem`` of Excel's sheet tab bar, "" when none is found."""
    for tabs, _ in walk(window, skip=_skip_grid):
        if control_type(tabs) != "Tab":
            continue
        for item in children(tabs):
            if control_type(item) == "TabItem" and is_selected(item):
                return str(attr(item, "Name"))
    return ""


def excel_sheet(window: Any) -> str:
    """The active sheet of an Excel window: the worksheet grid's name, else the selected sheet tab."""
    grid = find_excel_grid(window)
    if grid is not None and attr(grid, "Name"):
        return str(attr(grid, "Name"))
    return selected_sheet_tab(window)


class ExcelSheets:
    """Remembers each Excel window's grid element, so that re-reading the active sheet (at every sheet
    switch, which changes no window title) is one property read, not a tree search.

    Guarantee: :meth:`sheet` returns what :func:`excel_sheet` would; a remembered grid that no longer has a
    name is searched for again."""

    def __init__(self, max_windows: int = 64) -> None:
        self.max_windows = max_windows
        self._grids: dict[str, Any] = {}

    def sheet(self, window_id: str, window: Any) -> str:
        grid = self._grids.get(window_id)
        if grid is not None:
            name = attr(grid, "Name")
            if name:
                return str(name)
        grid = find_excel_grid(window)
        if grid is not None and attr(grid, "Name"):
            self._grids.pop(window_id, None)
            self._grids[window_id] = grid
            while len(self._grids) > self.max_windows:
                self._grids.pop(next(iter(self._grids)))
            return str(attr(grid, "Name"))
        self._grids.pop(window_id, None)
        return selected_sheet_tab(window)

    def forget(self, window_id: str) -> None:
        self._grids.pop(window_id, None)


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
      document without a Save dialog in between; never for a window :meth:`seed`-ed with that document
      (it was open before the agent started) or restored by :meth:`load` with it;
    - ``save`` when the unsaved-changes marker disappears from the same document; when an untitled
      document gets a name (Save As); and when the foreground returns from a Save dialog to a document
      window under another name;
    - nothing for any other title change.
    """

    def __init__(self) -> None:
        self._docs: dict[str, DocumentTitle] = {}
        self._save_dialog_for: str | None = None
        self._last_window: str | None = None

    def seed(self, window_id: str, exe_name: str, title: str) -> None:
        """Remember what a window showed before the agent watched it (no event)."""
        doc = parse_document_title(exe_name, title)
        if doc is not None:
            self._docs.setdefault(window_id, doc)

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

    def dump(self) -> dict[str, list[Any]]:
        """The state to persist: window id -> [document name, dirty]."""
        return {wid: [d.name, d.dirty] for wid, d in self._docs.items()}

    def load(self, state: dict[str, list[Any]]) -> None:
        """Restore :meth:`dump`'s output (entries of windows that no longer exist must be left out)."""
        for wid, (name, dirty) in state.items():
            self._docs[wid] = DocumentTitle(name=str(name), dirty=bool(dirty))
