"""The platform-free part of the Windows source in one namespace (tests and tools import it as ``wl``).

It is split by subject, each module tested without Windows on recorded UI Automation trees:

- :mod:`agent.sources.wintree`: bounded tree walks, element properties, the window hierarchy;
- :mod:`agent.sources.winbrowser`: browsers, tab titles, address bars and URLs, tab strips;
- :mod:`agent.sources.windocs`: document opens and saves, Excel workbooks and sheets;
- :mod:`agent.sources.winfields`: extended-mode parameters read on focus changes;
- :mod:`agent.sources.winshell`: shell surfaces that are never recorded;
- :mod:`agent.sources.winpresence`: session/power notifications and idle time;
- :mod:`agent.sources.windesk`: the desk state machine that turns hook events into snapshots.
"""

from __future__ import annotations

from agent.sources.winbrowser import (
    BROWSERS,
    AddressBars,
    Tabs,
    TabStrips,
    browser_of,
    browser_url,
    find_address_bar,
    normalise_url,
    tab_title,
)
from agent.sources.windesk import DeskWatcher, WindowInfo, app_name
from agent.sources.windocs import (
    DOCUMENT_APPS,
    DocumentTitle,
    DocumentTracker,
    ExcelSheets,
    excel_sheet,
    excel_workbook,
    is_excel,
    parse_document_title,
)
from agent.sources.winfields import FocusFields
from agent.sources.winpresence import (
    WM_POWERBROADCAST,
    WM_WTSSESSION_CHANGE,
    PresenceDebouncer,
    idle_from_ticks,
    presence_kind,
)
from agent.sources.winshell import is_shell_surface
from agent.sources.wintree import control_type, hierarchy, walk

__all__ = [
    "BROWSERS", "DOCUMENT_APPS", "WM_POWERBROADCAST", "WM_WTSSESSION_CHANGE", "AddressBars", "DeskWatcher",
    "DocumentTitle", "DocumentTracker", "ExcelSheets", "FocusFields", "PresenceDebouncer", "TabStrips",
    "Tabs", "WindowInfo", "app_name", "browser_of", "browser_url", "control_type", "excel_sheet",
    "excel_workbook",
    "find_address_bar", "hierarchy", "idle_from_ticks", "is_excel", "is_shell_surface", "normalise_url",
    "parse_document_title", "presence_kind", "tab_title", "walk",
]
