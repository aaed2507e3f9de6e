"""Platform sources: one module per platform, each a :class:`agent.observations.Source`.

- ``windows`` (:mod:`agent.sources.windows`): WinEvent hooks, UI Automation, pynput low-level hooks, WTS
  session and power notifications; all interpretation platform-free (:mod:`agent.sources.winlogic` lists
  the modules; docs/windows-agent.md).
- ``x11`` (:mod:`agent.sources.x11`): EWMH properties, XInput2 raw events, MIT-SCREEN-SAVER; interpretation
  in :mod:`agent.sources.x11logic`; presence from logind and the screen saver over D-Bus
  (:mod:`agent.sources.linuxpresence`, interpretation in :mod:`agent.sources.presencelogic`).

:func:`select_source` picks one at start-up. Sources only watch; they know nothing of events, throttling,
privacy, spooling or Kafka.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from agent.observations import Source
from agent.sources.presencelogic import PresenceWatcher

#: Names ``--source`` accepts (besides ``auto``).
SOURCE_NAMES = ("windows", "x11")


class SourceUnavailable(RuntimeError):
    """No source can run here; the message names what is missing and how to provide it."""


def _setting(settings: Any, name: str, default: Any) -> Any:
    if settings is None:
        return default
    if isinstance(settings, Mapping):
        return settings.get(name, default)
    return getattr(settings, name, default)


def select_source(
    settings: Any = None, *, platform: str | None = None, environ: Mapping[str, str] | None = None
) -> Source:
    """The source for this machine: ``settings.source`` (``auto``, ``windows`` or ``x11``); ``auto`` means
    Windows on win32, X11 on Linux when ``DISPLAY`` is set. Raises :class:`SourceUnavailable` naming what is
    missing otherwise. ``platform`` and ``environ`` default to ``sys.platform`` and ``os.environ``."""
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    wanted = str(_setting(settings, "source", "auto") or "auto").lower()
    if wanted not in ("auto", *SOURCE_NAMES):
        raise SourceUnavailable(
            f"unknown source {wanted!r} (--source / DESKTRACE_SOURCE): use auto, {', '.join(SOURCE_NAMES)}"
        )
    if wanted == "auto":
        if platform == "win32":
            wanted = "windows"
        elif platform.startswith("linux"):
            if not environ.get("DISPLAY"):
                hint = (
                    " (this is a Wayland session: the agent needs XWayland, i.e. DISPLAY set)"
                    if environ.get("WAYLAND_DISPLAY") else ""
                )
                raise SourceUnavailable(
                    "no X display: DISPLAY is not set, and the Linux source watches an X11 server" + hint
                )
            wanted = "x11"
        else:
            raise SourceUnavailable(
                f"no source for platform {platform!r}: the agent supports Windows (win32) and Linux with X11"
            )
    if wanted == "windows":
        if platform != "win32":
            raise SourceUnavailable(f"the windows source needs Windows, this is {platform!r}")
        try:
            from agent.sources.windows import WindowsSource
        except ImportError as exc:
            raise SourceUnavailable(
                f"the windows source needs {exc.name or 'uiautomation and pynput'}: "
                "pip install 'desktrace[agent]'"
            ) from exc
        state_path = _setting(settings, "state_path", None)
        return WindowsSource(
            extended_mode=bool(_setting(settings, "extended_mode", False)),
            field_max_chars=int(_setting(settings, "field_max_chars", 256)),
            web_fields=bool(_setting(settings, "extended_web_fields", False)),
            state_dir=state_path,
        )
    try:
        from agent.sources.x11 import X11Source
    except ImportError as exc:
        raise SourceUnavailable(
            f"the x11 source needs {exc.name or 'python-xlib'}: pip install 'desktrace[agent]'"
        ) from exc
    display = environ.get("DISPLAY", "")
    if not display:
        raise SourceUnavailable("the x11 source needs an X display: DISPLAY is not set")
    return X11Source(display, presence=_linux_presence())


def _linux_presence() -> PresenceWatcher | None:
    """Lock/unlock/suspend/resume/logoff over D-Bus, or None (logged) without jeepney."""
    try:
        from agent.sources.linuxpresence import LinuxPresence
    except ImportError:
        import logging

        logging.getLogger("desktrace.agent.sources").warning(
            "jeepney missing: lock, unlock, suspend and resume are not observed "
            "(pip install 'desktrace[agent]')"
        )
        return None
    return LinuxPresence()


__all__ = ["SOURCE_NAMES", "SourceUnavailable", "select_source"]
