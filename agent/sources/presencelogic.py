"""Platform-free interpretation of Linux session and power signals (logind, screen savers) and of the
session type. Pure: no D-Bus, no clock; :mod:`agent.sources.linuxpresence` feeds it what the buses say.

The signals (names and signatures as the real services send them):

- ``org.freedesktop.login1.Session.Lock()`` / ``Unlock()`` on our session's object path (system bus):
  Lock / Unlock (``loginctl lock-session``, GNOME and KDE lock through it);
- ``org.freedesktop.login1.Manager.PrepareForSleep(b)`` on ``/org/freedesktop/login1``: true = Suspend,
  false = Resume;
- ``org.freedesktop.login1.Manager.SessionRemoved(so)``: our session's path = Logoff;
  ``PrepareForShutdown(b)`` true = Logoff (the session ends with the machine);
- ``ActiveChanged(b)`` of ``org.freedesktop.ScreenSaver`` (KDE, Xfce, LXQt), ``org.gnome.ScreenSaver``,
  ``org.mate.ScreenSaver``, ``org.cinnamon.ScreenSaver`` (session bus): true = Lock, false = Unlock. A
  screen saver that only blanks without locking is taken as a lock too: the user is away either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from agent.observations import ObservationSink, PresenceKind

LOGIN1: Final = "org.freedesktop.login1"
LOGIN1_PATH: Final = "/org/freedesktop/login1"
LOGIN1_MANAGER: Final = "org.freedesktop.login1.Manager"
LOGIN1_SESSION: Final = "org.freedesktop.login1.Session"
LOGIN1_USER: Final = "org.freedesktop.login1.User"
#: Screen-saver interfaces that send ``ActiveChanged(b)``, with their usual object paths.
SCREENSAVERS: Final[dict[str, str]] = {
    "org.freedesktop.ScreenSaver": "/org/freedesktop/ScreenSaver",
    "org.gnome.ScreenSaver": "/org/gnome/ScreenSaver",
    "org.mate.ScreenSaver": "/org/mate/ScreenSaver",
    "org.cinnamon.ScreenSaver": "/org/cinnamon/ScreenSaver",
}


class PresenceWatcher(Protocol):
    """What a platform source needs of a presence watcher it runs beside itself."""

    async def run(self, emit: ObservationSink) -> None: ...

    def stop(self) -> None: ...


def presence_kind(
    interface: str, member: str, path: str, body: Sequence[Any], session_path: str | None
) -> PresenceKind | None:
    """The presence change one D-Bus signal means for the session at ``session_path`` (None: unknown
    session, then only machine-wide and screen-saver signals count), or None when it means none."""
    if interface == LOGIN1_SESSION:
        if session_path is None or path != session_path:
            return None
        return {"Lock": "Lock", "Unlock": "Unlock"}.get(member)  # type: ignore[return-value]
    if interface == LOGIN1_MANAGER:
        if member == "PrepareForSleep" and len(body) == 1:
            return "Suspend" if body[0] else "Resume"
        if member == "PrepareForShutdown" and len(body) == 1:
            return "Logoff" if body[0] else None
        if member == "SessionRemoved" and len(body) == 2 and session_path is not None:
            return "Logoff" if body[1] == session_path else None
        return None
    if interface in SCREENSAVERS and member == "ActiveChanged" and len(body) == 1:
        return "Lock" if body[0] else "Unlock"
    return None


class PresenceDeduper:
    """Several services report one change (logind's Lock and the screen saver's ActiveChanged for one
    lock): only state changes pass.

    Guarantees: a Lock while locked, an Unlock while unlocked, a Suspend while suspended, a Resume while
    awake and a second Logoff are dropped; before the first signal the state is unknown, so the first one
    of each pair passes (the agent may start while the screen is locked)."""

    #: Each pair of opposite signals, by the state its first member sets.
    _PAIRS: Final = {"Lock": ("locked", True), "Unlock": ("locked", False),
                     "Suspend": ("asleep", True), "Resume": ("asleep", False)}

    def __init__(self) -> None:
        self._state: dict[str, bool] = {}  # "locked", "asleep": absent until the first signal
        self._logged_off = False

    def accept(self, kind: PresenceKind) -> bool:
        pair = self._PAIRS.get(kind)
        if pair is not None:
            name, value = pair
            if self._state.get(name) is value:
                return False
            self._state[name] = value
            return True
        if kind == "Logoff":
            if self._logged_off:
                return False
            self._logged_off = True
            return True
        return True
        return True


def session_type(environ: Mapping[str, str]) -> str:
    """The kind of graphical session: ``XDG_SESSION_TYPE`` when set (``x11``, ``wayland``, ``tty``, ...),
    else ``wayland`` when ``WAYLAND_DISPLAY`` is set, ``x11`` when ``DISPLAY`` is, else ""."""
    declared = environ.get("XDG_SESSION_TYPE", "").strip().lower()
    if declared:
        return declared
    if environ.get("WAYLAND_DISPLAY"):
        return "wayland"
    if environ.get("DISPLAY"):
        return "x11"
    return ""


def wayland_warning(environ: Mapping[str, str]) -> str | None:
    """What the agent tells the log on Wayland: the X11 source sees XWayland windows only."""
    if session_type(environ) != "wayland":
        return None
    if environ.get("DISPLAY"):
        return (
            "Wayland session: only XWayland windows are visible to the agent (native Wayland windows are "
            "not observed and count as the last X11 window or none)"
        )
    return "Wayland session without XWayland (DISPLAY unset): no window or input can be observed"


__all__ = [
    "LOGIN1", "LOGIN1_MANAGER", "LOGIN1_PATH", "LOGIN1_SESSION", "SCREENSAVERS", "PresenceDeduper",
    "PresenceWatcher",
    "presence_kind", "session_type", "wayland_warning",
]
