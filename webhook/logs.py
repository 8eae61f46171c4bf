"""JSON log lines on stdout, for the app and for gunicorn's own loggers.

Nothing here logs a pod's field values: decision lines carry paths, never values.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from typing import IO, Any, Final

import orjson

DECISION_LOGGER: Final = "pod_replace_guard.decision"

_STANDARD_RECORD_KEYS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@functools.lru_cache(maxsize=4)
def _second(epoch_seconds: int) -> str:
    # One strftime per second rather than per line: every request logs one line.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))


def _timestamp(epoch: float, milliseconds: int) -> str:
    return f"{_second(int(epoch))}.{milliseconds:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record.created, int(record.msecs)),
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


class JsonLineHandler(logging.StreamHandler[IO[str]]):
    """The StreamHandler of the JSON lines, which can also take a line already encoded
    (:func:`log_info_line`) and write it with one ``write(2)`` to the stream's file
    descriptor, under the handler's lock as any record."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._fd = _file_descriptor(self.stream)

    def setStream(self, stream: IO[str]) -> IO[str] | None:
        previous = super().setStream(stream)
        self._fd = _file_descriptor(self.stream)
        return previous

    def write_line(self, line: bytes) -> None:
        """Write one encoded line (with its newline). Raises OSError as the stream would."""
        self.acquire()
        try:
            if self._fd is None:  # a stream with no descriptor (a test's capture)
                self.stream.write(line.decode())
                self.stream.flush()
                return
            self.stream.flush()  # nothing written through the stream waits behind the line
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
        finally:
            self.release()


def _file_descriptor(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _sole_json_handler(logger: logging.Logger, level: int) -> JsonLineHandler | None:
    """The one handler a record of ``logger`` at ``level`` would reach, when that is a
    :class:`JsonLineHandler` with no filters on the way; None otherwise (a test's
    caplog, an application's own handlers), and the record must go through logging."""
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        if node.handlers:
            (handler, *others) = node.handlers
            if others or not isinstance(handler, JsonLineHandler) or handler.filters:
                return None
            return handler if level >= handler.level else None
        if not node.propagate:
            return None
        node = node.parent
    return None


def log_info_line(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """``logger.info(message, extra={"fields": fields})``, the line every review logs.

    When the record would reach :func:`configure_logging`'s handler alone, the line
    that :class:`JsonFormatter` would write is built here and written at once: no
    LogRecord, no walk of the handlers, no text encoding (2 µs instead of 7 µs, hot;
    docs/benchmarks.md). Anything else (caplog, other handlers, filters) gets the
    record as usual, and so does a line the stream refuses: logging reports that its
    own way rather than failing the review.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _sole_json_handler(logger, logging.INFO)
    if handler is not None:
        now = time.time()
        entry: dict[str, Any] = {
            "time": _timestamp(now, int((now - int(now)) * 1000)),
            "level": "info",
            "logger": logger.name,
            "message": message,
            **fields,
        }
        try:
            handler.write_line(orjson.dumps(entry, default=str, option=orjson.OPT_APPEND_NEWLINE))
            return
        except (OSError, ValueError):  # a broken pipe, a closed stream
            pass
    logger.info(message, extra={"fields": fields})


def configure_logging(level: str) -> None:
    """JSON lines on stdout for every logger; call before the app is created."""
    # The JSON lines carry no source location, thread or process: skip collecting them
    # for every record (the logging HOWTO's "Optimization"); each request logs a line,
    # and the caller's frame lookup alone was a twentieth of a small review's CPU.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = JsonLineHandler(sys.stdout)
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
                "class": "webhook.logs.JsonLineHandler",
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
