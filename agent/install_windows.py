"""``desktrace-agent install`` / ``uninstall`` on Windows: a Task Scheduler task defined in XML.

The task (registered with ``schtasks /Create /XML FILE``: no command-line length limit, every setting
explicit):

- starts at the logon of the installing user only (``LogonTrigger`` with that ``UserId``; the principal is
  the same user, ``InteractiveToken``: it runs in that user's desktop session, no password stored);
- runs ``pythonw.exe`` (no console window that would kill the agent when closed) with
  ``-m agent.cli run --config FILE``;
- restarts on failure (``RestartOnFailure``: every minute, up to 999 times; the agent exits non-zero when
  its source fails), has no time limit (``ExecutionTimeLimit`` ``PT0S``; the default is 72 hours), no
  battery conditions, and ignores a second start while running (``MultipleInstancesPolicy`` ``IgnoreNew``).

Settings given to ``install`` (flags, ``DESKTRACE_*`` variables, ``--config``) are written to
``%LOCALAPPDATA%\\desktrace\\agent.toml`` (the default state folder, whatever ``state_dir`` says, so that
``uninstall`` finds it), readable only by the installing user (``icacls``: inheritance removed, one grant),
never to the task's command line or any other argv: a Kafka password stays in that file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import msgspec
import tomli_w

from agent.settings import AgentSettings

TASK_NAME = "desktrace-agent"
CONFIG_FILE = "agent.toml"
TASK_FILE = "desktrace-agent-task.xml"
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
#: Settings that are never written: how install itself was configured.
NOT_INSTALLED = frozenset({"state_dir"})

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def user_id(env: Mapping[str, str]) -> str:
    """``DOMAIN\\user`` of the installing user (``USERDOMAIN`` is the computer name for local accounts)."""
    user = env.get("USERNAME", "")
    if not user:
        raise ValueError("USERNAME is not set: run install as the user whose logon starts the agent")
    domain = env.get("USERDOMAIN", "")
    return f"{domain}\\{user}" if domain else user


def install_dir(env: Mapping[str, str]) -> Path:
    """Where the settings file and the task XML live: ``%LOCALAPPDATA%\\desktrace`` (the default state
    folder), whatever ``state_dir`` the agent uses."""
    base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    return Path(base) / "desktrace"


def pythonw_for(executable: str) -> Path:
    """The windowless interpreter next to ``executable`` (a venv's Scripts folder has one too)."""
    exe = Path(executable)
    candidate = exe.with_name("pythonw.exe")
    if candidate.exists():
        return candidate
    raise ValueError(f"{candidate} not found: install the agent with a python.org or venv interpreter, "
                     "which ship pythonw.exe")


def task_xml(*, user: str, command: str, arguments: str, working_dir: str) -> str:
    """The Task Scheduler definition (schema 1.2, Windows 7 and later) of the agent's task."""
    e = escape
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="{TASK_NS}">
  <RegistrationInfo>
    <Author>{e(user)}</Author>
    <Description>desktrace agent: records this user's activity for working-time reports</Description>
    <URI>\\{TASK_NAME}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{e(user)}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{e(user)}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <RunOnlyIfIdle>false</RunOnlyIfIdle>
    <WakeToRun>false</WakeToRun>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Priority>7</Priority>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{e(command)}</Command>
      <Arguments>{e(arguments)}</Arguments>
      <WorkingDirectory>{e(working_dir)}</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
"""


def config_text(settings: AgentSettings) -> str:
    """The settings the task runs with, as TOML (values that differ from the defaults)."""
    defaults = msgspec.to_builtins(AgentSettings())
    values: dict[str, Any] = {
        k: v for k, v in msgspec.to_builtins(settings).items()
        if k not in NOT_INSTALLED and v != defaults.get(k)
    }
    values["state_dir"] = str(settings.state_path)
    return tomli_w.dumps({"agent": values})


def protect_argv(path: Path, user: str) -> list[str]:
    """``icacls``: only ``user`` may read (and replace) the file; inherited permissions removed."""
    return ["icacls", str(path), "/inheritance:r", "/grant:r", f"{user}:(R,W,D)"]


def create_argv(xml_path: Path) -> list[str]:
    return ["schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(xml_path), "/F"]


def delete_argv() -> list[str]:
    return ["schtasks", "/Delete", "/TN", TASK_NAME, "/F"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def install(
    settings: AgentSettings, *, dry_run: bool = False, env: Mapping[str, str] | None = None,
    executable: str | None = None, run: Runner = _run, out: Callable[[str], None] = print,
    err: Callable[[str], None] = _stderr,
) -> int:
    """Write the config (user-only), the task XML, and register the task. 0 ok, 1 a step failed."""
    env = os.environ if env is None else env
    user = user_id(env)
    pythonw = pythonw_for(executable or sys.executable)
    state = install_dir(env)
    config, xml_path = state / CONFIG_FILE, state / TASK_FILE
    xml = task_xml(user=user, command=str(pythonw), arguments=f'-m agent.cli run --config "{config}"',
                   working_dir=str(state))
    steps = [protect_argv(config, user), create_argv(xml_path)]
    if dry_run:
        out(f"# {config} (settings, readable only by {user}; not shown)")
        out(f"# {xml_path}\n{xml}")
        for argv in steps:
            out(subprocess.list2cmdline(argv))
        return 0
    state.mkdir(parents=True, exist_ok=True)
    config.touch(mode=0o600, exist_ok=True)  # POSIX bits too, for the settings check on any platform
    done = run(steps[0])  # restricted while still empty: the settings never sit in a readable file
    if done.returncode != 0:
        err(f"desktrace-agent: icacls failed ({done.stderr.strip()}): {config} not written")
        return 1
    # written in place (truncate + write keeps the file's ACL; a replacing rename would bring the
    # temporary file's inherited one)
    config.write_text(config_text(settings), encoding="utf-8")
    xml_path.write_text(xml, encoding="utf-16")
    done = run(steps[1])
    if done.returncode != 0:
        err(f"desktrace-agent: schtasks failed: {done.stderr.strip()}")
        return 1
    out(f"installed scheduled task {TASK_NAME} (starts at {user}'s logon, restarts on failure; "
        f"settings in {config})")
    return 0


def uninstall(
    *, dry_run: bool = False, env: Mapping[str, str] | None = None, run: Runner = _run,
    out: Callable[[str], None] = print, err: Callable[[str], None] = _stderr,
) -> int:
    """Remove the task and the settings file (it may hold a password); the spool and agent id stay."""
    state = install_dir(os.environ if env is None else env)
    config = state / CONFIG_FILE
    if dry_run:
        out(subprocess.list2cmdline(delete_argv()))
        out(f"del {config}")
        return 0
    done = run(delete_argv())
    config.unlink(missing_ok=True)
    (state / TASK_FILE).unlink(missing_ok=True)
    if done.returncode != 0:
        err(f"desktrace-agent: schtasks failed: {done.stderr.strip()}")
        return 1
    out(f"removed scheduled task {TASK_NAME} and {config}")
    return 0
