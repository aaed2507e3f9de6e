"""The gateway's Prometheus metrics, on a registry of their own (one per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.legacy import REJECT_REASONS


class GatewayMetrics:
    """``desktrace_gateway_*`` metrics. Labels are bounded: route templates, methods, status codes,
    rejection reasons; never a user, host, title or URL."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "desktrace_gateway_requests_total",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "desktrace_gateway_request_duration_seconds",
            "time to answer an HTTP request, by route template",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.rejected = Counter(
            "desktrace_gateway_rejected_total",
            "legacy reports refused, by reason",
            ["reason"],
            registry=r,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.accepted = Counter(
            "desktrace_gateway_legacy_accepted_total", "legacy reports acknowledged", registry=r
        )
        self.retries = Counter(
            "desktrace_gateway_legacy_retries_total",
            "legacy reports recognised as retries of one already published (acknowledged, not sent again)",
            registry=r,
        )
        self.kafka_send_seconds = Histogram(
            "desktrace_gateway_kafka_send_seconds",
            "time from handing a legacy event to Kafka to its acknowledgement (acks=all)",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.kafka_errors = Counter(
            "desktrace_gateway_kafka_errors_total",
            "legacy reports answered 503 because Kafka did not acknowledge them",
            registry=r,
        )
        self.kafka_ready = Gauge(
            "desktrace_gateway_kafka_ready", "1 while the Kafka producer is connected", registry=r
        )
        self.logins = Counter(
            "desktrace_gateway_logins_total",
            "web login attempts, by outcome: ok, failed, throttled (refused unchecked during a wait imposed"
            " by earlier failures of the same user name or client address)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "failed", "throttled"):
            self.logins.labels(outcome)
        self.logouts = Counter(
            "desktrace_gateway_logouts_total", "web sessions ended (and revoked) by a logout", registry=r
        )
