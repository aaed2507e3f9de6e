"""``desktrace-gateway``: the legacy HTTP API and the report web pages, served by uvicorn."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from common.logs import setup_logging
from common.settings import SettingsError, add_arguments, load
from gateway.settings import GATEWAY_HELP, SECTION, GatewaySettings, http_address, parse_addr

log = logging.getLogger("gateway")


class DropQueryStrings(logging.Filter):
    """Strips the query string from uvicorn's access-log lines (``?token=`` of legacy clients is a
    credential). The access log is off (``access_log=False``); this keeps it safe if it is ever turned on."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(a.split("?", 1)[0] if isinstance(a, str) and "?" in a else a for a in args)
        if isinstance(record.msg, str) and "?" in record.msg and not args:
            record.msg = record.msg.split("?", 1)[0]
        return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desktrace-gateway",
        description=(
            "Serve the legacy client API (POST /api/report -> StateChange events on the presence topic), the "
            "working-time report pages and /api/v1/reports/*, /metrics, /healthz and /readyz. Every setting "
            "is a flag, a DESKTRACE_* variable or a key of the TOML file (optionally in a [gateway] table)."
        ),
    )
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from the terminal (or stdin) and print its hash for web_users, then exit",
    )
    add_arguments(parser, GatewaySettings, GATEWAY_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hash_password:
        from gateway.auth import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not password:
            print("desktrace-gateway: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        settings = load(GatewaySettings, args, section=SECTION)
        host, port = parse_addr(http_address(settings))
        from gateway.app import create_app

        app = create_app(settings)
    except SettingsError as exc:
        print(f"desktrace-gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging("gateway", settings.log_level, settings.log_format)
    logging.getLogger("uvicorn.access").addFilter(DropQueryStrings())
    gateway = app.state.gateway
    if not gateway.users:
        log.warning("no web users configured (web_users / web_password): nobody can log in to the pages")
    import uvicorn

    log.info(
        "listening",
        extra={
            "kv": {
                "addr": f"{host}:{port}",
                "legacy_networks": len(gateway.networks),
                "legacy_token": bool(settings.legacy_token),
                "api_tokens": len(gateway.api_tokens),
            }
        },
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
