# desktrace developer entry points. Each target installs what it needs (see scripts/).
.PHONY: setup demo test lint stack-up stack-down bench help

help:            ## list the targets
	@grep -E '^[a-z-]+:.*##' Makefile | sed 's/:.*##/ -/'

setup:           ## create .venv, install the project and the system tools the tests use
	@bash scripts/setup.sh

demo: setup      ## the whole pipeline locally with simulated workstations
	@.venv/bin/desktrace-demo $(ARGS)

test: setup      ## lint, type-check and run the whole test suite against real Kafka and PostgreSQL
	@bash scripts/test.sh $(ARGS)

lint: setup      ## ruff and mypy only
	@.venv/bin/ruff check . && .venv/bin/mypy

stack-up: setup  ## start local Kafka + PostgreSQL (prints export lines)
	@.venv/bin/desktrace-local up

stack-down:      ## stop them
	@.venv/bin/desktrace-local down

bench: setup     ## run every benchmark (by hand; slow)
	@for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
