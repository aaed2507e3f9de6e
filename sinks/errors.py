"""Which database errors are worth retrying and which mean "this record can never be written"."""

from __future__ import annotations

import enum

import asyncpg
import asyncpg.exceptions as pgx


class ErrorKind(enum.Enum):
    """How the sink reacts to an exception raised while writing a batch."""

    RETRY = "retry"  # connection, timeout, server shutting down, transient conflict: back off, retry all
    DATA = "data"  # a record the database will never accept: find it (bisect), dead-letter it
    PARTITION = "partition"  # a partition disappeared (retention ran elsewhere): re-create, retry


class Reject(Exception):
    """A record that cannot be written; ``error_class`` is one of ``proto.deadletter.ERROR_CLASSES``."""

    def __init__(self, message: str, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


_RETRY_PG = (
    pgx.PostgresConnectionError,  # class 08
    pgx.CannotConnectNowError,  # 57P03: starting up / shutting down
    pgx.OperatorInterventionError,  # class 57: admin shutdown, crash shutdown, query canceled
    pgx.InsufficientResourcesError,  # class 53: disk full, out of memory, too many connections
    pgx.TransactionRollbackError,  # class 40: serialization failure, deadlock
    pgx.LockNotAvailableError,
    pgx.ObjectInUseError,
)


def classify(exc: BaseException) -> ErrorKind:
    """Classify an exception from a write. Unknown server errors are retried (never lose data); data
    errors are those of SQLSTATE classes 22, 23 and 54 and client-side encoding failures of one value."""
    if isinstance(exc, pgx.CheckViolationError) and "no partition of relation" in str(exc):
        return ErrorKind.PARTITION
    if isinstance(exc, pgx.DataError | pgx.IntegrityConstraintViolationError):
        return ErrorKind.DATA
    if isinstance(exc, pgx.ProgramLimitExceededError):
        # class 54, e.g. an index row over btree's 2,704 bytes (a huge user key): the same record fails
        # every time, so it is a poison record to bisect out, never a reason to retry for ever
        return ErrorKind.DATA
    if isinstance(exc, pgx._base.DataError):  # client-side: "invalid input for query argument"
        return ErrorKind.DATA
    if isinstance(exc, _RETRY_PG):
        return ErrorKind.RETRY
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return ErrorKind.RETRY
    if isinstance(exc, OverflowError | UnicodeError | ValueError | TypeError):
        return ErrorKind.DATA  # asyncpg could not encode a value (int out of range, lone surrogate...)
    return ErrorKind.RETRY


def reason_of(exc: BaseException) -> str:
    """A short description of a data error for the dead-letter header: the error class and SQLSTATE,
    plus the server's message (which names the constraint or the type, not the value)."""
    state = getattr(exc, "sqlstate", None)
    text = str(exc).split("\n", 1)[0][:300]
    return f"{type(exc).__name__}{f' [{state}]' if state else ''}: {text}"
