#!/usr/bin/env bash
# Installs what desktrace's demo and tests need on a fresh machine: a Python venv at .venv with the project
# (all extras), and the system tools the tests drive (Xvfb, openbox, xdotool, promtool, Chromium) when apt-get
# can be used. Java 17 and Maven are needed for the local Kafka (its jars come from Maven Central).
# Idempotent and quick when everything is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  say "Python 3.11 or newer is required (found: $("$PY" --version 2>&1 || echo none)); set PYTHON=/path/to/python3.11"
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.desktrace-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing desktrace and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install --quiet -e '.[dev]'
  touch "$stamp"
fi

# kustomize (builds deploy/k8s in the tests) comes from the Go module proxy when Go is there.
if ! command -v kustomize >/dev/null && [ ! -x "$HOME/go/bin/kustomize" ]; then
  if command -v go >/dev/null; then
    say "installing kustomize with go install (about 30 s)"
    GOFLAGS=-mod=mod go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1 >/dev/null 2>&1 \
      || say "could not install kustomize; the Kubernetes manifest tests will fail"
  else
    say "kustomize is missing (and Go to install it): the Kubernetes manifest tests will fail"
  fi
fi

# Docker Compose v2 (validates docker-compose.yml with `config`; no Docker engine needed) from the Go module
# proxy, when neither the docker plugin nor a standalone binary is there.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null \
   && [ ! -x "$HOME/go/bin/docker-compose" ]; then
  if command -v go >/dev/null; then
    say "installing docker-compose v2 with go install (about 1-2 minutes)"
    gobin=$(mktemp -d)
    if GOBIN="$gobin" GOFLAGS=-mod=mod go install github.com/docker/compose/v2/cmd@v2.29.7 >/dev/null 2>&1; then
      mkdir -p "$HOME/go/bin" && mv "$gobin/cmd" "$HOME/go/bin/docker-compose"
    else
      say "could not install docker-compose; the compose validation test will fail"
    fi
    rm -rf "$gobin"
  else
    say "docker compose is missing (and Go to install it): the compose validation test will fail"
  fi
fi

# actionlint (checks .github/workflows in the tests) from the Go module proxy.
if ! command -v actionlint >/dev/null && [ ! -x "$HOME/go/bin/actionlint" ]; then
  if command -v go >/dev/null; then
    say "installing actionlint with go install (about 30 s)"
    GOFLAGS=-mod=mod go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12 >/dev/null 2>&1 \
      || say "could not install actionlint; the workflow check will fail"
  else
    say "actionlint is missing (and Go to install it): the workflow check will fail"
  fi
fi

# System tools used by the tests (agent under Xvfb, promtool rule tests, browser tests).
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v openbox >/dev/null || need+=(openbox)
command -v xdotool >/dev/null || need+=(xdotool)
command -v xprop >/dev/null || need+=(x11-utils)
command -v wmctrl >/dev/null || need+=(wmctrl)
command -v xterm >/dev/null || need+=(xterm)
# prometheus: promtool for the rule tests, the server for the demo's local Prometheus
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v openssl >/dev/null || need+=(openssl)
command -v dot >/dev/null || need+=(graphviz)  # the Processes page and `desktrace-report flow --format svg`
# the agent's Linux tests: autostart entries launched through GLib, the systemd user unit verified, presence
# signals on a private D-Bus session bus
command -v gio >/dev/null || need+=(libglib2.0-bin)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dbus-daemon >/dev/null || need+=(dbus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    say "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})"
  fi
fi
