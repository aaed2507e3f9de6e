"""Who and where the agent runs: the stable agent id, the account, the computer and the time zone.

``agent_id`` is a UUID kept in ``<state_dir>/agent_id`` (written atomically). The per-agent ``seq`` is not
kept here but in the spool database, in the same transaction as the events that use it (see
:mod:`agent.spool`): an event exists on disk exactly when its seq was consumed, so a crash can never lead to
a seq being sent twice with different content.

Time zone detection, without extra dependencies (documented in ``agent/README.md``):
``TZ`` environment variable (an IANA name), then ``/etc/timezone``, then the ``/etc/localtime`` symlink
target (``.../zoneinfo/Area/City``); on Windows the Windows zone name from ``tzutil /g`` mapped with a
small built-in table of common zones (the unicode CLDR mapping); ``UTC`` when nothing is found.
"""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

AGENT_VERSION = "0.1.0"


@dataclass(frozen=True, slots=True)
class Identity:
    """The envelope fields that do not change while the agent runs (``tz`` names an IANA zone; the
    recorder derives each event's ``utc_offset_min`` from it)."""

    agent_id: str
    user: str
    domain: str
    host: str
    host_domain: str = ""
    tz: str = "UTC"
    agent_version: str = AGENT_VERSION


def load_or_create_agent_id(state_dir: Path) -> str:
    """The UUID in ``state_dir/agent_id``, created (atomically, fsynced) on first use."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "agent_id"
    try:
        text = path.read_text(encoding="ascii").strip()
        return str(uuid.UUID(text))
    except FileNotFoundError:
        pass
    except ValueError:
        # a damaged file: keep it for inspection, start a new installation id
        path.replace(path.with_suffix(".corrupt"))
    new = str(uuid.uuid4())
    write_agent_id(state_dir, new)
    return new


def write_agent_id(state_dir: Path, agent_id: str) -> None:
    """Replace ``state_dir/agent_id`` atomically (temp file, fsync, rename)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / "agent_id.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(agent_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(state_dir / "agent_id")


# ---- account and computer -------------------------------------------------------------------------------


def detect_identity(agent_id: str, env: Mapping[str, str] | None = None) -> Identity:
    """The running session's identity. On Windows: ``USERNAME``/``USERDOMAIN`` (the computer name for
    local accounts) and ``COMPUTERNAME`` with ``USERDNSDOMAIN`` or the workgroup; elsewhere the login,
    the host's short name as both account domain and host, and the DNS domain of the host, if any."""
    env = os.environ if env is None else env
    if sys.platform == "win32":
        user = env.get("USERNAME") or getpass.getuser()
        host = env.get("COMPUTERNAME") or platform.node()
        domain = env.get("USERDOMAIN") or host
        host_domain = env.get("USERDNSDOMAIN", "") or _windows_workgroup()
    else:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = env.get("USER", "unknown")
        fqdn = socket.getfqdn()
        node = platform.node() or fqdn
        host = node.split(".", 1)[0]
        host_domain = fqdn.split(".", 1)[1] if "." in fqdn and not fqdn.endswith(".localdomain") else ""
        if "." in node:
            host_domain = host_domain or node.split(".", 1)[1]
        # a local account: the computer name stands for the domain (events.md)
        domain = env.get("DESKTRACE_ACCOUNT_DOMAIN") or host
    return Identity(
        agent_id=agent_id, user=user, domain=domain, host=host, host_domain=host_domain, tz=detect_tz(env)
    )


def _windows_workgroup() -> str:  # pragma: no cover - Windows only
    try:
        out = subprocess.run(
            ["wmic", "computersystem", "get", "domain"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.split()
        return out[1] if len(out) > 1 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# ---- time zone --------------------------------------------------------------------------------------------

#: Common Windows zone names -> IANA (CLDR windowsZones "001" territory). Unknown names fall back to UTC.
WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Calcutta",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "E. South America Standard Time": "America/Sao_Paulo",
    "SA Pacific Standard Time": "America/Bogota",
    "South Africa Standard Time": "Africa/Johannesburg",
}


def _valid(name: str) -> str | None:
    name = name.strip().lstrip(":")
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def detect_tz(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> str:
    """The session's IANA time zone name (see the module docstring for the order tried)."""
    env = os.environ if env is None else env
    tz = _valid(env.get("TZ", ""))
    if tz:
        return tz
    if sys.platform == "win32":  # pragma: no cover - Windows only
        try:
            win = subprocess.run(
                ["tzutil", "/g"], capture_output=True, text=True, timeout=5, check=False
            ).stdout
            return WINDOWS_ZONES.get(win.strip().removesuffix("_dstoff"), "UTC")
        except (OSError, subprocess.SubprocessError):
            return "UTC"
    try:
        tz = _valid((root / "etc" / "timezone").read_text(encoding="utf-8"))
        if tz:
            return tz
    except OSError:
        pass
    try:
        target = os.readlink(root / "etc" / "localtime")
        if "zoneinfo/" in target:
            tz = _valid(target.split("zoneinfo/", 1)[1])
            if tz:
                return tz
    except OSError:
        pass
    return "UTC"


def identity_to_dict(identity: Identity) -> dict[str, object]:
    return dict(msgspec.to_builtins(identity))
