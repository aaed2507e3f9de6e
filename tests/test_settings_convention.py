"""One settings convention (docs/ARCHITECTURE.md, "Settings"): every service's settings Struct in its
package's ``settings.py``, validated by msgspec constraints, per-service keys only in the service's TOML
table, one name per setting, the agent without PostgreSQL settings, one sessionizer mapping for the stream
and the offline tool.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import msgspec
import pytest

from agent.settings import AgentSettings, load_agent_settings
from common.settings import SettingsError, load
from stream.settings import SessionizerSettings, StreamSettings, load_settings

SERVICE_PACKAGES = ("agent", "common", "devstack", "gateway", "reports", "sinks", "stream")


def _settings_structs() -> list[type[msgspec.Struct]]:
    found: dict[str, type[msgspec.Struct]] = {}
    for pkg_name in SERVICE_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            if info.name.endswith(("testing", "__main__")):
                continue
            try:
                module = importlib.import_module(info.name)
            except ImportError:  # a platform module (win32) on another platform
                continue
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, msgspec.Struct)
                    and value.__name__.endswith("Settings")
                ):
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_settings_struct_lives_in_a_settings_module() -> None:
    structs = _settings_structs()
    assert len(structs) >= 8  # Log/Kafka/Common, agent, stream (2), sink, gateway, report (2), local, demo
    misplaced = [
        f"{s.__module__}.{s.__qualname__}" for s in structs if not s.__module__.endswith(".settings")
    ]
    assert misplaced == []


def test_the_stream_and_the_offline_tool_share_the_sessionizer_block() -> None:
    block = {f.name: (f.type, f.default) for f in msgspec.structs.fields(SessionizerSettings)}
    stream = {f.name: (f.type, f.default) for f in msgspec.structs.fields(StreamSettings)}
    assert {name: stream[name] for name in block} == block
    env = {"DESKTRACE_GAP": "120", "DESKTRACE_RETENTION": "86400.0004", "DESKTRACE_LEGACY_MAX_SPAN": "600"}
    stream_settings, _ = load_settings([], env=env)
    offline = load(SessionizerSettings, section="stream", env=env)
    assert stream_settings.to_config() == offline.to_config()
    assert offline.to_config().retention_ms == 86_400_000 and offline.to_config().gap_ms == 120_000


def test_fixed_names_keep_working() -> None:
    settings, _ = load_settings(
        ["--gap", "90", "--presence-timeout", "60", "--close-timeout", "30", "--legacy-max-span", "900"],
        env={"DESKTRACE_TOPIC_PREFIX": "t.", "DESKTRACE_KAFKA_BOOTSTRAP": "k:9092"},
    )
    assert (settings.gap, settings.presence_timeout, settings.close_timeout) == (90, 60, 30)
    assert settings.legacy_max_span == 900
    assert (settings.topic_prefix, settings.kafka_bootstrap) == ("t.", "k:9092")
    env = {"DESKTRACE_GAP": "91", "DESKTRACE_PRESENCE_TIMEOUT": "61", "DESKTRACE_CLOSE_TIMEOUT": "31"}
    settings, _ = load_settings([], env=env)
    assert (settings.gap, settings.presence_timeout, settings.close_timeout) == (91, 61, 31)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"DESKTRACE_GAP": "0"}, "gap"),
        ({"DESKTRACE_COMMIT_INTERVAL": "61"}, "commit_interval"),
        ({"DESKTRACE_FETCH_MAX_WAIT_S": "0"}, "fetch_max_wait_s"),
        ({"DESKTRACE_BATCH_SIZE": "0"}, "batch_size"),
        ({"DESKTRACE_STATE_CACHE_USERS": "0"}, "state_cache_users"),
        ({"DESKTRACE_STATE_FORMAT": "5"}, "state_format"),
        ({"DESKTRACE_STATE_MAX_BYTES": "1048576"}, "state_max_bytes"),
    ],
)
def test_constraints_name_the_bad_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=f"DESKTRACE_{name.upper()}"):
        load_settings([], env=env)


def test_the_agent_has_no_database_settings_and_checks_its_values() -> None:
    names = set(AgentSettings.__struct_fields__)
    assert not {n for n in names if n.startswith("pg_")}
    assert "kafka_bootstrap" in names
    with pytest.raises(SettingsError, match="compression_type"):
        load_agent_settings(env={"DESKTRACE_COMPRESSION_TYPE": "brotli"})
    with pytest.raises(SettingsError, match="spool_max_bytes"):
        load_agent_settings(env={"DESKTRACE_SPOOL_MAX_BYTES": "1024"})


def test_a_former_alias_is_refused_not_ignored(tmp_path: Path) -> None:
    """An exclusion list under its former short name must not be silently dropped (the app would be
    recorded): it is refused with the one name to use."""
    with pytest.raises(SettingsError, match="privacy_exclude_apps"):
        load_agent_settings(env={"DESKTRACE_EXCLUDE_APPS": "keepass.exe"})
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nexclude_domains = ["bank.example"]\n', encoding="utf-8")
    with pytest.raises(SettingsError, match="privacy_exclude_domains"):
        load_agent_settings(env={"DESKTRACE_CONFIG": str(cfg)})
    ok = load_agent_settings(env={"DESKTRACE_PRIVACY_EXCLUDE_APPS": "keepass.exe"})
    assert ok.privacy_exclude_apps == "keepass.exe"


def test_per_service_keys_only_in_the_service_table(tmp_path: Path) -> None:
    top = tmp_path / "top.toml"
    top.write_text("batch_size = 100\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"batch_size .*\[stream\]"):
        load_settings(["--config", str(top)], env={})
    table = tmp_path / "table.toml"
    table.write_text("gap = 100\n[stream]\nbatch_size = 100\n[sink]\nbatch_size = 7\n", encoding="utf-8")
    settings, _ = load_settings(["--config", str(table)], env={})
    assert (settings.gap, settings.batch_size) == (100, 100)


def test_the_topic_prefix_alone_gives_each_gateway_its_own_default_address() -> None:
    """Two pipelines on one host that differ only by DESKTRACE_TOPIC_PREFIX must not fight over a port: the
    gateway's default address follows the prefix like the stream's and the sinks' metrics ports."""
    from gateway.settings import GatewaySettings, http_address

    plain = http_address(GatewaySettings())
    a = http_address(GatewaySettings(topic_prefix="a."))
    b = http_address(GatewaySettings(topic_prefix="b."))
    assert plain == "127.0.0.1:8080"
    assert len({plain, a, b}) == 3 and all(x.startswith("127.0.0.1:") for x in (a, b))
    assert http_address(GatewaySettings(topic_prefix="a.", http_addr="0.0.0.0:9000")) == "0.0.0.0:9000"
