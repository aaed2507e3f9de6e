"""Dead-letter records: the bytes as received, the error in headers (``shared/spec/events.md``)."""

from __future__ import annotations

from typing import Final

HEADER_ERROR: Final = "desktrace-error"
HEADER_ERROR_CLASS: Final = "desktrace-error-class"
HEADER_SOURCE_TOPIC: Final = "desktrace-source-topic"
HEADER_SOURCE_PARTITION: Final = "desktrace-source-partition"
HEADER_SOURCE_OFFSET: Final = "desktrace-source-offset"
HEADER_SERVICE: Final = "desktrace-service"

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
    if error_class not in ERROR_CLASSES:
        error_class = "other"
    return [
        (HEADER_ERROR, error.encode("utf-8", "replace")[:2000]),
        (HEADER_ERROR_CLASS, error_class.encode()),
        (HEADER_SERVICE, service.encode()),
        (HEADER_SOURCE_TOPIC, source_topic.encode()),
        (HEADER_SOURCE_PARTITION, str(source_partition).encode()),
        (HEADER_SOURCE_OFFSET, str(source_offset).encode()),
    ]


def header_map(headers: object) -> dict[str, str]:
    """Headers (a sequence of ``(name, bytes)``) as a dict of strings."""
    out: dict[str, str] = {}
    for name, value in headers or ():  # type: ignore[attr-defined]
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return out
