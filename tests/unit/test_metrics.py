"""Prometheus metrics and their bounded labels (webhook.metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.support.reviews import example_pod
from tests.unit.fuzzing import FUZZ
from webhook.metrics import (
    DURATION_BUCKETS,
    Metrics,
    certificate_reload_counter,
    metric_path,
)
from webhook.rules import PathSegments, find_violations
from webhook.settings import MULTIPROC_ENV

# --- metric_path ----------------------------------------------------------------------------

METRIC_PATHS: list[tuple[PathSegments, str]] = [
    (("spec", "containers", 0, "env", 3, "value"), "spec.containers[*].env"),
    (("spec", "containers", 12, "env"), "spec.containers[*].env"),
    (("spec", "containers", 0, "image"), "spec.containers[*].image"),
    (("spec", "containers"), "spec.containers"),
    (("spec", "containers", 0, "resources", "limits", "cpu"), "spec.containers[*].resources"),
    (
        ("spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"),
        "spec.containers[*].resources",
    ),
    (("spec", "initContainers", 1, "command", 2), "spec.initContainers[*].command"),
    (("spec", "volumes", 1, "secret", "secretName"), "spec.volumes[*].secret"),
    (("spec", "nodeName"), "spec.nodeName"),
    (("spec", "nodeSelector", "disktype"), "spec.nodeSelector"),
    (("spec", "nodeSelector", "kubernetes.io/hostname"), "spec.nodeSelector"),
    (("spec", "nodeSelector", "a.b.c/d"), "spec.nodeSelector"),
    (("spec", "overhead", "cpu"), "spec.overhead"),
    (("spec", "securityContext", "runAsUser"), "spec.securityContext"),
    (("spec", "affinity", "nodeAffinity", "required", "nodeSelectorTerms"), "spec.affinity"),
    (("metadata", "finalizers"), "metadata.finalizers"),
    (("metadata", "finalizers", 0), "metadata.finalizers[*]"),
    (("metadata", "ownerReferences", 0, "uid"), "metadata.ownerReferences[*].uid"),
    (("metadata", "name"), "metadata.name"),
    (("kind",), "kind"),
    (("spec",), "spec"),
]


@pytest.mark.parametrize(("path", "want"), METRIC_PATHS, ids=[str(p) for p, _ in METRIC_PATHS])
def test_metric_path_collapses_indexes_and_drops_map_keys(path: PathSegments, want: str) -> None:
    assert metric_path(path) == want


MARKER = "zq"

# Maps whose keys the pod's author chooses, as the engine reports them.
USER_KEYED_MAPS = [
    "spec.nodeSelector",
    "spec.overhead",
    "spec.containers[0].resources.limits",
    "spec.initContainers[0].resources.requests",
    "spec.volumes[0].csi.volumeAttributes",
]


def _set_map(pod: dict[str, Any], where: str, mapping: dict[str, str]) -> None:
    node: Any = pod
    parts = where.replace("[0]", ".0").split(".")
    for part, following in zip(parts, [*parts[1:], None], strict=True):
        if following is None:
            node[part] = mapping
        elif part.isdigit():
            node = node[int(part)]
        else:
            node = node.setdefault(part, [{"name": "x"}] if following.isdigit() else {})


@FUZZ
@given(where=st.sampled_from(USER_KEYED_MAPS), key=st.text(max_size=12))
def test_fuzz_map_keys_never_become_metric_labels(where: str, key: str) -> None:
    old, new = example_pod(), example_pod()
    for pod in (old, new):
        _set_map(pod, where, {})
    _set_map(new, where, {MARKER + key: "v"})
    violations = find_violations(old, new)
    assert violations
    for violation in violations:
        label = metric_path(violation.segments)
        assert MARKER not in label, (violation.path, label)
        assert "[" not in label or label.count("[*]") == label.count("[")


def test_a_key_that_is_not_an_identifier_ends_the_label() -> None:
    # Keys this shape can only appear below a list item or at the top level of a
    # non-pod object; the label must still stay key-free.
    assert metric_path(("spec", "containers", 0, 'a"b.zq')) == "spec.containers[*]"
    assert metric_path(('a"b.zq',)) == "other"


@FUZZ
@given(path=st.lists(st.one_of(st.text(max_size=12), st.integers(0, 99)), max_size=8))
def test_fuzz_metric_path_accepts_any_path(path: list[str | int]) -> None:
    label = metric_path(tuple(path))
    assert isinstance(label, str)
    assert label.count(".") <= 2
    for part in label.split("."):
        assert part == "other" or part.removesuffix("[*]") in path


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_exposition_of_a_private_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    metrics = Metrics(CollectorRegistry())
    metrics.requests.labels(operation="UPDATE", decision="denied").inc()
    metrics.violations.labels(path="spec.containers[*].env").inc(2)
    metrics.malformed.labels(reason="request body is empty").inc()
    metrics.errors.inc()
    metrics.duration.labels(operation="UPDATE").observe(0.0007)
    text = metrics.exposition().decode()
    assert (
        'pod_replace_guard_admission_requests_total{decision="denied",operation="UPDATE"} 1.0'
        in text
    )
    assert 'pod_replace_guard_violations_total{path="spec.containers[*].env"} 2.0' in text
    assert 'pod_replace_guard_malformed_requests_total{reason="request body is empty"} 1.0' in text
    assert "pod_replace_guard_internal_errors_total 1.0" in text
    assert "pod_replace_guard_in_flight_requests 0.0" in text
    assert (
        'pod_replace_guard_admission_duration_seconds_bucket{le="0.001",operation="UPDATE"} 1.0'
        in text
    )


def test_two_apps_have_independent_metrics() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.errors.inc()
    assert first.errors._value.get() == 1.0
    assert second.errors._value.get() == 0.0


def test_duration_buckets_fit_millisecond_latencies() -> None:
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)
    assert DURATION_BUCKETS[0] <= 0.001
    assert sum(1 for bucket in DURATION_BUCKETS if bucket <= 0.01) >= 4
    assert DURATION_BUCKETS[-1] >= 2.5


def test_certificate_reload_counter() -> None:
    registry = CollectorRegistry()
    counter = certificate_reload_counter(registry)
    counter.labels(result="success").inc()
    counter.labels(result="failure").inc(2)
    assert (
        registry.get_sample_value(
            "pod_replace_guard_certificate_reloads_total", {"result": "failure"}
        )
        == 2.0
    )
    # Without a registry it is private, so it can be created twice.
    certificate_reload_counter().labels(result="success").inc()
    certificate_reload_counter().labels(result="success").inc()


# --- file-backed values (multiprocess mode) ----------------------------------------------------

FORK_CHECK = r"""
import json, os, sys
calls = [0]
real_getpid = os.getpid
def counting_getpid():
    calls[0] += 1
    return real_getpid()
