"""Dead-letter records: the bytes as received, the error in headers (``shared/spec/events.md``).

Every consumer builds its dead letters with :func:`deadletter_record`, which keeps the record whole when it
fits in one produce request and otherwise stores a bounded head of the bytes plus their size and SHA-256
digest in headers (a record the broker accepted on a raw topic can be up to its limit, and the dead-letter
copy adds headers: it must never be a record that cannot be produced).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Final, NamedTuple

HEADER_ERROR: Final = "desktrace-error"
HEADER_ERROR_CLASS: Final = "desktrace-error-class"
HEADER_SOURCE_TOPIC: Final = "desktrace-source-topic"
HEADER_SOURCE_PARTITION: Final = "desktrace-source-partition"
HEADER_SOURCE_OFFSET: Final = "desktrace-source-offset"
HEADER_SERVICE: Final = "desktrace-service"
#: Present only on a truncated dead letter: the original value's size in bytes, its SHA-256 (hex), and
#: how many bytes of its head the dead letter's value holds.
HEADER_ORIGINAL_SIZE: Final = "desktrace-original-size"
HEADER_ORIGINAL_SHA256: Final = "desktrace-original-sha256"
HEADER_TRUNCATED: Final = "desktrace-truncated"

#: The producers' request limit (aiokafka's default ``max_request_size``): the broker's default
#: ``message.max.bytes`` is 1,048,588, which a batch of one record of this estimated size never exceeds.
MAX_REQUEST_BYTES: Final = 1_048_576
#: How much of a record too large to dead-letter whole is kept (its head).
HEAD_BYTES: Final = 64 * 1024
#: Room kept below the request limit for the batch header and per-record framing.
_FRAMING_BYTES: Final = 256

#: Error classes, a bounded set (used as metric label values too).
ERROR_CLASSES: Final = (
    "undecodable",  # not msgpack / JSON at all
    "unknown_type",  # a type this consumer does not know (a newer producer)
    "invalid",  # decodes, but violates the schema (missing field, wrong type, naive time)
    "late",  # older than the consumer's retention horizon
    "constraint",  # the database refused the record
    "other",
)


def deadletter_headers(
    error: str,
    error_class: str,
    service: str,
    source_topic: str = "",
    source_partition: int = -1,
    source_offset: int = -1,
) -> list[tuple[str, bytes]]:
    """Kafka headers describing why a record was dead-lettered. ``error`` must not contain field values
    beyond what the decoder reports about the record's structure."""
    return [
        *_fixed_headers(error, error_class, service, source_topic),
        (HEADER_SOURCE_PARTITION, str(source_partition).encode()),
        (HEADER_SOURCE_OFFSET, str(source_offset).encode()),
    ]


@functools.lru_cache(maxsize=4096)
def _fixed_headers(
    error: str, error_class: str, service: str, source_topic: str
) -> tuple[tuple[str, bytes], ...]:
    # Cached: a burst of garbage repeats the same reason thousands of times a second.
    if error_class not in ERROR_CLASSES:
        error_class = "other"
    return (
        (HEADER_ERROR, error.encode("utf-8", "replace")[:2000]),
        (HEADER_ERROR_CLASS, error_class.encode()),
        (HEADER_SERVICE, service.encode()),
        (HEADER_SOURCE_TOPIC, source_topic.encode()),
    )


Headers = list[tuple[str, bytes]]


class DeadLetter(NamedTuple):
    """One dead letter ready to produce: key and headers as received plus the error headers, and the value
    (whole, or its head when ``truncated``)."""

    key: bytes | None
    value: bytes
    headers: Headers
    truncated: bool


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    """An upper bound of a record's size in a produce request (batch header and framing included)."""
    size = _FRAMING_BYTES + len(key or b"") + len(value or b"")
    for name, v in headers or ():
        size += len(name) + len(v) + 10
    return size


def deadletter_record(
    key: bytes | None,
    value: bytes,
    headers: Headers,
    *,
    max_bytes: int = MAX_REQUEST_BYTES,
    force_head: bool = False,
) -> DeadLetter:
    """The dead letter of ``value`` with error ``headers`` (from :func:`deadletter_headers`): the value
    whole when the record fits in ``max_bytes``, else (or when ``force_head``: the broker refused the whole
    one) its first :data:`HEAD_BYTES` bytes with the original size and SHA-256 in headers. An oversized key
    is replaced by its head too (the digest covers the value only)."""
    small = len(value) < max_bytes // 2 and (key is None or len(key) < max_bytes // 4)  # the usual case
    if not force_head and (small or record_size(key, value, headers) <= max_bytes):
        return DeadLetter(key, value, headers, False)
    extra = [
        (HEADER_TRUNCATED, str(min(len(value), HEAD_BYTES)).encode()),
        (HEADER_ORIGINAL_SIZE, str(len(value)).encode()),
        (HEADER_ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
    ]
    if key is not None and len(key) > HEAD_BYTES:
        key = key[:HEAD_BYTES]
    return DeadLetter(key, value[:HEAD_BYTES], [*headers, *extra], True)


def header_map(headers: object) -> dict[str, str]:
    """Headers (a sequence of ``(name, bytes)``) as a dict of strings."""
    out: dict[str, str] = {}
    for name, value in headers or ():  # type: ignore[attr-defined]
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return out
