"""aiokafka client options from :class:`common.settings.CommonSettings` (TLS and SASL included)."""

from __future__ import annotations

from typing import Any

from common.settings import CommonSettings


def client_options(settings: CommonSettings) -> dict[str, Any]:
    """Keyword arguments shared by AIOKafkaProducer, AIOKafkaConsumer and the admin client."""
    opts: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    proto = settings.kafka_security_protocol.upper()
    if proto != "PLAINTEXT":
        opts["security_protocol"] = proto
    if proto in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        opts["ssl_context"] = create_ssl_context(cafile=settings.kafka_ca_file or None)
    if proto.startswith("SASL"):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism or "SCRAM-SHA-512"
        opts["sasl_plain_username"] = settings.kafka_username
        opts["sasl_plain_password"] = settings.kafka_password
    return opts
