"""The agent's settings: flag ``--spool-max-bytes`` = ``DESKTRACE_SPOOL_MAX_BYTES`` = TOML ``spool_max_bytes``
(top level or in an ``[agent]`` table), through :mod:`common.settings`."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from common.settings import (
    HELP,
    KafkaSettings,
    NonNegativeFloat,
    PositiveFloat,
    SettingsError,
    add_arguments,
    load,
)

SECTION = "agent"


class AgentSettings(KafkaSettings, kw_only=True):
    """Everything ``desktrace-agent`` reads (Kafka, never PostgreSQL). Lists may be given as TOML arrays or
    comma-separated text. Bad values are refused when the settings are built (msgspec constraints)."""

    state_dir: str = ""
    spool_max_bytes: Annotated[int, Meta(ge=64 * 1024)] = 64 * 1024 * 1024
    heartbeat_s: PositiveFloat = 60.0
    hid_interval_s: PositiveFloat = 60.0
    extended_mode: bool = False
    field_max_chars: Annotated[int, Meta(ge=1)] = 256
    extended_web_fields: bool = False
    privacy_include_apps: str | list[str] = ""
    privacy_exclude_apps: str | list[str] = ""
    privacy_include_domains: str | list[str] = ""
    privacy_exclude_domains: str | list[str] = ""
    privacy_redact: str | list[str] = ""
    privacy_keep_query: bool = False
    privacy_default_redact_off: str | list[str] = ""
    compression_type: Literal["gzip", "none", "lz4", "zstd", "snappy"] = "gzip"
    batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 500
    retry_max_s: PositiveFloat = 30.0
    linger_s: NonNegativeFloat = 300.0
    source: str = "auto"
    sim_speed: float = 10.0
    sim_seed: int = 1

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
    "spool_max_bytes": "bound of the on-disk spool in bytes; when full, the oldest HID events go first, then "
    "UI events, heartbeats last; a larger event is refused",
    "heartbeat_s": "seconds between Heartbeat events",
    "hid_interval_s": "HID throttling interval M in seconds (hid-throttle.md)",
    "extended_mode": "also record editable field values (never passwords)",
    "field_max_chars": "extended mode: longest field value recorded, in characters (longer values are cut)",
    "extended_web_fields": "extended mode: also read fields inside web pages (off: browser UI only)",
    "privacy_include_apps": "if set, only these programs are recorded (comma-separated)",
    "privacy_exclude_apps": "programs whose windows are never recorded (comma-separated)",
    "privacy_include_domains": "if set, only pages of these web domains are recorded (comma-separated)",
    "privacy_exclude_domains": "web domains whose pages are never recorded (comma-separated)",
    "privacy_redact": "regexes replaced in titles and URLs (TOML array, JSON array, one per line)",
    "privacy_keep_query": "keep URL query strings (dropped by default)",
    "privacy_default_redact_off": "default redaction rules to turn off (comma-separated): email, url_query, "
    "long_digits, iban (docs/privacy.md)",
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


#: Settings whose values are secrets: never on a command line, never in an autostart file, read from files
#: only the owner can read (``kafka_password_file``).
SECRET_SETTINGS = ("kafka_password",)


def load_agent_settings(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> AgentSettings:
    """Defaults < TOML (top level, then ``[agent]``) < ``DESKTRACE_*`` < flags.

    Secrets stay private: a ``kafka_password_file``, or a settings file that holds a secret, that its group
    or other users may read is refused with a :class:`SettingsError` saying to ``chmod 600`` it."""
    env = os.environ if env is None else env
    settings = load(AgentSettings, args, section=SECTION, env=env)
    if settings.kafka_password_file:
        check_private_file(Path(settings.kafka_password_file), "kafka_password_file")
    config = (getattr(args, "config", None) if args is not None else None) or env.get("DESKTRACE_CONFIG")
    if config and _toml_has_secret(Path(config)):
        check_private_file(Path(config), "the settings file (it holds kafka_password)")
    return settings


def check_private_file(path: Path, what: str) -> None:
    """Refuse (``SettingsError``) a secret file its group or other users can read or write (POSIX only;
    on Windows the per-user profile's ACL protects it)."""
    if sys.platform == "win32":
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise SettingsError(
            f"{what} {path} is readable by other users (mode {mode & 0o777:o}): it holds a secret; "
            f"run chmod 600 {path}"
        )


def _toml_has_secret(path: Path) -> bool:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False  # load() has reported it already
    section = data.get(SECTION)
    tables = [data, section if isinstance(section, dict) else {}]
    return any(t.get(name) for t in tables for name in SECRET_SETTINGS)
