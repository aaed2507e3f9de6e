#!/usr/bin/env bash
# Runs desktrace's checks: ruff, mypy, then pytest against real services. Kafka and PostgreSQL come from
# DESKTRACE_KAFKA_BOOTSTRAP / DESKTRACE_PG_DSN when set, else from the local stack (started here, and stopped
# again at the end if this script started it). Extra arguments go to pytest.
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

say "pytest (Kafka at $DESKTRACE_KAFKA_BOOTSTRAP)"
.venv/bin/pytest -q -p no:cacheprovider "$@"
