"""JSON logging and Prometheus metrics (aware of gunicorn's several workers).

Nothing here logs a pod's field values: decision lines carry paths, never values.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

DECISION_LOGGER: Final = "pod_replace_guard.decision"
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Decisions take tens of microseconds to a few milliseconds; the API server gives up
# after timeoutSeconds (a few seconds).
DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

# A pod has a few hundred field paths; this bounds the label set even for hostile input.
MAX_VIOLATION_LABELS: Final = 500
OTHER_LABEL: Final = "other"

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


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The webhook's metrics, registered in ``registry`` (one per app, for tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "pod_replace_guard_admission_requests",
            "Admission reviews answered, by operation and decision "
            "(allowed, denied, warned, audited, skipped).",
            ["operation", "decision"],
            registry=registry,
        )
        self.duration = Histogram(
            "pod_replace_guard_admission_duration_seconds",
            "Time from request received to response built, for well-formed reviews.",
            ["operation"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.violations = Counter(
            "pod_replace_guard_violations",
            "Frozen fields found changed, by path with list indexes collapsed.",
            ["path"],
            registry=registry,
        )
        self.malformed = Counter(
            "pod_replace_guard_malformed_requests",
            "Requests refused with a 4xx status, by reason.",
            ["reason"],
            registry=registry,
        )
        self.errors = Counter(
            "pod_replace_guard_internal_errors",
            "Requests answered 500 because of an unexpected exception.",
            registry=registry,
        )
        self._violation_labels: set[str] = set()
        self.in_flight = Gauge(
            "pod_replace_guard_in_flight_requests",
            "Admission requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def count_violation(self, path: str) -> None:
        """Count one violation under its rule-level label, keeping the label set bounded.

        The API server drops unknown fields, but any other client could send made-up
        field names; past MAX_VIOLATION_LABELS distinct labels (per process) the rest
        are counted as "other".
        """
        label = metric_path(path)
        if label not in self._violation_labels:
            if len(self._violation_labels) >= MAX_VIOLATION_LABELS:
                label = OTHER_LABEL
            self._violation_labels.add(label)
        self.violations.labels(path=label).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format: across all workers under gunicorn."""
        if multiprocess_enabled():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def certificate_reload_counter(registry: CollectorRegistry | None = None) -> Counter:
    return Counter(
        "pod_replace_guard_certificate_reloads",
        "Serving certificate reloads after the files changed, by result (success, failure).",
        ["result"],
        registry=registry if registry is not None else CollectorRegistry(),
    )


def certificate_expiry_gauge(registry: CollectorRegistry | None = None) -> Gauge:
    return Gauge(
        "pod_replace_guard_certificate_expiry_timestamp_seconds",
        "When the serving certificate in use expires (Unix time); the earliest across workers.",
        registry=registry if registry is not None else CollectorRegistry(),
        multiprocess_mode="livemin",
    )


def metric_path(path: str) -> str:
    """A violation path as a bounded metric label: ``spec.containers[*].env``.

    Indexes collapse to ``[*]``; below the second level only fields of list items
    (containers, volumes, ...) are kept, so user-chosen map keys (nodeSelector,
    resources) never become label values.
    """
    segments: list[str] = []
    for part in _split_top(path):
        collapsed = _collapse_indexes(part)
        segments.append(collapsed)
        if len(segments) >= 2 and not collapsed.endswith("[*]"):
            break
        if len(segments) >= 3:
            segments[-1] = segments[-1].removesuffix("[*]")
            break
    return ".".join(segments)


def _split_top(path: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quoted = False
    escaped = False
    for char in path:
        if escaped:  # the character after a backslash inside a quoted key
            escaped = False
            current += char
            continue
        if quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        if char == "." and not quoted:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts


def _collapse_indexes(segment: str) -> str:
    head, bracket, _ = segment.partition("[")
    if not bracket:
        return segment
    return (head or "") + "[*]" if segment[len(head) + 1 : len(head) + 2].isdigit() else head
