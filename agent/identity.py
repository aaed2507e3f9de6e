"""Who and where the agent runs: the stable agent id, the account, the computer and the time zone.

``agent_id`` is a UUID kept in ``<state_dir>/agent_id`` (written atomically). The per-agent ``seq`` is not
kept here but in the spool database, in the same transaction as the events that use it (see
:mod:`agent.spool`): an event exists on disk exactly when its seq was consumed, so a crash can never lead to
a seq being sent twice with different content.

Time zone detection (documented in ``agent/README.md``):
``TZ`` environment variable (an IANA name), then ``/etc/timezone``, then the ``/etc/localtime`` symlink
target (``.../zoneinfo/Area/City``); on Windows ``tzlocal`` (registry ``TimeZoneKeyName`` mapped with
CLDR's windowsZones table, every zone); ``UTC`` when nothing is found.
"""

from __future__ import annotations

import getpass
import logging
import os
import platform
import re
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

AGENT_VERSION = "0.1.0"

log = logging.getLogger("desktrace.agent")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


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
        agent_id=agent_id,
        user=identity_text(user),
        domain=identity_text(domain),
        host=identity_text(host),
        host_domain=identity_text(host_domain),
        tz=detect_tz(env),
    )


def identity_text(value: str) -> str:
    """``value`` as an identity field may hold it (``proto.events.IdentityStr``): control characters
    replaced by U+FFFD and at most 1,024 characters. An event is refused when it is built with one, and a
    broker-side consumer would dead-letter all of them: better one odd but consistent name."""
    return _CONTROL.sub("\ufffd", value)[:1024]


def _windows_workgroup() -> str:  # pragma: no cover - Windows only
    """The computer's domain or workgroup (NetGetJoinInformation; ``wmic`` is gone in Windows 11 24H2)."""
    try:
        from agent.sources.win32 import Win32

        return Win32().workgroup()
    except OSError:
        return ""


# ---- time zone --------------------------------------------------------------------------------------------

def windows_tz() -> str:
    """The session's IANA zone on Windows: tzlocal reads the registry's ``TimeZoneKeyName`` and maps it with
    CLDR's windowsZones table (every Windows zone, kept up to date by tzlocal's releases); UTC only when
    even that fails, with a warning."""
    try:
        import tzlocal

        name = _valid(tzlocal.get_localzone_name() or "")
    except Exception as exc:  # tzlocal raises ZoneInfoNotFoundError/LookupError for unknown zones
        log.warning("time zone not found, using UTC", extra={"kv": {"error_class": type(exc).__name__}})
        return "UTC"
    return name or "UTC"


def windows_zone_to_iana(windows_name: str) -> str | None:
    """A Windows zone name ("Ekaterinburg Standard Time") as IANA, from tzlocal's CLDR table."""
    from tzlocal.windows_tz import win_tz

    return win_tz.get(windows_name)


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
        return windows_tz()
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
