"""A local Kafka with TLS, SASL/SCRAM-SHA-512 and per-service ACLs (``desktrace-local up --secure``).

It mirrors the production principals of ``deploy/k8s/base/kafka-users.yaml``:

- clients speak SASL_SSL on one listener (127.0.0.1 only); the broker's certificate (SAN ``127.0.0.1`` and
  ``localhost``) is signed by a CA generated here with ``openssl``; clients trust ``tls/ca.pem``;
- one SCRAM-SHA-512 user per service plus the super user ``admin`` (topic creation, ACLs, the broker's own
  inter-broker connections). Users are added when the storage is formatted (``StorageTool format
  --add-scram``); random passwords live in ``secrets/<user>.password`` (mode 0600) and are never printed;
- the controller listener (127.0.0.1 only) uses SASL_PLAINTEXT with the PLAIN mechanism and the admin
  password, so no unauthenticated principal has rights anywhere (KRaft controllers cannot use SCRAM: its
  credentials live in the metadata log the controller serves);
- ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: a principal can do only what
  :func:`acl_bindings` grants, created through the admin connection right after the broker starts
  (CreateAcls, idempotent).

The principals and ACLs are :mod:`devstack.acls`, the secrets and certificates :mod:`devstack.tls`.
The state directory (``<state>/kafka-secure``) is mode 0700: ``config/server.properties`` holds the admin
password (the broker needs it for its own connections).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from devstack._proc import DevstackError, Progress, run_sync, stderr_progress
from devstack.acls import (
    ADMIN,
    AGENT,
    GATEWAY,
    PRINCIPALS,
    SERVICE_PRINCIPALS,
    SINK,
    STREAM,
    AclBinding,
    Operation,
    PatternType,
    ResourceType,
    acl_bindings,
    create_acls,
)
from devstack.kafka import KafkaInstance
from devstack.tls import TlsFiles, ensure_tls, new_password, write_secret
from proto.topics import Topics

__all__ = [
    "ADMIN",
    "AGENT",
    "DEFAULT_SECURE_PORT",
    "GATEWAY",
    "PRINCIPALS",
    "SERVICE_PRINCIPALS",
    "SINK",
    "STREAM",
    "AclBinding",
    "Operation",
    "PatternType",
    "ResourceType",
    "SecureKafka",
    "TlsFiles",
    "acl_bindings",
    "create_acls",
    "ensure_tls",
    "new_password",
    "secure_properties",
]

DEFAULT_SECURE_PORT: Final = 19094
DEFAULT_SECURE_CONTROLLER_PORT: Final = 19095
MECHANISM: Final = "SCRAM-SHA-512"
# ---- broker configuration (pure) ---------------------------------------------------------------------------
def _jaas(module: str, username: str, password: str, **users: str) -> str:
    extra = "".join(f' user_{name}="{pw}"' for name, pw in users.items())
    return f'{module} required username="{username}" password="{password}"{extra};'


def secure_properties(
    port: int, controller_port: int, tls: TlsFiles, admin_password: str, host: str = "127.0.0.1"
) -> dict[str, str]:
    """server.properties overrides: a SASL_SSL client listener (also the inter-broker one, as ``admin``),
    a SASL_PLAINTEXT/PLAIN controller listener, and the ACL authorizer with ``admin`` as the super user."""
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    return {
        "listeners": f"CLIENT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"CLIENT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "CLIENT",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.client.sasl.enabled.mechanisms": MECHANISM,
        "listener.name.client.scram-sha-512.sasl.jaas.config": _jaas(scram, ADMIN, admin_password),
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas(
            plain, ADMIN, admin_password, **{ADMIN: admin_password}
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.truststore),
        "ssl.client.auth": "none",
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
        # A failed login is answered after this delay: a wrong password cannot hammer the broker.
        "connection.failed.authentication.delay.ms": "500",
    }


def scram_format_args(passwords: Mapping[str, str]) -> list[str]:
    """``StorageTool format`` arguments adding one SCRAM-SHA-512 credential per user."""
    args: list[str] = []
    for name, password in passwords.items():
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args


# ---- the instance ------------------------------------------------------------------------------------------
class SecureKafka:
    """The secure local broker of one state directory, its certificates, users, passwords and ACLs.

    Guarantees: secrets are generated once and kept (mode 0600, in a 0700 directory) so restarts and
    clients agree; passwords appear only in files (never in output or exported variables); ``start()``
    returns once the broker answers an authenticated request; :meth:`apply_acls` grants exactly
    :func:`acl_bindings` (plus whatever was granted before: it never revokes)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = DEFAULT_SECURE_PORT,
        controller_port: int = DEFAULT_SECURE_CONTROLLER_PORT,
        *,
        host: str = "127.0.0.1",
        partitions: int = 6,
        cache_dir: Path | None = None,
        progress: Progress = stderr_progress,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.progress = progress
        self.instance = KafkaInstance(
            self.data_dir, port, controller_port, host=host, partitions=partitions,
            cache_dir=cache_dir, progress=progress,
        )

    # ---- paths -----------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return self.instance.bootstrap

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    def password_file(self, principal: str) -> Path:
        """The file holding ``principal``'s SCRAM password (mode 0600)."""
        if principal not in PRINCIPALS:
            raise ValueError(f"unknown principal {principal!r}; one of {', '.join(PRINCIPALS)}")
        return self.secrets_dir / f"{principal}.password"

    def env_file(self, principal: str) -> Path:
        """A ``KEY=value`` file with every ``DESKTRACE_KAFKA_*`` setting a service running as
        ``principal`` needs (the password by file path only)."""
        return self.data_dir / "clients" / f"{principal}.env"

    # ---- setup -----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create (once) the state directory, passwords and certificates and configure the instance."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        formatted = (self.data_dir / "kraft" / "meta.properties").exists()
        passwords: dict[str, str] = {}
        for name in PRINCIPALS:
            path = self.password_file(name)
            if not path.exists():
                if formatted:
                    raise DevstackError(
                        f"{path} is missing but the secure Kafka in {self.data_dir} was formatted with it: "
                        f"remove {self.data_dir} to start afresh (new users and passwords)"
                    )
                write_secret(path, new_password() + "\n")
            passwords[name] = path.read_text(encoding="utf-8").strip()
        tls = ensure_tls(self.tls_dir)
        inst = self.instance
        inst.extra_properties = secure_properties(
            inst.port, inst.controller_port, tls, passwords[ADMIN], inst.host
        )
        inst.format_args = tuple(scram_format_args(passwords))
        inst.probe_options = self.client_options(ADMIN)
        for name in PRINCIPALS:
            self._write_env_file(name)

    def _write_env_file(self, principal: str) -> None:
        env = self.client_env(principal)
        path = self.env_file(principal)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()), encoding="utf-8")

    def start(self, timeout: float = 90.0) -> None:
        """Prepare, then start the broker (formatting it with its users the first time)."""
        self.prepare()
        self.instance.start(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        return self.instance.stop(timeout)

    def is_running(self) -> bool:
        return self.instance.is_running()

    # ---- clients ---------------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(cafile=str(self.ca_file))

    def client_options(self, principal: str, password: str | None = None) -> dict[str, Any]:
        """aiokafka keyword arguments (without ``bootstrap_servers``) to connect as ``principal``;
        ``password`` overrides the stored one (tests of a wrong password)."""
        if password is None:
            password = self.password_file(principal).read_text(encoding="utf-8").strip()
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": self.ssl_context(),
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": principal,
            "sasl_plain_password": password,
        }

    def client_env(self, principal: str) -> dict[str, str]:
        """``DESKTRACE_*`` settings (:class:`common.settings.CommonSettings`) of a service connecting as
        ``principal``; the password is given by file (``DESKTRACE_KAFKA_PASSWORD_FILE``)."""
        return {
            "DESKTRACE_KAFKA_BOOTSTRAP": self.bootstrap,
            "DESKTRACE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "DESKTRACE_KAFKA_SASL_MECHANISM": MECHANISM,
            "DESKTRACE_KAFKA_CA_FILE": str(self.ca_file),
            "DESKTRACE_KAFKA_USERNAME": principal,
            "DESKTRACE_KAFKA_PASSWORD_FILE": str(self.password_file(principal)),
        }

    def exports(self) -> list[str]:
        """Shell lines for ``eval``: the admin identity for the developer's shell (topic creation, tests,
        tools), then one comment per service naming its user and its settings file."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.client_env(ADMIN).items()
                 if k != "DESKTRACE_KAFKA_BOOTSTRAP"]
        for service, principal in SERVICE_PRINCIPALS.items():
            lines.append(
                f"# {service}: DESKTRACE_KAFKA_USERNAME={principal} "
                f"DESKTRACE_KAFKA_PASSWORD_FILE={shlex.quote(str(self.password_file(principal)))} "
                f"(all settings: {shlex.quote(str(self.env_file(principal)))})"
            )
        return lines

    # ---- ACLs ------------------------------------------------------------------------------------------
    def apply_acls(self, topics: Topics, timeout: float = 30.0) -> int:
        """Create :func:`acl_bindings` for ``topics`` (idempotent); returns how many were requested."""
        bindings = acl_bindings(topics)
        opts = self.client_options(ADMIN)
        run_sync(lambda: asyncio.wait_for(create_acls(self.bootstrap, bindings, **opts), timeout))
        return len(bindings)


