"""A wrong Kafka password on the secure local stack (devstack.secure: TLS + SASL/SCRAM, on its own ports,
started and stopped by tests/test_secure_stack.py's module fixture): every service and the agent name the
authentication failure and the setting to check, in their log and in their exit status or /readyz."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack.secure import AGENT, GATEWAY, SINK, STREAM, SecureKafka
from tests.support.process import free_port, script
from tests.test_agent_cli import simulated_agent_run
from tests.test_secure_stack import PREFIX, secure, state_dir  # noqa: F401 - the module's fixtures

pytestmark = pytest.mark.kafka

WRONG = "not-the-password"


def wrong_env(secure: SecureKafka, user: str, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    wrong = tmp_path / f"{user}.wrong"
    wrong.write_text(WRONG + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKTRACE_")}
    return {**env, **secure.client_env(user), "DESKTRACE_KAFKA_PASSWORD_FILE": str(wrong),
            "DESKTRACE_TOPIC_PREFIX": PREFIX}


def named(text: str, user: str) -> bool:
    return ("authentication failed" in text and user in text and "kafka_password" in text
            and WRONG not in text)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_stream_exits_naming_the_authentication_failure(
    secure: SecureKafka, tmp_path: Path  # noqa: F811
) -> None:
    env = {**wrong_env(secure, STREAM, tmp_path), "DESKTRACE_METRICS_ADDR": "127.0.0.1:0"}
    proc = subprocess.run([script("desktrace-stream")], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 1
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    errors = [rec for rec in lines if rec["level"] == "error"]
    assert errors and errors[-1]["msg"] == "Kafka refuses the login", proc.stderr
    assert named(errors[-1]["problem"], STREAM), errors[-1]


def test_sink_and_gateway_name_it_in_log_and_readiness(
    secure: SecureKafka, tmp_path: Path, pg_dsn: str  # noqa: F811
) -> None:
    sink_port, gw_port = free_port(), free_port()
    sink_log, gw_log = tmp_path / "sink.log", tmp_path / "gateway.log"
    procs = []
    with open(sink_log, "wb") as s_out, open(gw_log, "wb") as g_out:
        procs.append(subprocess.Popen(
            [script("desktrace-sink"), "raw"], stdout=s_out, stderr=subprocess.STDOUT,
            env={**wrong_env(secure, SINK, tmp_path), "DESKTRACE_PG_DSN": pg_dsn,
                 "DESKTRACE_METRICS_ADDR": f"127.0.0.1:{sink_port}"},
        ))
        procs.append(subprocess.Popen(
            [script("desktrace-gateway")], stdout=g_out, stderr=subprocess.STDOUT,
            env={**wrong_env(secure, GATEWAY, tmp_path), "DESKTRACE_PG_DSN": pg_dsn,
                 "DESKTRACE_HTTP_ADDR": f"127.0.0.1:{gw_port}"},
        ))
    try:
        deadline = time.monotonic() + 90
        sink_ready = gw_ready = (0, "")
        while time.monotonic() < deadline:
            sink_ready = get(f"http://127.0.0.1:{sink_port}/readyz")
            gw_ready = get(f"http://127.0.0.1:{gw_port}/readyz")
            if "KafkaAuthenticationFailed" in sink_ready[1] and gw_ready[0] == 503 and named(
                gw_log.read_text(errors="replace"), GATEWAY
            ):
                break
            time.sleep(1)
        assert sink_ready[0] == 503 and json.loads(sink_ready[1])["checks"]["kafka"] == (
            "KafkaAuthenticationFailed"
        ), (sink_ready, sink_log.read_text(errors="replace")[-2000:])
        sink_text = sink_log.read_text(errors="replace")
        assert named(sink_text, SINK), sink_text[-2000:]
        assert gw_ready[0] == 503, gw_ready
        assert json.loads(gw_ready[1])["kafka"] is False
        assert "authentication failed" in json.loads(gw_ready[1])["kafka_problem"], gw_ready
        gw_text = gw_log.read_text(errors="replace")
        assert named(gw_text, GATEWAY), gw_text[-2000:]
        for p in procs:
            assert p.poll() is None  # they keep retrying: fixing the secret needs no restart
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_agent_names_it_in_its_log(secure: SecureKafka, tmp_path: Path) -> None:  # noqa: F811
    env_opts = secure.client_env(AGENT)
    wrong = tmp_path / "agent.wrong"
    wrong.write_text(WRONG + "\n")
    wrong.chmod(0o600)  # the agent refuses a secret file others can read
    cmd, env = simulated_agent_run(
        tmp_path / "state", secure.bootstrap,
        "--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", env_opts[
            "DESKTRACE_KAFKA_SASL_MECHANISM"],
        "--kafka-ca-file", env_opts["DESKTRACE_KAFKA_CA_FILE"], "--kafka-username", AGENT,
        "--kafka-password-file", str(wrong), "--topic-prefix", PREFIX, "--linger-s", "0",
    )
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not named(log.read_text(errors="replace"), AGENT):
            assert agent.poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        assert named(text, AGENT), text[-2000:]
        assert any("kafka refuses the connection" in line for line in text.splitlines())
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
