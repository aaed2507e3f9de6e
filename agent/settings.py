"""The agent's settings: flag ``--spool-max-bytes`` = ``DESKTRACE_SPOOL_MAX_BYTES`` = TOML ``spool_max_bytes``
(top level or in an ``[agent]`` table), through :mod:`common.settings`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from common.settings import HELP, CommonSettings, add_arguments, load

SECTION = "agent"


class AgentSettings(CommonSettings, kw_only=True):
    """Everything ``desktrace-agent`` reads. Lists may be given as TOML arrays or comma-separated text."""

    state_dir: str = ""
    spool_max_bytes: int = 64 * 1024 * 1024
    heartbeat_s: float = 60.0
    hid_interval_s: float = 60.0
    extended_mode: bool = False
    field_max_chars: int = 256
    extended_web_fields: bool = False
    # short names of privacy_exclude_apps / privacy_exclude_domains (docs/privacy.md): agent.privacy reads
    # both pairs and joins them
    exclude_apps: str | list[str] = ""
    exclude_domains: str | list[str] = ""
    privacy_include_apps: str | list[str] = ""
    privacy_exclude_apps: str | list[str] = ""
    privacy_include_domains: str | list[str] = ""
    privacy_exclude_domains: str | list[str] = ""
    privacy_redact: str | list[str] = ""
    privacy_keep_query: bool = False
    compression_type: str = "gzip"
    batch_size: int = 500
    retry_max_s: float = 30.0
    linger_s: float = 300.0
    source: str = "auto"
    sim_speed: float = 10.0
    sim_seed: int = 1

    def __post_init__(self) -> None:
        if self.spool_max_bytes < 64 * 1024:
            raise ValueError("spool_max_bytes must be at least 65536")
        if self.heartbeat_s <= 0 or self.hid_interval_s <= 0 or self.retry_max_s <= 0:
            raise ValueError("heartbeat_s, hid_interval_s and retry_max_s must be positive")
        if self.compression_type not in ("gzip", "none", "lz4", "zstd", "snappy"):
            raise ValueError("compression_type must be gzip, none, lz4, zstd or snappy")
        if self.field_max_chars < 1:
            raise ValueError("field_max_chars must be at least 1")
        if self.linger_s < 0:
            raise ValueError("linger_s must be 0 or positive")
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size must be between 1 and 10000")

    @property
    def state_path(self) -> Path:
        """``state_dir``, or the platform default: ``%LOCALAPPDATA%\\desktrace`` on Windows,
        ``$XDG_STATE_HOME/desktrace`` (``~/.local/state/desktrace``) elsewhere."""
        return Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if sys.platform == "win32":
        base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "desktrace"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "desktrace"


AGENT_HELP: dict[str, str] = {
    **HELP,
    "state_dir": "directory for the agent id and the spool database (default: per-user state dir)",
    "spool_max_bytes": "bound of the on-disk spool in bytes; when full, the oldest HID events go first",
    "heartbeat_s": "seconds between Heartbeat events",
    "hid_interval_s": "HID throttling interval M in seconds (hid-throttle.md)",
    "extended_mode": "also record editable field values (never passwords)",
    "field_max_chars": "extended mode: longest field value recorded, in characters (longer values are cut)",
    "extended_web_fields": "extended mode: also read fields inside web pages (off: browser UI only)",
    "exclude_apps": "comma-separated program names whose windows are never recorded (short name of "
    "privacy_exclude_apps; both lists apply)",
    "exclude_domains": "comma-separated web domains whose pages are never recorded (short name of "
    "privacy_exclude_domains; both lists apply)",
    "privacy_include_apps": "if set, only these programs are recorded (comma-separated)",
    "privacy_exclude_apps": "programs never recorded (comma-separated; adds to exclude_apps)",
    "privacy_include_domains": "if set, only pages of these web domains are recorded (comma-separated)",
    "privacy_exclude_domains": "web domains never recorded (comma-separated; adds to exclude_domains)",
    "privacy_redact": "regexes replaced in titles and URLs (TOML array, JSON array, one per line)",
    "privacy_keep_query": "keep URL query strings (dropped by default)",
    "compression_type": "Kafka producer compression: gzip (default; no extra dependency), none, lz4, zstd",
    "batch_size": "most spooled events sent in one batch",
    "linger_s": "seconds a partial batch waits in the spool before it is sent (bigger batches compress "
    "better; a full batch and a stop send at once)",
    "retry_max_s": "longest wait between attempts to reach Kafka (exponential backoff with jitter)",
    "source": "observation source: auto (by platform), windows, x11, or simulated (a synthetic user)",
    "sim_speed": "with --source simulated: how much faster than real time the synthetic user acts",
    "sim_seed": "with --source simulated: the synthetic user's random seed",
}


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, AgentSettings, AGENT_HELP)


def load_agent_settings(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> AgentSettings:
    """Defaults < TOML (top level, then ``[agent]``) < ``DESKTRACE_*`` < flags."""
    return load(AgentSettings, args, section=SECTION, env=env)
