"""The Linux autostart, launched for real: `desktrace-agent install` writes a Desktop Entry that GLib's
launcher (`gio launch`, Debian libglib2.0-bin) turns back into exactly the argv the agent was given, and a
systemd user unit that `systemd-analyze verify` accepts; secrets never land in either file."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli import build_parser, main
from agent.install_linux import SecretInCommand, desktop_entry, refuse_secrets, systemd_unit
from agent.privacy import PrivacyFilter
from agent.settings import load_agent_settings
from common.settings import SettingsError
from tests.support.ci import fail_or_skip

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the Linux autostart")

SECRET = "S3cr3t pass%s \\ $HOME"
#: A privacy_redact list as users write it: JSON with regex backslashes and a literal %s.
REDACT = '["\\\\bINV-\\\\d{6}\\\\b", "(?i)patient\\\\s+\\\\w+", "100%s done"]'
#: Arguments with every character the Exec quoting has to get right.
AWKWARD = ["a b", 'q"$x`y', "back\\slash", "it's", "~/x", "tab\there", "new\nline", "", "=eq", "#hash",
           "ünï", "50%", "%%", "%f", "<>|&;*?()"]


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} missing (Debian: {package}; scripts/setup.sh installs it)"
        fail_or_skip(message)
    return path


def _stand_in(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that records its argv (after argv[0]) as JSON, standing in for the Python
    interpreter the entry runs."""
    out = tmp_path / "argv.json"
    prog = tmp_path / "bin" / "python stand-in"
    prog.parent.mkdir()
    prog.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(out)!r}, 'w', encoding='utf-8').write(json.dumps(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    prog.chmod(0o755)
    return prog, out


def _gio_launch(entry: Path, out: Path) -> list[str]:
    gio = _need("gio", "libglib2.0-bin")
    done = subprocess.run(
        [gio, "launch", str(entry)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 30
    while not out.exists() or not out.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "the launched program never wrote its argv"
        time.sleep(0.05)
    time.sleep(0.1)  # written in one call; let it close
    return list(json.loads(out.read_text(encoding="utf-8")))


def test_exec_line_survives_glib_launcher_exactly(tmp_path: Path) -> None:
    prog, out = _stand_in(tmp_path)
    entry = tmp_path / "t.desktop"
    entry.write_text(desktop_entry([str(prog), *AWKWARD, REDACT]), encoding="utf-8")
    assert _gio_launch(entry, out) == [*AWKWARD, REDACT]


def test_installed_entry_runs_the_agent_with_the_exact_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prog, out = _stand_in(tmp_path)
    cfg = tmp_path / "cfg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    monkeypatch.setattr(sys, "executable", str(prog))
    state = tmp_path / "state $dir 100%"
    argv = ["install", "--state-dir", str(state), "--privacy-redact", REDACT,
            "--privacy-exclude-domains", "bank.example, health.example", "--heartbeat-s", "30",
            "--kafka-password", SECRET]
    assert main(argv) == 0
    assert "visible to every user in process listings" in capsys.readouterr().err
    entry = cfg / "autostart" / "desktrace-agent.desktop"
    text = entry.read_text(encoding="utf-8")
    assert "S3cr3t" not in text  # the password is in a file of its own
    secret_file = cfg / "desktrace" / "kafka_password"
    assert secret_file.read_text(encoding="utf-8").strip() == SECRET
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700

    launched = _gio_launch(entry, out)
    assert launched[:3] == ["-m", "agent.cli", "run"]
    assert "--kafka-password" not in launched and all("S3cr3t" not in a for a in launched)
    args = build_parser().parse_args(launched[2:])
    settings = load_agent_settings(args, env={})
    assert settings.state_dir == str(state)
    assert settings.kafka_password == SECRET  # read back from the private file
    assert settings.heartbeat_s == 30
    f = PrivacyFilter.from_settings(settings)
    assert [p.pattern for p in f.redact] == [r"\bINV-\d{6}\b", r"(?i)patient\s+\w+", "100%s done"]
    snap = f.apply(_snap("Invoice 42 - notes; INV-123456 for Patient Smith"))
    assert snap is not None and snap.title == "Invoice 42 - notes; [redacted] for [redacted]"
    assert f.apply(_snap("Login - health.example")) is None

    assert main(["uninstall"]) == 0
    assert not entry.exists() and not secret_file.exists()


def _snap(title: str):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from agent.observations import WindowSnapshot

    return WindowSnapshot(ts=datetime(2024, 5, 6, tzinfo=UTC), window_id="1", title=title)


def test_systemd_user_unit_is_valid_and_holds_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    analyze = _need("systemd-analyze", "systemd")
    prog, _ = _stand_in(tmp_path)
    cfg = tmp_path / "cfg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    monkeypatch.setattr(sys, "executable", str(prog))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no systemctl: the unit is written, not enabled
    assert main(["install", "--systemd", "--privacy-redact", REDACT, "--state-dir", str(tmp_path / "s t"),
                 "--kafka-password", SECRET]) == 0
    unit = cfg / "systemd" / "user" / "desktrace-agent.service"
    text = unit.read_text(encoding="utf-8")
    assert "S3cr3t" not in text and "--kafka-password-file" in text
    assert not (cfg / "autostart" / "desktrace-agent.desktop").exists()
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "desktrace-agent.service" not in done.stderr, done.stderr  # no complaint about our unit
    # the awkward arguments too: quoting that systemd would reject shows here
    awkward = tmp_path / "awkward.service"
    awkward.write_text(systemd_unit([str(prog), *AWKWARD, REDACT]), encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(awkward)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "awkward.service" not in done.stderr, done.stderr
    assert main(["uninstall"]) == 0
    assert not unit.exists()


def test_a_secret_is_never_written_into_a_command() -> None:
    with pytest.raises(SecretInCommand):
        refuse_secrets(["/usr/bin/python", "--kafka-password", "hunter2"], ["hunter2"])
    refuse_secrets(["/usr/bin/python", "--kafka-password-file", "/x"], ["hunter2", ""])


def test_secret_files_readable_by_others_are_refused(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    pw.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        load_agent_settings(env={"DESKTRACE_KAFKA_PASSWORD_FILE": str(pw)})
    pw.chmod(0o600)
    assert load_agent_settings(env={"DESKTRACE_KAFKA_PASSWORD_FILE": str(pw)}).kafka_password == "hunter2"
    toml = tmp_path / "agent.toml"
    toml.write_text('[agent]\nkafka_password = "hunter2"\n')
    toml.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        load_agent_settings(env={"DESKTRACE_CONFIG": str(toml)})
    toml.chmod(0o600)
    assert load_agent_settings(env={"DESKTRACE_CONFIG": str(toml)}).kafka_password == "hunter2"
    plain = tmp_path / "plain.toml"
    plain.write_text("heartbeat_s = 5\n")
    plain.chmod(0o644)  # no secret in it: any mode is fine
    assert load_agent_settings(env={"DESKTRACE_CONFIG": str(plain)}).heartbeat_s == 5


def test_run_refuses_a_world_readable_password_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    pw.chmod(0o640)
    assert main(["run", "--kafka-password-file", str(pw), "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "hunter2" not in err


def test_a_password_file_from_the_environment_is_passed_on_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    pw.chmod(0o600)
    cfg = tmp_path / "cfg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    monkeypatch.setenv("DESKTRACE_KAFKA_PASSWORD_FILE", str(pw))
    assert main(["install", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"--kafka-password-file {pw}" in out and "hunter2" not in out
    assert not (cfg / "desktrace").exists()


def test_systemd_quote_escapes_what_execstart_would_read_otherwise() -> None:
    """systemd.syntax(7)/systemd.service(5): C escapes inside double quotes, ``%`` a specifier, ``$`` a
    variable; everything else as given (a Windows-style path, spaces, Unicode)."""
    from agent.install_linux import systemd_quote

    assert systemd_quote('a\\b"c\nd\te%f$g') == '"a\\\\b\\"c\\nd\\te%%f$$g"'
    assert systemd_quote("/opt/Desk Trace/bin/ä") == '"/opt/Desk Trace/bin/ä"'
    assert systemd_quote("") == '""'
