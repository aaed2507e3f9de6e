#!/usr/bin/env bash
# Runs desktrace's checks: ruff, mypy, then pytest against real services. Kafka and PostgreSQL come from
# DESKTRACE_KAFKA_BOOTSTRAP / DESKTRACE_PG_DSN when set, else from the local stack (started here, and stopped
# again at the end if this script started it). Extra arguments go to pytest (after ours: `-n 0` runs the tests
# in this process). DESKTRACE_TEST_WORKERS: how many pytest-xdist processes run the tests (default: the number
# of CPUs plus one, at most 4; most tests spend their time waiting on brokers, databases and outages).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'test: %s\n' "$*" >&2; }

say "ruff"
.venv/bin/ruff check .
say "mypy"
.venv/bin/mypy
.venv/bin/mypy --platform win32 --exclude "agent/sources/(x11|linuxpresence)" --follow-imports=silent agent  # as on Windows (the Linux-only sources aside)

started=0
if [ -z "${DESKTRACE_KAFKA_BOOTSTRAP:-}" ] || [ -z "${DESKTRACE_PG_DSN:-}" ]; then
  if ! .venv/bin/desktrace-local status >/dev/null 2>&1; then started=1; fi
  say "starting the local stack (Kafka KRaft + PostgreSQL)"
  exports=$(.venv/bin/desktrace-local up)
  eval "$exports"
  if [ "$started" = 1 ]; then trap '.venv/bin/desktrace-local down >&2 || true' EXIT; fi
fi
export DESKTRACE_KAFKA_BOOTSTRAP DESKTRACE_PG_DSN

cpus=$(nproc 2>/dev/null || echo 2)
workers=${DESKTRACE_TEST_WORKERS:-$(( cpus + 1 < 4 ? cpus + 1 : 4 ))}
say "pytest (Kafka at $DESKTRACE_KAFKA_BOOTSTRAP; $workers processes, one test file each at a time)"
# --dist loadfile: a file's tests run in one process, so a module's fixture (a private broker) starts once.
.venv/bin/pytest -q -p no:cacheprovider -n "$workers" --dist loadfile "$@"
