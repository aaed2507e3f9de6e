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
