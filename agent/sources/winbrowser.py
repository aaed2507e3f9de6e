"""Browsers, platform-free: which programs are browsers, the active tab's title, the address bar and URL,
and the tab strip (which tab is selected, which tabs exist).

How the address bar is found (language independent: no localized names are used):

- Chrome, Edge (and other Chromium browsers: Brave, Vivaldi, Opera): the element whose ``ClassName`` is
  ``OmniboxViewViews`` (Chromium's views expose their class names through UIA); fallback: the first
  ``Edit`` inside a ``ToolBar``.
- Firefox: the element whose ``AutomationId`` is ``urlbar-input``; fallback as above.

The tab strip is the first ``Tab`` element outside page content that holds ``TabItem`` elements; a tab is
identified by its UI Automation runtime id (stable while the tab exists), the selected one by its
SelectionItem pattern. Searches never enter ``Document`` elements (the page itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from agent.sources.wintree import attr, control_type, first, is_password, is_selected, key, read_value, walk

Browser = Literal["chromium", "firefox"]

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
        found = first(window, lambda el: attr(el, "ClassName") == "OmniboxViewViews")
    else:
        found = first(window, lambda el: attr(el, "AutomationId") == "urlbar-input")
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


def browser_url(window: Any, browser: Browser) -> str:
    bar = find_address_bar(window, browser)
    if bar is None or is_password(bar):
        return ""
    return normalise_url(read_value(bar) or "")


class _Cache:
    """Per-window element cache, bounded (oldest window dropped first)."""

    def __init__(self, max_windows: int) -> None:
        self.max_windows = max_windows
        self.items: dict[str, Any] = {}

    def put(self, window_id: str, el: Any) -> None:
        self.items.pop(window_id, None)
        self.items[window_id] = el
        while len(self.items) > self.max_windows:
            self.items.pop(next(iter(self.items)))

    def forget(self, window_id: str) -> None:
        self.items.pop(window_id, None)


class AddressBars(_Cache):
    """Remembers each browser window's address bar element, so a window's tree is searched once, not at
    every read.

    Guarantee: :meth:`url` returns what :func:`browser_url` would; a remembered element that no longer
    answers is searched for again. At most ``max_windows`` windows are remembered (oldest dropped first).
    """

    def __init__(self, max_windows: int = 256) -> None:
        super().__init__(max_windows)

    def url(self, window_id: str, window: Any, browser: Browser) -> str:
        bar = self.items.get(window_id)
        if bar is not None:
            value = read_value(bar)
            if value is not None:
                return normalise_url(value)
        bar = find_address_bar(window, browser)
        if bar is None or is_password(bar):
            self.forget(window_id)
            return ""
        self.put(window_id, bar)
        return normalise_url(read_value(bar) or "")

    def editing(self, window_id: str) -> bool:
        """True while the window's address bar has the keyboard focus: what it shows then is being typed,
        not the page's URL."""
        bar = self.items.get(window_id)
        return bar is not None and bool(attr(bar, "HasKeyboardFocus", False))


@dataclass(frozen=True, slots=True)
class Tabs:
    """A browser window's tab strip as read: every tab's identity, and the selected one's ("" if none)."""

    keys: frozenset[str]
    selected: str


def _tab_items(strip: Any) -> list[Any]:
    return [el for el, _ in walk(strip, max_depth=3, max_nodes=400) if control_type(el) == "TabItem"]


def _is_strip(el: Any) -> bool:
    return control_type(el) == "Tab" and bool(_tab_items(el))


def tab_key(item: Any) -> str:
    k = key(item)
    return ".".join(str(p) for p in k) if isinstance(k, tuple) else str(k)


class TabStrips(_Cache):
    """Finds each browser window's tab strip once and reads it.

    Guarantee: :meth:`read` returns the tabs of the strip (``None`` when the window has none: a pop-up,
    an app window); a remembered strip that no longer has tabs is searched for again."""

    def __init__(self, max_windows: int = 256) -> None:
        super().__init__(max_windows)

    def read(self, window_id: str, window: Any) -> Tabs | None:
        strip = self.items.get(window_id)
        items = _tab_items(strip) if strip is not None else []
        if not items:
            strip = first(window, _is_strip)
            if strip is None:
                self.forget(window_id)
                return None
            self.put(window_id, strip)
            items = _tab_items(strip)
        keys = [tab_key(it) for it in items]
        selected = next((k for k, it in zip(keys, items, strict=True) if is_selected(it)), "")
        return Tabs(keys=frozenset(keys), selected=selected)
