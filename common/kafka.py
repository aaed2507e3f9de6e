"""Kafka helpers every service shares: aiokafka client options from :class:`common.settings.KafkaSettings`
(TLS and SASL included), the one classifier of produce errors (permanent or transient), the producers'
request limit, the isolation of names and ports by topic prefix, :func:`connection_problem`, a
consumer's position read without waiting (:func:`position_now`), and topics' partition counts read without
creating any (:func:`partition_counts`)."""

from __future__ import annotations

import asyncio
import enum
import zlib
from typing import TYPE_CHECKING, Any, Final

from common.settings import KafkaSettings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

#: Every producer's ``max_request_size``: the broker's default ``message.max.bytes`` is 1,048,588 bytes
#: (a record batch), so a single record of up to this estimated size (batch header included) is accepted.
#: Kept equal to :data:`proto.deadletter.MAX_REQUEST_BYTES`.
MAX_REQUEST_SIZE: Final = 1_048_576


class ProduceErrorKind(enum.Enum):
    """What a producer does after a failed send."""

    PERMANENT = "permanent"  # sending the same record again fails again: dead-letter or skip, never retry
    TRANSIENT = "transient"  # the cluster or the network: retry with backoff (or exit and be re-run)


def _permanent_errors() -> tuple[type[BaseException], ...]:
    from aiokafka import errors as e

    return (
        e.MessageSizeTooLargeError,  # client-side (over max_request_size) and broker-side (message.max.bytes)
        e.RecordTooLargeError,
        e.RecordListTooLargeError,
        e.CorruptRecordException,  # also InvalidMessageError (same errno)
        e.InvalidTopicError,
        e.TopicAuthorizationFailedError,
        e.ClusterAuthorizationFailedError,
        e.TransactionalIdAuthorizationFailed,
        e.InvalidTimestampError,
        e.InvalidRequiredAcksError,
        e.UnsupportedVersionError,
    )


def produce_error_kind(exc: BaseException) -> ProduceErrorKind:
    """Classify an exception raised by ``send()``/its future, looking through wrappers (Faust's
    ``ProducerSendError`` holds the aiokafka error as its cause): too large, invalid, corrupt and
    unauthorized-topic errors are permanent; everything else (connection, timeout, leader moves, a failed
    login that the operator will fix) is transient."""
    permanent = _permanent_errors()
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, permanent) or isinstance(cur, UnicodeError | TypeError):
            return ProduceErrorKind.PERMANENT
        cur = cur.__cause__
    return ProduceErrorKind.TRANSIENT


def produce_error_name(exc: BaseException) -> str:
    """The innermost error class name (``MessageSizeTooLargeError`` rather than ``ProducerSendError``): a
    bounded, log-safe reason label. A cancellation is never the reason: ``asyncio.wait_for`` raises its
    ``TimeoutError`` from the cancellation of what it waited for, and the label is ``TimeoutError``."""
    cur, seen = exc, set()
    while (cur.__cause__ is not None) and not isinstance(cur.__cause__, asyncio.CancelledError) \
            and id(cur) not in seen:
        seen.add(id(cur))
        cur = cur.__cause__
    return type(cur).__name__


def prefixed_port(base: int, prefix: str) -> int:
    """The default port of a service whose unprefixed default is ``base``: ``base`` itself without a topic
    prefix; with one, a port derived from the prefix (``base + 100 * (1 + crc32(prefix) % 99)``, wrapped
    below 65536), so two pipelines on one host that differ only by prefix do not collide."""
    if not prefix:
        return base
    port = base + 100 * (1 + zlib.crc32(prefix.encode()) % 99)
    if port > 65535:
        port = 20000 + port % 40000
    return port


class KafkaAuthenticationFailed(Exception):
    """The brokers refused the login (wrong kafka_username / kafka_password(_file) or mechanism); readiness
    checks raise it so ``/readyz`` names the cause (``{"kafka": "KafkaAuthenticationFailed"}``)."""


def is_authentication_problem(reason: str) -> bool:
    """Whether a :func:`connection_problem` answer is a refused login (not an unreachable broker)."""
    return "authentication failed" in reason or "SASL mechanism refused" in reason


def client_options(settings: KafkaSettings) -> dict[str, Any]:
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


async def connection_problem(settings: KafkaSettings, wait_s: float = 10.0) -> str:
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


def position_now(consumer: AIOKafkaConsumer, partition: TopicPartition) -> int | None:
    """The consumer's position of ``partition`` as it is now (aiokafka's ``position()`` waits for a valid
    one, and awaits): None if not assigned or not valid (a reset is pending)."""
    subscription = consumer._subscription.subscription
    assignment = None if subscription is None else subscription.assignment
    if assignment is None or partition not in assignment.tps:
        return None
    state = assignment.state_value(partition)
    return int(state.position) if state is not None and state.has_valid_position else None


async def partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """The partition count of each of ``names`` that exists (with its partitions known to the broker). Only
    topics listed are described: aiokafka's metadata request naming a missing topic asks the broker to
    create it, which one with ``auto.create.topics.enable`` (Kafka's default) does, with the broker's
    settings instead of the contract's."""
    listed = set(await admin.list_topics())
    present = [name for name in names if name in listed]
    described = await admin.describe_topics(present) if present else []
    return {t["topic"]: len(t["partitions"]) for t in described
            if t.get("error_code", 0) == 0 and t.get("partitions")}
