"""Structured logging: one JSON object per line on stderr.

Log calls pass context as keyword data, never inside the message: ``log.info("batch written",
extra={"kv": {"rows": 500}})``. Window titles, URLs and field values are never logged at INFO or above;
pass only counts, ids and error classes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with ``ts``, ``level``, ``logger``, ``msg`` and the ``kv`` extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": _CONTROL.sub("", record.getMessage()),
        }
        kv = getattr(record, "kv", None)
        if isinstance(kv, dict):
            out.update(kv)
        outage = getattr(record, OUTAGE_ATTR, None)  # the first client error of an outage (OutageFilter)
        if isinstance(outage, dict):
            out["msg"] = OUTAGE_MSG
            out.update(outage)
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(out, default=str)


#: What a per-attempt connection error of the Kafka client looks like (aiokafka, and Faust around it).
_CONNECTION_ERROR = re.compile(
    r"Unable (to )?connect|Connect call failed|Unable to (update|request) metadata|KafkaConnectionError|"
    r"NodeNotReadyError|Connection (refused|reset)|Marking the coordinator dead|Failed fetch messages|"
    r"Unable to bootstrap|Closing connection|connection .* (lost|closed)|Heartbeat failed|"
    r"Got error produce response|NotLeaderForPartition|Coordinator .* (not available|dead)",
    re.IGNORECASE,
)
_CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode")
#: What the first client error of an outage is logged as; the filter marks the record with ``OUTAGE_ATTR``
#: (its own fields) and our formatters render it, so other handlers (pytest's caplog) see it unchanged.
OUTAGE_MSG = "Kafka connection failing; repeats suppressed until it recovers"
OUTAGE_ATTR = "desktrace_outage"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class OutageFilter(logging.Filter):
    """Collapses the Kafka client's per-attempt connection errors into two lines per outage.

    The first such record of an outage is replaced by one WARNING ("Kafka connection failing", with the
    client's message); later ones are dropped and counted. When ``quiet_s`` seconds pass without another,
    one WARNING "Kafka connection recovered" gives the outage's length (first to last failed attempt) and
    how many lines were suppressed. Other records pass unchanged."""

    def __init__(self, quiet_s: float = 10.0, emit: Any = None) -> None:
        super().__init__()
        self.quiet_s = quiet_s
        self._lock = threading.Lock()
        self._first = self._last = 0.0
        self._suppressed = 0
        self._timer: threading.Timer | None = None
        self._emit = emit
        self.log = logging.getLogger("desktrace.kafka")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_CLIENT_LOGGERS) or record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {type(record.exc_info[1]).__name__}"
        if not _CONNECTION_ERROR.search(text):
            return True
        with self._lock:
            now = time.monotonic()
            first = self._first == 0.0
            if first:
                self._first = now
                self._suppressed = 0
            else:
                self._suppressed += 1
            self._last = now
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.quiet_s, self._recovered)
            self._timer.daemon = True
            self._timer.start()
        if first:
            setattr(record, OUTAGE_ATTR, {"client_error": _CONTROL.sub(" ", text)[:300],
                                          "client_logger": record.name})
            return True
        return False

    def _recovered(self) -> None:
        with self._lock:
            if self._first == 0.0:
                return
            outage = self._last - self._first
            suppressed = self._suppressed
            self._first = self._last = 0.0
            self._timer = None
        self.log.warning(
            "Kafka connection recovered (no connection error for %.0fs)", self.quiet_s,
            extra={"kv": {"outage_s": round(outage, 1), "suppressed_lines": suppressed}},
        )


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger for ``service``; call once at start-up."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s %(kv)s", defaults={"kv": ""})
        )
    else:
        handler.setFormatter(JsonFormatter(service))
    handler.addFilter(OutageFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "asyncio", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