os.getpid = counting_getpid  # before prometheus_client takes os.getpid as its default

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from webhook.metrics import Metrics

metrics = Metrics(CollectorRegistry())
metrics.errors.inc()
before = calls[0]
for _ in range(3):
    metrics.errors.inc()
    metrics.in_flight.inc()
    metrics.in_flight.dec()
    metrics.count_decision("UPDATE", "allowed", 0.0004)
getpid_per_write = (calls[0] - before) / 18
child = os.fork()
if child == 0:
    metrics.errors.inc(10)
    os._exit(0)
os.waitpid(child, 0)
registry = CollectorRegistry()
MultiProcessCollector(registry)
print(json.dumps({
    "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])),
    "parent": os.getpid(), "child": child, "getpid_per_write": getpid_per_write,
    "errors": registry.get_sample_value("pod_replace_guard_internal_errors_total"),
    "requests": registry.get_sample_value(
        "pod_replace_guard_admission_requests_total",
        {"operation": "UPDATE", "decision": "allowed"}),
}))
"""


def test_file_backed_values_take_the_pid_from_memory_and_still_follow_a_fork(
    tmp_path: Path,
) -> None:
    """No getpid() per write, yet a forked child writes files of its own pid."""
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", FORK_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["getpid_per_write"] == 0
    assert f"counter_{got['parent']}.db" in got["files"]
    assert f"counter_{got['child']}.db" in got["files"]  # the child's own file
    assert got["errors"] == 4 + 10  # the parent's writes and the child's, summed
    assert got["requests"] == 3
