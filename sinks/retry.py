"""How the sink runner retries: the :class:`Stopped` signal and which errors are Kafka trouble or expected
while the database or Kafka is away. Delays come from the one :class:`common.backoff.Backoff` (no jitter)."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError


class Stopped(Exception):
    """Raised inside the loop when a stop was requested while waiting to retry."""


def is_kafka_trouble(exc: Exception) -> bool:
    """A Kafka client or network failure: retried while starting the clients."""
    return isinstance(exc, KafkaError | OSError)


def is_expected_failure(exc: BaseException) -> bool:
    """Connection-type failures are expected operations events (WARNING); any other retried error is an
    ERROR. Only asked about errors :func:`classify` already called ``RETRY``."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.OperatorInterventionError,
    )
