"""Start the agent at every logon on Linux: an XDG autostart Desktop Entry (default) or a systemd user unit.

Both files hold the command line of ``desktrace-agent run`` and nothing secret (the caller passes secrets
as ``--kafka-password-file``; :func:`refuse_secrets` checks). The quoting follows the two formats exactly:

- Desktop Entry (``Exec`` key, Desktop Entry Specification 1.5, "The Exec key"): an argument with a
  reserved character (space, tab, newline, ``" ' \\ > < ~ | & ; $ * ? # ( )`` and backtick) is put in
  double quotes, and inside them ``" ` $ \\`` get a backslash; ``%`` is written ``%%`` (field codes);
  then the whole value is escaped as a key-file string (``\\`` -> ``\\\\``, newline -> ``\\n``), so a
  backslash in an argument ends up as four in the file. GLib (``gio launch``) gives the program back the
  exact argv (tests/test_install_linux.py checks it through GLib itself).
- systemd (``ExecStart=``, systemd.service(5) "Command lines"): every argument in double quotes with
  C-style escapes (``\\\\``, ``\\"``, ``\\n``), ``%`` as ``%%`` (specifiers) and ``$`` as ``$$`` (variable
  expansion).

Pure text builders plus small file helpers; :mod:`agent.cli` decides what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

DESKTOP_FILE = "desktrace-agent.desktop"
UNIT_FILE = "desktrace-agent.service"

#: Characters that make an Exec argument need quotes (Desktop Entry Specification, "The Exec key").
EXEC_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")


class SecretInCommand(ValueError):
    """A secret would be written into an autostart command line; pass it as a file instead."""


def config_home(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME`` or ``~/.config``."""
    env = os.environ if env is None else env
    return Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"


def autostart_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the autostart entry goes: ``$XDG_CONFIG_HOME/autostart/desktrace-agent.desktop``."""
    return config_home(env) / "autostart" / DESKTOP_FILE


def unit_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the user unit goes: ``$XDG_CONFIG_HOME/systemd/user/desktrace-agent.service``."""
    return config_home(env) / "systemd" / "user" / UNIT_FILE


def secret_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where ``install`` keeps secrets (mode 0700; each file 0600): ``$XDG_CONFIG_HOME/desktrace``."""
    return config_home(env) / "desktrace"


# ---- Desktop Entry ------------------------------------------------------------------------------------


def exec_quote(arg: str) -> str:
    """One argument of an ``Exec`` line, before the key-file escaping of the whole value."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in EXEC_RESERVED for c in arg):
        return arg
    inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{inner}"'


def keyfile_escape(value: str) -> str:
    """A key-file ``string`` value: backslash, newline, tab and carriage return escaped."""
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    )


def exec_line(cmd: Sequence[str]) -> str:
    """The value of ``Exec=`` that makes a spec-following launcher run exactly ``cmd``."""
    if not cmd:
        raise ValueError("empty command")
    return keyfile_escape(" ".join(exec_quote(c) for c in cmd))


def desktop_entry(cmd: Sequence[str]) -> str:
    """An XDG autostart entry running ``cmd`` at logon (hidden from menus)."""
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Version=1.5\n"
        "Name=desktrace agent\n"
        "Comment=Records workstation activity for working-time reports\n"
        f"Exec={exec_line(cmd)}\n"
        "Terminal=false\n"
        "NoDisplay=true\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


# ---- systemd user unit --------------------------------------------------------------------------------


#: ``ExecStart=`` escapes: C escapes for backslash, quote, newline and tab; ``%%`` and ``$$`` (specifiers,
#: variables).
_SYSTEMD_ESCAPES: Final = str.maketrans(
    {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "%": "%%", "$": "$$"}
)


def systemd_quote(arg: str) -> str:
    """One argument of ``ExecStart=``: double-quoted, C escapes, ``%%`` and ``$$``."""
    return '"' + arg.translate(_SYSTEMD_ESCAPES) + '"'


def systemd_unit(cmd: Sequence[str]) -> str:
    """A user service running ``cmd`` in the graphical session, restarted if it fails."""
    if not cmd:
        raise ValueError("empty command")
    return (
        "[Unit]\n"
        "Description=desktrace agent (workstation activity for working-time reports)\n"
        "PartOf=graphical-session.target\n"
        "After=graphical-session.target\n"
        "\n"
        "[Service]\n"
        "Type=exec\n"
        f"ExecStart={' '.join(systemd_quote(c) for c in cmd)}\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "\n"
        "[Install]\n"
        "WantedBy=graphical-session.target\n"
    )


# ---- secrets ------------------------------------------------------------------------------------------


def refuse_secrets(cmd: Iterable[str], secrets: Iterable[str]) -> None:
    """Raise :class:`SecretInCommand` when any non-empty secret appears in any argument of ``cmd``."""
    values = [s for s in secrets if s]
    for arg in cmd:
        if any(s in arg for s in values):
            raise SecretInCommand(
                "refusing to write a secret into the autostart command line (it would be readable in the "
                "file and in every process listing); pass it with --kafka-password-file"
            )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (file 0600, new directories 0700), atomically:
    the content is never on disk with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):  # POSIX; on Windows the per-user profile's ACL protects the file
            os.fchmod(fd, 0o600)  # an existing tmp file keeps its mode on O_CREAT: set it
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_public(path: Path, text: str) -> None:
    """Write a non-secret file atomically (autostart entry, unit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


__all__ = [
    "DESKTOP_FILE", "EXEC_RESERVED", "UNIT_FILE", "SecretInCommand", "autostart_path", "config_home",
    "desktop_entry", "exec_line", "exec_quote", "keyfile_escape", "refuse_secrets", "secret_dir",
    "systemd_quote", "systemd_unit", "unit_path", "write_private", "write_public",
]
