"""The Windows time zone through tzlocal (CLDR's windowsZones table), testable on Linux: the mapping covers
zones the old 30-entry table turned into UTC, and every name it gives is a zone the agent can load."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tzlocal
from tzlocal.windows_tz import win_tz

from agent import identity


@pytest.mark.parametrize(
    ("windows", "iana"),
    [
        ("Ekaterinburg Standard Time", "Asia/Yekaterinburg"),  # none of these were in the old table
        ("Nepal Standard Time", "Asia/Katmandu"),
        ("Iran Standard Time", "Asia/Tehran"),
        ("Cen. Australia Standard Time", "Australia/Adelaide"),
        ("Morocco Standard Time", "Africa/Casablanca"),
        ("W. Europe Standard Time", "Europe/Berlin"),
    ],
)
def test_windows_zone_names_map_to_iana(windows: str, iana: str) -> None:
    assert identity.windows_zone_to_iana(windows) == iana


def test_every_mapped_zone_loads() -> None:
    assert len(win_tz) > 130  # all Windows zones, not a hand-picked few
    for name in set(win_tz.values()):
        ZoneInfo(name)


def test_windows_tz_uses_tzlocal_and_falls_back_to_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tzlocal, "get_localzone_name", lambda: "Asia/Yekaterinburg")
    assert identity.windows_tz() == "Asia/Yekaterinburg"

    def unknown() -> str:
        raise LookupError("Can not find timezone Foo Standard Time")

    monkeypatch.setattr(tzlocal, "get_localzone_name", unknown)
    assert identity.windows_tz() == "UTC"


def test_no_wmic() -> None:
    assert "wmic" not in Path(identity.__file__).read_text(encoding="utf-8").replace("``wmic`` is gone", "")


def test_control_characters_in_the_os_identity_do_not_stop_the_agent() -> None:
    """Event construction refuses an identity field with a control character (as every consumer's decoder
    does): the agent replaces them once, when it reads its identity, instead of failing every event."""
    from datetime import UTC, datetime

    from proto.events import Heartbeat

    odd = "corp\x07lab\x85"
    env = {"DESKTRACE_ACCOUNT_DOMAIN": odd, "USERDOMAIN": odd, "USERNAME": "ann", "COMPUTERNAME": "pc",
           "USERDNSDOMAIN": "corp.example", "TZ": "UTC"}  # the Linux and the Windows names
    ident = identity.detect_identity("a-1", env)
    assert ident.domain == "corp\ufffdlab\ufffd"
    assert identity.identity_text("x" * 2000) == "x" * 1024
    Heartbeat(agent_id=ident.agent_id, seq=1, ts=datetime(2026, 3, 2, tzinfo=UTC), input="none",
              user=ident.user, domain=ident.domain, host=ident.host, last_input_ts=None)
    with pytest.raises(ValueError, match="domain"):
        Heartbeat(agent_id="a-1", seq=1, ts=datetime(2026, 3, 2, tzinfo=UTC), input="none",
                  user="ann", domain="corp\x07", host="pc", last_input_ts=None)
