"""The Windows shell surfaces that are never recorded (the product's "events not recorded"): the desktop,
the taskbar, the Start menu, the search panel, the lock screen, and the shell's own overlays.

Decided from the foreground window's class name and executable, both language independent:

- desktop: ``Progman`` and ``WorkerW`` (explorer.exe's desktop windows);
- taskbar: ``Shell_TrayWnd`` (primary), ``Shell_SecondaryTrayWnd`` (other monitors), the notification area
  overflow ``NotifyIconOverflowWindow`` and the clock/calendar flyouts;
- Start menu, search panel, notification centre, task view: CoreWindows (``Windows.UI.Core.CoreWindow``) of
  ``StartMenuExperienceHost.exe``, ``SearchHost.exe`` / ``SearchApp.exe`` / ``SearchUI.exe`` (Windows 10),
  ``ShellExperienceHost.exe``, and ``XamlExplorerHostIslandWindow`` (Windows 11 task view, Alt+Tab);
- lock screen: ``LockApp.exe`` (and ``LogonUI.exe``).

Ordinary explorer.exe windows (``CabinetWClass``, File Explorer) are recorded.
"""

from __future__ import annotations

import re
from typing import Final

SHELL_CLASSES: Final = frozenset({
    "Progman", "WorkerW", "Shell_TrayWnd", "Shell_SecondaryTrayWnd", "NotifyIconOverflowWindow",
    "TopLevelWindowForOverflowXamlIsland", "XamlExplorerHostIslandWindow", "MultitaskingViewFrame",
    "ForegroundStaging", "TaskListThumbnailWnd",
})
SHELL_PROGRAMS: Final = frozenset({
    "startmenuexperiencehost.exe", "searchhost.exe", "searchapp.exe", "searchui.exe",
    "shellexperiencehost.exe", "lockapp.exe", "logonui.exe",
})


def is_shell_surface(class_name: str, exe_path: str) -> bool:
    """True when a foreground window is a shell surface that is not recorded (see the module docstring)."""
    if class_name in SHELL_CLASSES:
        return True
    return re.split(r"[\\/]", exe_path)[-1].lower() in SHELL_PROGRAMS
