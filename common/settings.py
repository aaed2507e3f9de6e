"""Settings with the same names everywhere: flag ``--gap`` = variable ``DESKTRACE_GAP`` = TOML key ``gap``.

Precedence, lowest first: the Struct's defaults, the TOML file (top-level keys, then the table named after
the service, e.g. ``[stream]``), ``DESKTRACE_*`` environment variables, command-line flags. The file is
``--config PATH`` or ``DESKTRACE_CONFIG``; it is optional. A setting ending in ``_file`` whose plain twin is
empty fills the twin from that file (secrets: ``kafka_password_file`` -> ``kafka_password``).
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta

ENV_PREFIX = "DESKTRACE_"
S = TypeVar("S", bound=msgspec.Struct)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting and its three spellings."""


def spellings(name: str) -> str:
    return f"--{name.replace('_', '-')} / {ENV_PREFIX}{name.upper()} / {name} in the TOML file"


#: Constrained field types: validation is by msgspec constraints (checked when the Struct is built from a
#: file, the environment or flags), not by ``__post_init__``.
PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]

#: Settings that more than one service has with a different meaning (``batch_size`` is events per batch in
#: the stream, records per transaction in a sink, spooled events per send in the agent): they are read from
#: the service's own TOML table only; at the top level of the file they are refused with a clear error.
PER_SERVICE_KEYS = frozenset({"batch_size", "metrics_addr", "retry_max_s"})

#: Former names, refused with a message naming the one name (no aliases: one setting, one name).
RENAMED = {
    "exclude_apps": "privacy_exclude_apps",
    "exclude_domains": "privacy_exclude_domains",
}


class LogSettings(msgspec.Struct, kw_only=True):
    """How a command logs (structured JSON by default)."""

    log_level: str = "INFO"
    log_format: str = "json"


class KafkaSettings(LogSettings, kw_only=True):
    """Settings of every Kafka client (the agent, the stream, the sinks, the gateway): no database."""

    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = ""
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_username: str = ""
    kafka_password: str = ""
    kafka_password_file: str = ""
    kafka_ca_file: str = ""


class CommonSettings(KafkaSettings, kw_only=True):
    """Settings every server-side service reads: Kafka and PostgreSQL."""

    pg_dsn: str = ""
    pg_dsn_file: str = ""


HELP: dict[str, str] = {
    "kafka_bootstrap": "Kafka bootstrap servers, host:port[,host:port]",
    "pg_dsn": "PostgreSQL DSN (postgresql://user:pass@host:port/db)",
    "pg_dsn_file": "file holding the PostgreSQL DSN (keeps its password out of the environment)",
    "topic_prefix": "prefix of every topic name (empty in production; isolates test pipelines)",
    "kafka_security_protocol": "PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN",
    "kafka_username": "SASL user name",
    "kafka_password": "SASL password (prefer kafka_password_file)",
    "kafka_password_file": "file holding the SASL password",
    "kafka_ca_file": "CA certificate (PEM) that signed the brokers' certificates",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "log_format": "json (default) or text",
    "config": "optional TOML settings file",
}


def add_arguments(
    parser: argparse.ArgumentParser, cls: type[msgspec.Struct], help_: Mapping[str, str] = HELP
) -> None:
    """Add one ``--flag`` per field of ``cls`` (default ``None``: unset flags do not override)."""
    existing = {a.dest for a in parser._actions}
    if "config" not in existing:
        parser.add_argument("--config", metavar="PATH", default=None, help=HELP["config"])
    for f in msgspec.structs.fields(cls):
        if f.name in existing:
            continue
        shown = None if f.default is msgspec.NODEFAULT else f.default
        text = help_.get(f.name, f.name.replace("_", " "))
        text += f" (env {ENV_PREFIX}{f.name.upper()}; default {shown!r})"
        flag = f"--{f.name.replace('_', '-')}"
        if f.type is bool:
            parser.add_argument(
                flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar="VALUE", help=text)


def load(
    cls: type[S],
    args: argparse.Namespace | None = None,
    section: str | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> S:
    """Build ``cls`` from defaults < TOML < environment < flags; raises :class:`SettingsError`."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_path or (getattr(args, "config", None) if args else None) or env.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(
                f"settings file {path} does not exist (from --config / DESKTRACE_CONFIG)"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from None
        top = {k: v for k, v in data.items() if not isinstance(v, dict)}
        misplaced = sorted(k for k in top if k in PER_SERVICE_KEYS and k in cls.__struct_fields__)
        if misplaced:
            raise SettingsError(
                f"settings file {path}: {', '.join(misplaced)} differs per service; put it in the service's "
                f"table ([{section or 'service'}]), not at the top level"
            )
        values.update(top)
        if section and isinstance(data.get(section), dict):
            values.update(data[section])
        _refuse_renamed(values, f"settings file {path}", cls.__struct_fields__)
    fields = set(cls.__struct_fields__)
    _refuse_renamed(
        {k[len(ENV_PREFIX):].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)},
        "environment",
        fields,
    )
    for name in fields:
        raw = env.get(f"{ENV_PREFIX}{name.upper()}")
        if raw is not None and raw != "":
            values[name] = raw
    if args is not None:
        for name in fields:
            v = getattr(args, name, None)
            if v is not None:
                values[name] = v
    values = {k: v for k, v in values.items() if k in fields}
    for name in list(fields):
        if name.endswith("_file") and values.get(name) and name[:-5] in fields and not values.get(name[:-5]):
            try:
                values[name[:-5]] = Path(values[name]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(f"cannot read {name} ({spellings(name)}): {exc.strerror}") from None
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"bad setting: {exc} (set it with {spellings(_field_of(exc))})") from None


def _refuse_renamed(values: Mapping[str, Any], where: str, fields: Collection[str]) -> None:
    for old, new in RENAMED.items():
        if new in fields and values.get(old) not in (None, ""):
            raise SettingsError(
                f"{where}: {old} is not a setting any more; use {new} ({spellings(new)}), which it was "
                "another name of"
            )


def _field_of(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if "`$." in text:
        return text.split("`$.", 1)[1].split("`", 1)[0].split("[", 1)[0]
    return "?"
