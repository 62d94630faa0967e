"""Structured logging: one event per line, as `key=value` text or as JSON.

Every farmd component logs through `log_event(logger, level, event, **fields)`, so each
line carries an event name and the ids that matter (job, frame, worker, attempt) as
fields rather than prose, and a log shipper can parse either format.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def log_event(logger: logging.Logger, level: str, event: str, **fields: Any) -> None:
    number = _LEVELS.get(level, logging.INFO)
    if logger.isEnabledFor(number):
        logger.log(number, event, extra={"farmd_fields": fields})


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "farmd_fields", {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}",
            record.levelname.lower(),
            record.name,
            repr(record.getMessage()) if " " in record.getMessage() else record.getMessage(),
        ]
        parts.extend(f"{key}={_text(value)}" for key, value in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        body.update(getattr(record, "farmd_fields", {}))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text) if (" " in text or not text) else text


def configure(level: str = "info", *, json_lines: bool = False) -> None:
    """Send farmd's logs to stderr, one event per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    root = logging.getLogger("farmd")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    root.propagate = False
