"""Session and power notifications, and idle time, platform-free (the Windows source's presence part)."""

from __future__ import annotations

from typing import Final

from agent.observations import PresenceKind

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


def idle_from_ticks(now_ticks: int, last_input_ticks: int) -> int:
    """Milliseconds since the last input from GetTickCount and LASTINPUTINFO.dwTime, both 32-bit tick
    counts that wrap every 49.7 days."""
    return (now_ticks - last_input_ticks) & 0xFFFFFFFF
