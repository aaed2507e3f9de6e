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

The state directory (``<state>/kafka-secure``) is mode 0700: ``config/server.properties`` holds the admin
password (the broker needs it for its own connections).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

from devstack._proc import DevstackError, Progress, run_sync, stderr_progress
from devstack.kafka import KafkaInstance
from proto.topics import Topics

DEFAULT_SECURE_PORT: Final = 19094
DEFAULT_SECURE_CONTROLLER_PORT: Final = 19095
MECHANISM: Final = "SCRAM-SHA-512"
ADMIN: Final = "admin"
AGENT: Final = "desktrace-agent"
GATEWAY: Final = "desktrace-gateway"
STREAM: Final = "desktrace-stream"
SINK: Final = "desktrace-sink"
#: Every SCRAM user of the secure broker.
PRINCIPALS: Final = (ADMIN, AGENT, GATEWAY, STREAM, SINK)
#: Which user each console script runs as (``desktrace-sink raw`` and ``sessions`` share one).
SERVICE_PRINCIPALS: Final[Mapping[str, str]] = {
    "desktrace-agent": AGENT,
    "desktrace-replay": AGENT,
    "desktrace-gateway": GATEWAY,
    "desktrace-stream": STREAM,
    "desktrace-sink": SINK,
}
#: Prefix of the stream's consumer group and Faust internal topics (its app id starts with it).
STREAM_APP_PREFIX: Final = "desktrace-stream"
CERT_DAYS: Final = 825


# ---- ACLs (pure) -----------------------------------------------------------------------------------------
class ResourceType(IntEnum):
    """Kafka's ``ResourceType`` codes (wire protocol)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class PatternType(IntEnum):
    """Kafka's ``PatternType`` codes."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's ``AclOperation`` codes."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11


ALLOW: Final = 3  # AclPermissionType.ALLOW
ANY_HOST: Final = "*"
CLUSTER_NAME: Final = "kafka-cluster"


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: ``principal`` may do ``operation`` on the resource (from any host)."""

    principal: str
    resource_type: ResourceType
    name: str
    pattern: PatternType
    operation: Operation

    @property
    def principal_name(self) -> str:
        return f"User:{self.principal}"

    def describe(self) -> str:
        kind = "prefix" if self.pattern is PatternType.PREFIXED else "literal"
        return f"{self.principal} {self.operation.name} {self.resource_type.name} {self.name!r} ({kind})"


def _grant(
    principal: str, rtype: ResourceType, names: Sequence[str], ops: Sequence[Operation],
    pattern: PatternType = PatternType.LITERAL,
) -> list[AclBinding]:
    return [AclBinding(principal, rtype, n, pattern, op) for n in names for op in ops]


def acl_bindings(topics: Topics) -> list[AclBinding]:
    """The rights of each service principal, as in ``deploy/k8s/base/kafka-users.yaml`` (topic names from
    ``topics``, so a topic prefix is honoured; the sinks' group prefix follows their default group id
    ``<topic prefix>desktrace-sink-<name>``). ``admin`` is a super user and needs none."""
    T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
    R, W, D = Operation.READ, Operation.WRITE, Operation.DESCRIBE
    out: list[AclBinding] = []
    out += _grant(AGENT, T, topics.raw, (W, D))
    out += _grant(GATEWAY, T, (topics.presence,), (W, D))
    out += _grant(STREAM, T, topics.raw, (R, D))
    out += _grant(STREAM, T, (topics.sessions, topics.deadletter), (W, D))
    internal = (
        Operation.CREATE, R, W, D, Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS,
    )
    out += _grant(STREAM, T, (STREAM_APP_PREFIX,), internal, PatternType.PREFIXED)
    out += _grant(STREAM, G, (STREAM_APP_PREFIX,), (R, D), PatternType.PREFIXED)
    out += _grant(STREAM, C, (CLUSTER_NAME,), (D, Operation.DESCRIBE_CONFIGS))
    out += _grant(SINK, T, (*topics.raw, topics.sessions), (R, D))
    out += _grant(SINK, T, (topics.deadletter,), (W, D))
    out += _grant(SINK, G, (f"{topics.prefix}desktrace-sink-",), (R, D), PatternType.PREFIXED)
    return out


# ---- secrets and certificates ------------------------------------------------------------------------------
def _write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def new_password() -> str:
    """48 hex digits (192 random bits): safe in StorageTool's ``[name=..,password=..]`` and JAAS quotes."""
    return secrets.token_hex(24)


