"""``desktrace-agent``: run the agent, install/uninstall its autostart, or simulate a fleet of users.

Settings for every command: flags, ``DESKTRACE_*`` variables and a TOML file (``--config``), see
:mod:`agent.settings`. Exit codes: 0 ok, 2 bad settings or arguments, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.install_linux import (
    autostart_path,
    desktop_entry,
    refuse_secrets,
    secret_dir,
    systemd_unit,
    unit_path,
    write_private,
    write_public,
)
from agent.settings import SECRET_SETTINGS, AgentSettings, add_agent_arguments, load_agent_settings
from agent.simulate_cmd import cmd_simulate
from common.logs import setup_logging
from common.settings import SettingsError

log = logging.getLogger("desktrace.agent")

#: The file ``install`` writes a secret given by value (flag, variable, TOML) into, in the secret directory.
KAFKA_PASSWORD_FILE = "kafka_password"  # noqa: S105 (a file name, not a password)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktrace-agent",
        description="desktrace desktop agent: records window and input activity, spools it on disk and "
        "ships it to Kafka.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the agent in this desktop session (foreground)",
        description="Watch this desktop session and ship its activity to Kafka until SIGTERM/SIGINT.",
    )
    add_agent_arguments(run)

    inst = sub.add_parser(
        "install",
        help="start the agent at every logon of this user",
        description="Linux: an XDG autostart entry in ~/.config/autostart (or a systemd user unit with "
        "--systemd); a Kafka password is written to a file only you can read and passed as "
        "--kafka-password-file. Windows: a Task Scheduler task (XML; logon of this user, pythonw.exe, "
        "restarted on failure) whose settings go to a file only this user can read. Settings flags given "
        "here are passed on.",
    )
    inst.add_argument("--dry-run", action="store_true", help="print what would be installed, change nothing")
    inst.add_argument(
        "--systemd",
        action="store_true",
        help="Linux: install a systemd user unit (~/.config/systemd/user/desktrace-agent.service, started "
        "with the graphical session) instead of the XDG autostart entry",
    )
    add_agent_arguments(inst)

    uninst = sub.add_parser(
        "uninstall",
        help="remove the autostart entry or scheduled task (keeps data)",
        description="Remove what 'install' created: the autostart entry and/or systemd user unit, and the "
        "password file install wrote (the spool and agent id stay).",
    )
    uninst.add_argument("--dry-run", action="store_true", help="print what would be removed, change nothing")

    sim = sub.add_parser(
        "simulate",
        help="a fleet of synthetic users, to Kafka (through spool and shipper) or JSON Lines",
        description="Synthetic users with realistic working days run through the agent's recorder and "
        "throttle. Without --jsonl the events go to Kafka through the agent's spool and shipper.",
    )
    sim.add_argument("--users", type=int, default=10, help="number of users (default 10)")
    sim.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated seconds per real second; 0 = as fast as possible (default 60)",
    )
    sim.add_argument(
        "--duration", default="1d", help="simulated time span: 90s, 30m, 8h, 2d, 1w (default 1d)"
    )
    sim.add_argument(
        "--start",
        default=None,
        help="simulated start, ISO date or date-time, UTC unless an offset is given "
        "(default: today 00:00 UTC)",
    )
    sim.add_argument(
        "--date",
        default=None,
        metavar="YYYY-MM-DD",
        help="simulate this local date as a working day of every user, each in their own time zone "
        "(instead of --start/--duration); 'last' = the most recent Monday-Friday over in every zone",
    )
    sim.add_argument(
        "--zones",
        default=None,
        metavar="ZONE,...",
        help="IANA time zones the users live in, in turn (default: eight zones around the world)",
    )
    sim.add_argument(
        "--skip-idle",
        action="store_true",
        help="jump the simulated clock over stretches when no simulated agent runs (nights)",
    )
    sim.add_argument(
        "--progress",
        choices=("plain", "json", "none"),
        default="plain",
        help="Kafka mode: 'plain' = a line on stderr every 5 s (default), 'json' = one JSON object per line "
        "on stdout about five times a second (simulated clock, events produced and sent), 'none'",
    )
    sim.add_argument("--seed", type=int, default=1, help="random seed: same seed, same events (default 1)")
    sim.add_argument(
        "--jsonl",
        metavar="PATH",
        default=None,
        help="write JSON Lines to PATH ('-' = stdout) instead of producing to Kafka",
    )
    add_agent_arguments(sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_agent_settings(args) if args.command != "uninstall" else AgentSettings()
    except SettingsError as exc:
        print(f"desktrace-agent: {exc}", file=sys.stderr)
        return 2
    setup_logging("agent", settings.log_level, settings.log_format)
    if getattr(args, "kafka_password", None):
        print(
            "desktrace-agent: warning: --kafka-password is visible to every user in process listings "
            "(ps, /proc); use --kafka-password-file with a file only you can read (chmod 600)",
            file=sys.stderr,
        )
    try:
        if args.command == "run":
            return cmd_run(settings)
        if args.command == "install":
            return cmd_install(args, settings)
        if args.command == "uninstall":
            return cmd_uninstall(args)
        return cmd_simulate(args, settings)
    except ValueError as exc:
        print(f"desktrace-agent: {exc}", file=sys.stderr)
        return 2


# ---- run ------------------------------------------------------------------------------------------------


def cmd_run(settings: AgentSettings) -> int:
    from agent.observations import Source
    from agent.runner import AgentRuntime

    source: Source
    if settings.source == "simulated":
        from agent.simulator import SimulatedSource

        source = SimulatedSource(seed=settings.sim_seed, speed=settings.sim_speed)
    else:
        from agent.sources import SourceUnavailable, select_source

        try:
            source = select_source(settings)
        except SourceUnavailable as exc:
            print(f"desktrace-agent: {exc}", file=sys.stderr)
            return 1
    runtime = AgentRuntime(settings, source)
    asyncio.run(runtime.run())
    if runtime.source_error is not None:
        print(f"desktrace-agent: the source failed ({type(runtime.source_error).__name__}): see the log; "
              "exiting 1 so that the autostart's restart policy starts the agent again", file=sys.stderr)
        return 1
    return 0


# ---- install / uninstall --------------------------------------------------------------------------------


def _settings_flags(args: argparse.Namespace) -> list[str]:
    """The settings flags given on the command line, to be passed on to ``run``."""
    flags: list[str] = []
    if getattr(args, "config", None):
        flags += ["--config", str(Path(args.config).resolve())]
    for name in AgentSettings.__struct_fields__:
        value = getattr(args, name, None)
        if value is None or name in SECRET_SETTINGS:  # secrets go by file, never on a command line
            continue
        if name.endswith(("_file", "_dir")) and value:
            value = str(Path(value).expanduser().resolve())  # the entry runs from another directory
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def run_command(args: argparse.Namespace) -> list[str]:
    """How the installed entry starts the agent: this interpreter running ``agent.cli run``."""
    return [sys.executable, "-m", "agent.cli", "run", *_settings_flags(args)]


def _secret_flags(args: argparse.Namespace, settings: AgentSettings) -> tuple[list[str], str | None]:
    """Flags that hand the Kafka password to the installed agent by file, and the file ``install`` must
    write for a password given by value (None when there is none to write)."""
    if getattr(args, "kafka_password_file", None):
        return [], None  # a flag given here: passed on with the other flags
    if settings.kafka_password_file:  # from the environment: the entry does not inherit it
        return ["--kafka-password-file", str(Path(settings.kafka_password_file).expanduser().resolve())], None
    if not settings.kafka_password:
        return [], None
    path = secret_dir() / KAFKA_PASSWORD_FILE
    return ["--kafka-password-file", str(path)], str(path)


def cmd_install(args: argparse.Namespace, settings: AgentSettings) -> int:
    if sys.platform == "win32":  # settings, secrets included, go to a user-only file: agent.install_windows
        from agent import install_windows

        return install_windows.install(settings, dry_run=args.dry_run)
    extra, secret_path = _secret_flags(args, settings)
    cmd = run_command(args) + extra
    refuse_secrets(cmd, [getattr(settings, name) for name in SECRET_SETTINGS])
    if secret_path is not None:
        if args.dry_run:
            print(f"# {secret_path} (mode 0600): the Kafka password")
        else:
            write_private(Path(secret_path), settings.kafka_password + "\n")
    return _install_linux(args, settings, cmd)


def _install_linux(args: argparse.Namespace, settings: AgentSettings, cmd: list[str]) -> int:
    """The XDG autostart entry, or with ``--systemd`` a systemd user unit (enabled when a user manager
    answers)."""
    if args.systemd:
        path, text = unit_path(), systemd_unit(cmd)
    else:
        path, text = autostart_path(), desktop_entry(cmd)
    if args.dry_run:
        print(f"# {path}\n{text}", end="")
        return 0
    write_public(path, text)
    settings.state_path.mkdir(parents=True, exist_ok=True)
    if not args.systemd:
        print(f"installed {path} (the agent starts at your next logon; state in {settings.state_path})")
        return 0
    enable = ["systemctl", "--user", "enable", "--now", path.name]
    reload = subprocess.run(["systemctl", "--user", "daemon-reload"], capture_output=True, text=True,
                            check=False) if shutil.which("systemctl") else None
    done = subprocess.run(enable, capture_output=True, text=True, check=False) if reload else None
    if reload is None or reload.returncode != 0 or done is None or done.returncode != 0:
        print(
            f"installed {path}; no systemd user manager answered, so it is not enabled yet: run "
            f"'systemctl --user daemon-reload && {shlex.join(enable)}' in your session "
            "(the session must export DISPLAY to systemd: systemctl --user import-environment DISPLAY)"
        )
        return 0
    print(f"installed and started {path} (starts with the graphical session; state in {settings.state_path})")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    if sys.platform == "win32":
        from agent import install_windows

        return install_windows.uninstall(dry_run=args.dry_run)
    return _uninstall_linux(args)


def _uninstall_linux(args: argparse.Namespace) -> int:
    unit = unit_path()
    paths = [autostart_path(), unit, secret_dir() / KAFKA_PASSWORD_FILE]
    if args.dry_run:
        for path in paths:
            print(f"rm -f {shlex.quote(str(path))}")
        return 0
    if unit.exists() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "--user", "disable", "--now", unit.name], capture_output=True,
                       check=False)
    removed = []
    for path in paths:
        if path.exists():
            path.unlink()
            removed.append(str(path))
    print(f"removed {', '.join(removed)}" if removed else f"nothing to remove ({paths[0]} does not exist)")
    return 0


# ---- simulate -------------------------------------------------------------------------------------------


if __name__ == "__main__":
    raise SystemExit(main())
