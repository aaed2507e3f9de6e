"""Apache Kafka's jars from Maven Central, resolved once with the machine's ``mvn`` and cached.

The cache is ``$DESKTRACE_CACHE_DIR/kafka-<version>/lib`` (default ``~/.cache/desktrace``). A directory is
used only once complete (a marker file is written last), so an interrupted download is redone, and a lock
file keeps two concurrent first starts from resolving twice.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from devstack._proc import DevstackError, Progress, stderr_progress

KAFKA_VERSION = "4.1.0"
_COMPLETE = ".complete"


def cache_root() -> Path:
    env = os.environ.get("DESKTRACE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "desktrace"


def find_java() -> str:
    """The ``java`` to run Kafka with (``$JAVA_HOME/bin/java`` first); it must be Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    candidates = [str(Path(home) / "bin" / "java")] if home else []
    which = shutil.which("java")
    if which:
        candidates.append(which)
    for java in candidates:
        if not os.access(java, os.X_OK):
            continue
        try:
            out = subprocess.run(
                [java, "-version"], capture_output=True, text=True, timeout=30, check=False
            ).stderr
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = java_major(out)
        if major is not None and major >= 17:
            return java
        raise DevstackError(
            f"{java} is Java {major or 'of an unknown version'}; "
            f"Kafka {KAFKA_VERSION} needs Java 17 or newer: "
            "install a Java 17 JDK (apt-get install openjdk-17-jdk-headless) or point JAVA_HOME at one"
        )
    raise DevstackError(
        "no `java` found (PATH, JAVA_HOME): install a Java 17 JDK: apt-get install openjdk-17-jdk-headless"
    )


def java_major(version_output: str) -> int | None:
    """The major version from ``java -version`` output (``1.8.0_x`` -> 8, ``17.0.15`` -> 17)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    first = int(m.group(1))
    return int(m.group(2) or 0) if first == 1 else first


def kafka_lib_dir(
    version: str = KAFKA_VERSION, cache_dir: Path | None = None, progress: Progress = stderr_progress
) -> Path:
    """The directory of Kafka's runtime jars, resolving them with ``mvn`` when not cached yet."""
    root = (cache_dir or cache_root()) / f"kafka-{version}"
    lib = root / "lib"
    if (root / _COMPLETE).exists() and lib.is_dir():
        return lib
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / _COMPLETE).exists() and lib.is_dir():
            return lib
        mvn = shutil.which("mvn")
        if not mvn:
            raise DevstackError(
                f"Kafka's jars are not cached in {lib} and `mvn` is not on PATH to fetch them from Maven "
                "Central: install Maven (apt-get install maven) and a Java 17 JDK "
                "(apt-get install openjdk-17-jdk-headless)"
            )
        progress(f"resolving Apache Kafka {version} jars from Maven Central into {lib} (once)")
        pom = resources.files("devstack").joinpath("kafka-pom.xml").read_text(encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="kafka-pom-", dir=root) as tmp:
            (Path(tmp) / "pom.xml").write_text(pom.replace("@KAFKA_VERSION@", version), encoding="utf-8")
            out_dir = Path(tmp) / "lib"
            proc = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={out_dir}",
                ],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if proc.returncode != 0 or not any(out_dir.glob("kafka_2.13-*.jar")):
                detail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
                raise DevstackError(
                    f"mvn could not resolve org.apache.kafka:kafka_2.13:{version} (exit {proc.returncode}); "
                    f"is Maven Central reachable?\n{detail}"
                )
            if lib.exists():
                shutil.rmtree(lib)
            out_dir.rename(lib)
        (root / _COMPLETE).write_text(version + "\n", encoding="ascii")
        return lib