@dataclass(frozen=True)
class TlsFiles:
    """The CA certificate clients trust and the broker's PEM keystore (key + chain) and truststore."""

    ca_cert: Path
    broker_keystore: Path
    truststore: Path


def _openssl() -> str:
    path = shutil.which("openssl")
    if not path:
        raise DevstackError(
            "`openssl` is not on PATH; the secure stack needs it to make its certificates: "
            "apt-get install openssl"
        )
    return path


def _run_openssl(args: Sequence[str], cwd: Path) -> None:
    proc = subprocess.run(
        [_openssl(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise DevstackError(f"openssl {args[0]} failed (exit {proc.returncode}): {proc.stderr.strip()}")


def ensure_tls(tls_dir: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """Create (once) a local CA and a broker certificate for ``hosts``; keys are PKCS#8, mode 0600."""
    files = TlsFiles(tls_dir / "ca.pem", tls_dir / "broker-keystore.pem", tls_dir / "ca.pem")
    if files.ca_cert.exists() and files.broker_keystore.exists():
        return files
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    with tempfile.TemporaryDirectory(prefix="tls-", dir=tls_dir) as tmp_s:
        tmp = Path(tmp_s)
        _run_openssl(
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", str(CERT_DAYS), "-subj", "/CN=desktrace local CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
            tmp,
        )
        _run_openssl(
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
                "-subj", "/CN=localhost",
            ],
            tmp,
        )
        (tmp / "ext.cnf").write_text(
            f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n",
            encoding="ascii",
        )
        _run_openssl(
            [
                "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(secrets.randbits(63)), "-days", str(CERT_DAYS),
                "-extfile", "ext.cnf", "-out", "broker.pem",
            ],
            tmp,
        )
        key = (tmp / "broker.key").read_text(encoding="ascii")
        if "BEGIN PRIVATE KEY" not in key:
            raise DevstackError("openssl wrote the broker key in a format other than PKCS#8")
        chain = (tmp / "broker.pem").read_text(encoding="ascii") + (tmp / "ca.pem").read_text(
            encoding="ascii"
        )
        _write_secret(tls_dir / "ca.key", (tmp / "ca.key").read_text(encoding="ascii"))
        _write_secret(files.broker_keystore, key + chain)
        (tls_dir / "ca.pem.tmp").write_text((tmp / "ca.pem").read_text(encoding="ascii"), encoding="ascii")
        (tls_dir / "ca.pem.tmp").replace(files.ca_cert)
    return files


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
                _write_secret(path, new_password() + "\n")
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


async def create_acls(bootstrap: str, bindings: Sequence[AclBinding], **client_options: Any) -> None:
    """Send CreateAcls requests (one per binding, as aiokafka's request class carries one; pipelined on one
    connection) as a super user; raises :class:`DevstackError` naming the refused bindings. Creating an
    existing ACL is a no-op. Bound it with ``asyncio.wait_for``."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.admin import CreateAclsRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap, **client_options)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        requests = [
            CreateAclsRequest(
                int(b.resource_type), b.name, int(b.pattern), b.principal_name, ANY_HOST,
                int(b.operation), ALLOW,
            )
            for b in bindings
        ]
        responses = await asyncio.gather(*(client.send(node, r) for r in requests))
        refused = [
            f"{b.describe()}: error {code} {message or ''}".rstrip()
            for b, resp in zip(bindings, responses, strict=True)
            for code, message in resp.creation_responses
            if code != 0
        ]
        if refused:
            raise DevstackError("could not create ACLs: " + "; ".join(refused))
    finally:
        await client.close()
