"""Recorded UI Automation element trees for the Windows source's platform-free tests: look-alikes of
``uiautomation`` Controls shaped like what Inspect.exe shows for Chrome, Firefox, Excel, Notepad."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

SECRET = "hunter2-Sup3rSecret"
_ids = itertools.count(1)


class Fake:
    """A uiautomation Control look-alike that counts Value-pattern calls."""

    def __init__(
        self, ctype: str, name: str = "", *children: Fake, cls: str = "", aid: str = "",
        value: str | None = None, password: bool = False, selected: bool = False, focused: bool = False,
    ) -> None:
        self.ControlTypeName = ctype + "Control"
        self.Name = name
        self.ClassName = cls
        self.AutomationId = aid
        self.IsPassword = password
        self.HasKeyboardFocus = focused
        self._value = value
        self._selected = selected
        self.children = list(children)
        self.parent: Fake | None = None
        self.value_reads = 0
        self.rid = next(_ids)
        for c in children:
            c.parent = self

    def GetChildren(self) -> list[Fake]:
        return list(self.children)

    def GetParentControl(self) -> Fake | None:
        return self.parent

    def GetRuntimeId(self) -> list[int]:
        return [42, self.rid]

    def GetValuePattern(self) -> Any:
        self.value_reads += 1
        return SimpleNamespace(Value=self._value)

    def GetSelectionItemPattern(self) -> Any:
        return SimpleNamespace(IsSelected=self._selected)


def all_nodes(root: Fake) -> list[Fake]:
    out = [root]
    for c in root.children:
        out += all_nodes(c)
    return out


# ---- browsers: the address bar of each ---------------------------------------------------------------


def chrome_window(title: str = "Inbox - Google Chrome", url: str = "mail.example.com/inbox?x=1") -> Fake:
    page = Fake(
        "Document", "Inbox",
        # a page with its own toolbar and text box: never to be taken for the address bar
        Fake("ToolBar", "Editor toolbar", Fake("Edit", "Search mail", value="from:bob")),
        Fake("Edit", "Password", value=SECRET, password=True),
    )
    omnibox = Fake("Edit", "Address and search bar", cls="OmniboxViewViews", value=url, focused=True)
    return Fake(
        "Window", title,
        Fake("Pane", "", page),
        Fake("Pane", "", Fake("Pane", "", Fake("ToolBar", "", Fake("Button", "Back"), omnibox))),
        cls="Chrome_WidgetWin_1",
    )


def firefox_window(url: str = "https://www.mozilla.org/en-US/?utm_source=x#top") -> Fake:
    return Fake(
        "Window", "Mozilla \u2014 Mozilla Firefox",
        Fake("Document", "Mozilla", Fake("Edit", "Search", value="page search")),
        Fake("ToolBar", "Navigation", Fake("ComboBox", "", Fake(
            "Edit", "Search with Google or enter address", aid="urlbar-input", value=url,
        )), aid="nav-bar"),
        cls="MozillaWindowClass",
    )
