"""``desktrace-stream``: run one sessions stream worker (see ``stream/README.md``)."""

from __future__ import annotations

import asyncio
import logging
import sys

from common.collector import tune_for_throughput
from common.logs import setup_logging
from common.settings import SettingsError
from proto.topics import Topics
from stream.settings import StreamSettings, load_settings, metrics_host_port

log = logging.getLogger("stream")


def main(argv: list[str] | None = None) -> int:
    try:
        settings, _ = load_settings(argv)
    except SettingsError as exc:
        print(f"desktrace-stream: {exc}", file=sys.stderr)
        return 2
    setup_logging("stream", settings.log_level, settings.log_format)
    return run(settings)


def run(settings: StreamSettings) -> int:
    """Inspect the cluster, then run the Faust worker until it is stopped (SIGTERM/SIGINT)."""
    # Imported here so that ``--help`` and settings errors do not pay for importing Faust.
    import faust
    from prometheus_client import REGISTRY

    from stream.app import ClusterError, StreamApp, inspect_cluster
    from stream.web import HttpEndpoints

    topics = Topics(settings.topic_prefix)
    try:
        cluster = asyncio.run(inspect_cluster(settings, topics))
    except ClusterError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except Exception as exc:
        from common.kafka import connection_problem, is_authentication_problem

        problem = asyncio.run(connection_problem(settings, wait_s=5.0))
        message = "Kafka refuses the login" if is_authentication_problem(problem) else "cannot reach Kafka"
        log.error(message, extra={"kv": {"exception": type(exc).__name__, "problem": problem,
                                         "bootstrap": settings.kafka_bootstrap}})
        return 1
    log.info("starting", extra={"kv": {
        "app_id": settings.app_id, "partitions": cluster.partitions,
        "replication": cluster.replication,
        "gap": settings.gap, "presence_timeout": settings.presence_timeout,
        "close_timeout": settings.close_timeout, "retention": settings.retention,
        "legacy_max_span": settings.legacy_max_span}})
    stream_app = StreamApp(settings, cluster, REGISTRY)
    host, port = metrics_host_port(settings.metrics_address)
    http = HttpEndpoints(host, port, REGISTRY, ready=stream_app.ready, alive=stream_app.alive)
    worker = faust.Worker(
        stream_app.app,
        http,
        *stream_app.services(),
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    # Faust's start-up spinner writes terminal controls ("\b\x1b[?25h") into the log stream even when it
    # is not a terminal, which breaks JSON lines: our logs report the progress instead.
    worker.spinner = None
    tune_for_throughput()
    worker.execute_from_commandline()  # exits the process
    return 0


if __name__ == "__main__":
    sys.exit(main())
