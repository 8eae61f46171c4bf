"""JSON log lines on stdout, for the app and for gunicorn's own loggers.

Nothing here logs a pod's field values: decision lines carry paths, never values.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any, Final

import orjson

DECISION_LOGGER: Final = "pod_replace_guard.decision"

_STANDARD_RECORD_KEYS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@functools.lru_cache(maxsize=4)
def _second(epoch_seconds: int) -> str:
    # One strftime per second rather than per line: every request logs one line.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": f"{_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_KEYS and not key.startswith("_") and key != "fields":
                entry[key] = value
        # Fields whose names LogRecord reserves (name, ...) travel in extra={"fields": ...}.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str) -> None:
    """JSON lines on stdout for every logger; call before the app is created."""
    # The JSON lines carry no source location, thread or process: skip collecting them
    # for every record (the logging HOWTO's "Optimization"); each request logs a line,
    # and the caller's frame lookup alone was a twentieth of a small review's CPU.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def gunicorn_logconfig(level: str) -> dict[str, Any]:
    """gunicorn's own loggers in the same JSON format (its ``logconfig_dict``)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
        },
    }
