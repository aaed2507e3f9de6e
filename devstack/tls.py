"""Secrets and certificates of the secure local Kafka: 0600 secret files, random SCRAM passwords, and a CA
plus broker certificate generated with ``openssl`` (:func:`ensure_tls`)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from devstack._proc import DevstackError

CERT_DAYS: Final = 825


def write_secret(path: Path, text: str) -> None:
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
        write_secret(tls_dir / "ca.key", (tmp / "ca.key").read_text(encoding="ascii"))
        write_secret(files.broker_keystore, key + chain)
        (tls_dir / "ca.pem.tmp").write_text((tmp / "ca.pem").read_text(encoding="ascii"), encoding="ascii")
        (tls_dir / "ca.pem.tmp").replace(files.ca_cert)
    return files
