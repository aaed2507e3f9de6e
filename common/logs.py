"""Structured logging: one JSON object per line on stderr.

Log calls pass context as keyword data, never inside the message: ``log.info("batch written",
extra={"kv": {"rows": 500}})``. Window titles, URLs and field values are never logged at INFO or above;
pass only counts, ids and error classes.
"""

from __future__ import annotations

import json
import logging
import sys
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
            "msg": record.getMessage(),
        }
        kv = getattr(record, "kv", None)
        if isinstance(kv, dict):
            out.update(kv)
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(out, default=str)


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure the root logger for ``service``; call once at start-up."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s %(kv)s", defaults={"kv": ""})
        )
    else:
        handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "asyncio", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
