"""Prometheus metrics, aggregated across gunicorn's worker processes.

Under gunicorn every worker writes its values to files in the directory named by
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them. prometheus_client chooses
file-backed values when it is first imported, so the directory is set (by
:func:`webhook.gunicorn_app.prepare_metrics_dir`) before anything imports this module.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client import values as prometheus_values

from webhook.rules import IDENTIFIER, PathSegments
from webhook.settings import MULTIPROC_ENV

# Decisions take tens of microseconds to a few milliseconds; the API server gives up
# after timeoutSeconds (a few seconds).
DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

# A pod has a few hundred field paths; this bounds the label set even for hostile input.
MAX_VIOLATION_LABELS: Final = 500
OTHER_LABEL: Final = "other"
# (operation, outcome) pairs whose metric children are kept: 4 operations x 5 outcomes.
MAX_CACHED_DECISION_LABELS: Final = 20


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _ProcessId:
    """This process's id, refreshed in the child after every fork.

    prometheus_client's file-backed values compare ``os.getpid()`` with the pid they
    last saw on every write, to notice a fork and open the child's own files. glibc
    caches no pid, so that is a system call per write, about ten per review; this gives the
    same answer from memory, and ``os.register_at_fork`` keeps it right."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self.refresh)

    def refresh(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


# prometheus_client picked file-backed values when it was first imported (just above);
# the same values, with the pid from memory. No metric exists yet (module docstring).
if getattr(prometheus_values.ValueClass, "_multiprocess", False):
    prometheus_values.ValueClass = prometheus_values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier=_ProcessId()
    )


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
        self._decision_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.in_flight = Gauge(
            "pod_replace_guard_in_flight_requests",
            "Admission requests being handled now.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def count_decision(self, operation: str, outcome: str, seconds: float) -> None:
        """One answered review: its count by outcome and its duration.

        The labelled children are kept per (operation, outcome), a handful of pairs,
        rather than looked up again on every request."""
        key = (operation, outcome)
        children = self._decision_children.get(key)
        if children is None:
            children = (
                self.requests.labels(operation=operation, decision=outcome),
                self.duration.labels(operation=operation),
            )
            if len(self._decision_children) < MAX_CACHED_DECISION_LABELS:
                self._decision_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_violation(self, path: PathSegments) -> None:
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


def metric_path(path: PathSegments) -> str:
    """A violation path as a bounded metric label: ``spec.containers[*].env``.

    Indexes collapse to ``[*]``; below the second level only fields of list items
    (containers, volumes, ...) are kept, and a key that is not an identifier ends the
    label, so user-chosen map keys (nodeSelector, resources, annotations) never become
    label values.
    """
    parts: list[str] = []
    for segment in path:
        if isinstance(segment, int):
            if not parts:
                break
            if not parts[-1].endswith("[*]"):
                parts[-1] += "[*]"
            continue
        if len(parts) >= 3 or (len(parts) == 2 and not parts[-1].endswith("[*]")):
            break
        if not IDENTIFIER.match(segment):
            break
        parts.append(segment)
    if len(parts) >= 3:
        parts[-1] = parts[-1].removesuffix("[*]")
    return ".".join(parts) or OTHER_LABEL
