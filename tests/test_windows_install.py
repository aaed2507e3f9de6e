"""The Windows install: the Task Scheduler XML (parsed and checked against the Task Scheduler schema's
elements and constraints), the user-only settings file, and no secret in any argv, the XML or the output."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from agent import cli
from agent import install_windows as iw
from agent.settings import AgentSettings, load_agent_settings

SECRET = "s3cr3t-Kafka-pa$$word"
NS = {"t": iw.TASK_NS}
ENV = {"USERNAME": "alice", "USERDOMAIN": "CONTOSO"}


def env_for(tmp_path: Path) -> dict[str, str]:
    return {**ENV, "LOCALAPPDATA": str(tmp_path / "AppData" / "Local")}

# The Task Scheduler schema (taskschedulerschema.xsd, version 1.2) for the elements the task uses: each
# parent's allowed children (every complexType here is an xs:all or a sequence of optional elements, each
# at most once), the required ones, and the simple types' value patterns.
SCHEMA_CHILDREN: dict[str, set[str]] = {
    "Task": {"RegistrationInfo", "Triggers", "Settings", "Data", "Principals", "Actions"},
    "RegistrationInfo": {"URI", "SecurityDescriptor", "Source", "Date", "Author", "Version", "Description",
                         "Documentation"},
    "Triggers": {"BootTrigger", "RegistrationTrigger", "IdleTrigger", "TimeTrigger", "EventTrigger",
                 "LogonTrigger", "SessionStateChangeTrigger", "CalendarTrigger"},
    "LogonTrigger": {"Enabled", "StartBoundary", "EndBoundary", "Repetition", "ExecutionTimeLimit", "Delay",
                     "UserId"},
    "Principals": {"Principal"},
    "Principal": {"UserId", "LogonType", "GroupId", "DisplayName", "RunLevel", "ProcessTokenSidType",
                  "RequiredPrivileges"},
    "Settings": {"AllowStartOnDemand", "RestartOnFailure", "MultipleInstancesPolicy",
                 "DisallowStartIfOnBatteries", "StopIfGoingOnBatteries", "AllowHardTerminate",
                 "StartWhenAvailable", "NetworkProfileName", "RunOnlyIfNetworkAvailable", "WakeToRun",
                 "Enabled", "Hidden", "DeleteExpiredTaskAfter", "IdleSettings", "NetworkSettings",
                 "ExecutionTimeLimit", "Priority", "RunOnlyIfIdle", "UseUnifiedSchedulingEngine",
                 "DisallowStartOnRemoteAppSession"},
    "IdleSettings": {"Duration", "WaitTimeout", "StopOnIdleEnd", "RestartOnIdle"},
    "RestartOnFailure": {"Interval", "Count"},
    "Actions": {"Exec", "ComHandler", "SendEmail", "ShowMessage"},
    "Exec": {"Command", "Arguments", "WorkingDirectory"},
}
SCHEMA_REQUIRED = {"Task": {"Actions"}, "RestartOnFailure": {"Interval", "Count"}, "Exec": {"Command"},
                   "Actions": {"Exec"}}
BOOLEANS = {"Enabled", "AllowStartOnDemand", "DisallowStartIfOnBatteries", "StopIfGoingOnBatteries",
            "AllowHardTerminate", "StartWhenAvailable", "RunOnlyIfNetworkAvailable", "WakeToRun", "Hidden",
            "RunOnlyIfIdle", "StopOnIdleEnd", "RestartOnIdle"}
ENUMS = {"MultipleInstancesPolicy": {"Parallel", "Queue", "IgnoreNew", "StopExisting"},
         "LogonType": {"S4U", "Password", "InteractiveToken", "InteractiveTokenOrPassword", "None"},
         "RunLevel": {"LeastPrivilege", "HighestAvailable"}}
DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def duration(text: str) -> timedelta:
    m = DURATION.match(text)
    assert m and text not in ("P", "PT"), f"not an xs:duration the scheduler accepts: {text}"
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def local(tag: str) -> str:
    ns, _, name = tag.rpartition("}")
    assert ns == "{" + iw.TASK_NS, f"{tag} is not in the task namespace"
    return name


def check_schema(el: ET.Element) -> None:
    name = local(el.tag)
    kids = [local(c.tag) for c in el]
    if name in SCHEMA_CHILDREN:
        assert set(kids) <= SCHEMA_CHILDREN[name], (name, set(kids) - SCHEMA_CHILDREN[name])
        if name not in ("Triggers", "Actions", "Principals"):
            assert len(kids) == len(set(kids)), f"{name}: an element twice"
    assert SCHEMA_REQUIRED.get(name, set()) <= set(kids), (name, "misses", SCHEMA_REQUIRED[name])
    text = (el.text or "").strip()
    if name in BOOLEANS:
        assert text in ("true", "false"), (name, text)
    if name in ENUMS:
        assert text in ENUMS[name], (name, text)
    if name in ("ExecutionTimeLimit", "Interval"):
        duration(text)
    for c in el:
        check_schema(c)


def parse(xml_bytes: bytes) -> ET.Element:
    return ET.fromstring(xml_bytes)


def text(root: ET.Element, path: str) -> str:
    found = root.find(path, NS)
    assert found is not None, path
    return (found.text or "").strip()


def make_xml(user: str = "CONTOSO\\alice", command: str = r"C:\Python312\pythonw.exe") -> ET.Element:
    xml = iw.task_xml(user=user, command=command, arguments='-m agent.cli run --config "C:\\x\\agent.toml"',
                      working_dir=r"C:\x")
    return parse(xml.encode("utf-16"))


def test_task_xml_is_valid_against_the_schema_and_says_what_the_agent_needs() -> None:
    root = make_xml()
    check_schema(root)
    assert local(root.tag) == "Task" and root.get("version") in ("1.2", "1.3", "1.4")
    # the installing user's logon only, in that user's session
    assert text(root, "t:Triggers/t:LogonTrigger/t:UserId") == "CONTOSO\\alice"
    assert len(root.findall("t:Triggers/*", NS)) == 1
    assert text(root, "t:Principals/t:Principal/t:UserId") == "CONTOSO\\alice"
    assert text(root, "t:Principals/t:Principal/t:LogonType") == "InteractiveToken"
    assert text(root, "t:Principals/t:Principal/t:RunLevel") == "LeastPrivilege"
    # no console window, restarted on failure, no battery conditions, no time limit, one instance
    assert text(root, "t:Actions/t:Exec/t:Command").lower().endswith("pythonw.exe")
    assert text(root, "t:Actions/t:Exec/t:Arguments").startswith("-m agent.cli run --config ")
    interval = duration(text(root, "t:Settings/t:RestartOnFailure/t:Interval"))
    assert timedelta(minutes=1) <= interval <= timedelta(days=31)  # the scheduler's bounds
    assert 1 <= int(text(root, "t:Settings/t:RestartOnFailure/t:Count")) <= 999
    assert text(root, "t:Settings/t:DisallowStartIfOnBatteries") == "false"
    assert text(root, "t:Settings/t:StopIfGoingOnBatteries") == "false"
    assert duration(text(root, "t:Settings/t:ExecutionTimeLimit")) == timedelta(0)
    assert text(root, "t:Settings/t:MultipleInstancesPolicy") == "IgnoreNew"
    assert text(root, "t:Settings/t:IdleSettings/t:StopOnIdleEnd") == "false"
    assert text(root, "t:Principals/t:Principal").strip() == "" and root.find(
        "t:Principals/t:Principal", NS).get("id") == root.find("t:Actions", NS).get("Context")


def test_task_xml_escapes_names_and_paths() -> None:
    root = make_xml(user="R&D\\o'brien<x>", command=r"C:\Program Files\A&B\pythonw.exe")
    check_schema(root)
    assert text(root, "t:Triggers/t:LogonTrigger/t:UserId") == "R&D\\o'brien<x>"
    assert text(root, "t:Actions/t:Exec/t:Command") == r"C:\Program Files\A&B\pythonw.exe"


class Recorder:
    """subprocess.run stand-in: records every argv and what the config file held at that moment."""

    def __init__(self, config: Path, fail: str = "") -> None:
        self.config = config
        self.fail = fail
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        held = self.config.read_text(encoding="utf-8") if self.config.exists() else None
        self.calls.append((list(argv), held))
        code = 1 if self.fail and argv[0] == self.fail else 0
        return subprocess.CompletedProcess(list(argv), code, "", "access denied" if code else "")


@pytest.fixture
def interpreter(tmp_path: Path) -> str:
    scripts = tmp_path / "venv" / "Scripts"
    scripts.mkdir(parents=True)
    (scripts / "python.exe").write_bytes(b"")
    (scripts / "pythonw.exe").write_bytes(b"")
    return str(scripts / "python.exe")


def settings(tmp_path: Path) -> AgentSettings:
    return AgentSettings(state_dir=str(tmp_path / "state"), kafka_bootstrap="kafka.corp:9093",
                         kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                         kafka_username="agent", kafka_password=SECRET, extended_mode=True)


def test_install_keeps_secrets_off_every_command_line(tmp_path: Path, interpreter: str) -> None:
    s = settings(tmp_path)
    env = env_for(tmp_path)
    home = iw.install_dir(env)
    config = home / iw.CONFIG_FILE
    run = Recorder(config)
    lines: list[str] = []
    assert iw.install(s, env=env, executable=interpreter, run=run, out=lines.append, err=lines.append) == 0
    argvs = [argv for argv, _ in run.calls]
    assert argvs == [
        ["icacls", str(config), "/inheritance:r", "/grant:r", "CONTOSO\\alice:(R,W,D)"],
        ["schtasks", "/Create", "/TN", "desktrace-agent", "/XML", str(home / iw.TASK_FILE), "/F"],
    ]
    assert run.calls[0][1] == ""  # restricted while still empty
    assert not any(SECRET in a for argv in argvs for a in argv)
    assert all(len(subprocess.list2cmdline(argv)) < 262 for argv in argvs)
    raw = (home / iw.TASK_FILE).read_bytes()
    assert raw.startswith(b"\xff\xfe")  # UTF-16 with a BOM, as the XML declaration says
    root = parse(raw)
    check_schema(root)
    assert SECRET not in raw.decode("utf-16") and SECRET not in "\n".join(lines)
    assert text(root, "t:Actions/t:Exec/t:Command") == str(Path(interpreter).with_name("pythonw.exe"))
    # the installed agent reads its settings back from the file, the password included
    assert tomllib.loads(config.read_text(encoding="utf-8"))["agent"]["kafka_password"] == SECRET
    back = load_agent_settings(None, env={"DESKTRACE_CONFIG": str(config)})
    assert (back.kafka_password, back.kafka_bootstrap) == (SECRET, "kafka.corp:9093")
    assert back.extended_mode
    assert back.state_path == s.state_path  # a state_dir of its own: the settings file still at the default
    assert home == tmp_path / "AppData" / "Local" / "desktrace" != s.state_path


def test_install_stops_when_the_file_cannot_be_restricted(tmp_path: Path, interpreter: str) -> None:
    s = settings(tmp_path)
    env = env_for(tmp_path)
    config = iw.install_dir(env) / iw.CONFIG_FILE
    run = Recorder(config, fail="icacls")
    errors: list[str] = []
    assert iw.install(s, env=env, executable=interpreter, run=run, out=print, err=errors.append) == 1
    assert [argv[0] for argv, _ in run.calls] == ["icacls"]
    assert config.read_text(encoding="utf-8") == ""
    assert "icacls failed" in errors[-1]


def test_dry_run_and_uninstall(tmp_path: Path, interpreter: str) -> None:
    s = settings(tmp_path)
    env = env_for(tmp_path)
    home = iw.install_dir(env)
    lines: list[str] = []
    run = Recorder(home / iw.CONFIG_FILE)
    assert iw.install(s, dry_run=True, env=env, executable=interpreter, run=run, out=lines.append) == 0
    assert run.calls == [] and not home.exists()
    assert "schtasks /Create /TN desktrace-agent /XML" in "\n".join(lines) and SECRET not in "\n".join(lines)
    assert iw.install(s, env=env, executable=interpreter, run=run, out=lines.append) == 0
    assert (home / iw.CONFIG_FILE).exists()
    assert iw.uninstall(env=env, run=run, out=lines.append) == 0
    assert run.calls[-1][0] == ["schtasks", "/Delete", "/TN", "desktrace-agent", "/F"]
    assert not (home / iw.CONFIG_FILE).exists() and not (home / iw.TASK_FILE).exists()


def test_install_needs_pythonw_and_a_user(tmp_path: Path) -> None:
    (tmp_path / "python.exe").write_bytes(b"")
    with pytest.raises(ValueError, match=r"pythonw\.exe"):
        iw.pythonw_for(str(tmp_path / "python.exe"))
    with pytest.raises(ValueError, match="USERNAME"):
        iw.user_id({})


def test_cli_windows_branch_dry_run(
    tmp_path: Path, interpreter: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "executable", interpreter)
    for k, v in env_for(tmp_path).items():
        monkeypatch.setenv(k, v)
    code = cli.main(["install", "--dry-run", "--state-dir", str(tmp_path / "s"), "--kafka-password", SECRET])
    out = capsys.readouterr().out
    assert code == 0 and "<LogonTrigger>" in out and "pythonw.exe" in out and SECRET not in out
