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


async def connection_problem(settings: CommonSettings, wait_s: float = 10.0) -> str:
    """Why a client with ``settings`` cannot connect, in one line naming the cause and the setting to fix
    ("" when a bootstrap server accepts the connection, TLS handshake and SASL login included).

    aiokafka reports every bootstrap failure as ``KafkaConnectionError: Unable to bootstrap`` (the cause is
    only logged); services call this after such an error so a wrong password says "authentication failed"
    instead of "cannot reach Kafka". One connection per bootstrap server, no retries."""
    import asyncio
    import ssl

    from aiokafka.conn import create_conn
    from aiokafka.errors import IllegalSaslStateError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

    opts = client_options(settings)
    opts.pop("bootstrap_servers", None)
    reasons: list[str] = []
    for server in (s.strip() for s in settings.kafka_bootstrap.split(",")):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            reasons.append(f"{server!r} is not host:port (kafka_bootstrap)")
            continue
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(wait_s * 1000), **opts), wait_s
            )
        except SaslAuthenticationFailed:
            reasons.append(
                f"{server}: authentication failed for Kafka user {settings.kafka_username!r} "
                f"({opts.get('sasl_mechanism')}): check kafka_username and kafka_password(_file)"
            )
        except (UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            reasons.append(f"{server}: SASL mechanism refused ({exc}): check kafka_sasl_mechanism")
        except ssl.SSLCertVerificationError as exc:
            reasons.append(
                f"{server}: TLS certificate not trusted ({exc.verify_message}): check kafka_ca_file"
            )
        except ssl.SSLError as exc:
            reasons.append(f"{server}: TLS handshake failed ({exc.reason}): check kafka_security_protocol")
        except TimeoutError:
            reasons.append(
                f"{server}: no answer within {wait_s:.0f}s (wrong kafka_security_protocol for the listener?)"
            )
        except OSError as exc:
            reasons.append(f"{server}: {exc.strerror or exc}")
        except Exception as exc:  # any other aiokafka error: name it
            reasons.append(f"{server}: {type(exc).__name__}: {exc}")
        else:
            conn.close()
            return ""
    return "; ".join(reasons)
