"""The replace rules (webhook.rules.find_violations), table-driven on the example pod.

In the style of the agnhost webhook tests: each case names a change to the pod of the
"Replacing a Specified Pod" document and the exact list of paths the engine must
report (empty: the update is allowed).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support.reviews import example_pod
from tests.unit.fuzzing import FUZZ, JSON_OBJECTS, JSON_VALUES, canonical
from tests.unit.podpaths import (
    Change,
    Pod,
    appending,
    combine,
    drop,
    get,
    nothing,
    put,
    removing,
    setting,
)
from webhook.rules import (
    MAX_DEPTH,
    QUICK_COMPARE_DEPTH,
    SERVER_MANAGED_PATHS,
    UPDATABLE_PATHS,
    NestingTooDeep,
    Violation,
    describe_updatable_fields,
    find_violations,
    is_being_deleted,
    render_path,
)

SECRET = "s3cr3t-DO-NOT-LOG-8f14e45f"

INIT_CONTAINERS = [
    {"name": "init-db", "image": "busybox:1.36", "command": ["sh", "-c", "true"]},
    {"name": "init-cache", "image": "busybox:1.36"},
]
SIDECAR = {"name": "sidecar", "image": "envoy:v1", "ports": [{"containerPort": 9901}]}
DELETION_TIMESTAMP = "2016-08-08T08:00:00Z"


def with_init_containers(pod: Pod) -> None:
    pod["spec"]["initContainers"] = copy.deepcopy(INIT_CONTAINERS)


def with_sidecar(pod: Pod) -> None:
    pod["spec"]["containers"].append(copy.deepcopy(SIDECAR))


def paths(old: Pod, new: Pod) -> list[str]:
    return [violation.path for violation in find_violations(old, new)]


@dataclass(frozen=True)
class Case:
    name: str
    change: Change  # applied to the new pod only
    want: tuple[str, ...] = ()
    base: Change = nothing  # applied to both pods first
    old_only: Change = nothing  # applied to the old pod only, after base

    def run(self) -> list[str]:
        old, new = example_pod(), example_pod()
        self.base(old)
        self.base(new)
        self.old_only(old)
        self.change(new)
        return paths(old, new)


def ids(case: Case) -> str:
    return case.name


# --- updatable fields: each one changed alone, set and unset ----------------------

UPDATABLE_CASES = [
    Case("selfLink changed", setting("metadata.selfLink", "/api/v1/namespaces/x/pods/y")),
    Case("selfLink unset", removing("metadata.selfLink")),
    Case("resourceVersion changed", setting("metadata.resourceVersion", "3417")),
    Case("resourceVersion unset", removing("metadata.resourceVersion")),
    Case("clusterName set", setting("metadata.clusterName", "east")),
    Case(
        "clusterName unset",
        removing("metadata.clusterName"),
        base=setting("metadata.clusterName", "east"),
    ),
    Case("generateName set", setting("metadata.generateName", "hello-")),
    Case(
        "generateName unset",
        removing("metadata.generateName"),
        base=setting("metadata.generateName", "hello-"),
    ),
    Case("label value changed", setting("metadata.labels.name", "other")),
    Case("label added", setting("metadata.labels.tier", "backend")),
    Case(
        "label with a prefixed key added",
        lambda pod: pod["metadata"]["labels"].update({"app.kubernetes.io/name": "x"}),
    ),
    Case("label removed", removing("metadata.labels.name")),
    Case("labels unset", removing("metadata.labels")),
    Case("labels emptied", setting("metadata.labels", {})),
    Case("annotations set", setting("metadata.annotations", {"team": "a", "k8s.io/x": "y"})),
    Case(
        "annotation value changed",
        setting("metadata.annotations.team", "b"),
        base=setting("metadata.annotations", {"team": "a"}),
    ),
    Case(
        "annotations unset",
        removing("metadata.annotations"),
        base=setting("metadata.annotations", {"team": "a"}),
    ),
    Case("one-megabyte annotation", setting("metadata.annotations.big", "x" * (1 << 20))),
    Case("container image changed", setting("spec.containers[0].image", "beego:v2")),
    Case("container image unset", removing("spec.containers[0].image")),
    Case(
        "container image set where it was absent",
        setting("spec.containers[0].image", "beego:v2"),
        base=removing("spec.containers[0].image"),
    ),
    Case(
        "second container image changed",
        setting("spec.containers[1].image", "envoy:v2"),
        base=with_sidecar,
    ),
    Case(
        "init container image changed",
        setting("spec.initContainers[0].image", "busybox:1.37"),
        base=with_init_containers,
    ),
    Case(
        "second init container image changed",
        setting("spec.initContainers[1].image", "alpine:3"),
        base=with_init_containers,
    ),
    Case(
        "init container image unset",
        removing("spec.initContainers[1].image"),
        base=with_init_containers,
    ),
    Case("activeDeadlineSeconds set", setting("spec.activeDeadlineSeconds", 30)),
    Case(
        "activeDeadlineSeconds lowered",
        setting("spec.activeDeadlineSeconds", 10),
        base=setting("spec.activeDeadlineSeconds", 30),
    ),
    Case(
        "activeDeadlineSeconds unset",
        removing("spec.activeDeadlineSeconds"),
        base=setting("spec.activeDeadlineSeconds", 30),
    ),
    Case(
        "toleration added",
        appending("spec.tolerations", {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}),
    ),
    Case(
        "tolerations unset",
        removing("spec.tolerations"),
        base=setting("spec.tolerations", [{"key": "gpu", "operator": "Exists"}]),
    ),
    Case(
        "toleration changed in place",
        setting("spec.tolerations[0].tolerationSeconds", 300),
        base=setting("spec.tolerations", [{"key": "gpu", "operator": "Exists"}]),
    ),
    Case(
        "every updatable field at once",
        combine(
            setting("metadata.selfLink", "/api/v1/namespaces/default/pods/other"),
            setting("metadata.resourceVersion", "9999"),
            setting("metadata.clusterName", "west"),
            setting("metadata.generateName", "hello-"),
            setting("metadata.labels", {"name": "other", "tier": "web"}),
            setting("metadata.annotations", {"note": "x"}),
            setting("spec.initContainers[0].image", "busybox:2"),
            setting("spec.initContainers[1].image", "busybox:3"),
            setting("spec.containers[0].image", "beego:v3"),
            setting("spec.activeDeadlineSeconds", 60),
            setting("spec.tolerations", [{"key": "a", "operator": "Exists"}]),
        ),
        base=with_init_containers,
    ),
    Case(
        "every updatable field unset at once",
        combine(
            removing("metadata.selfLink"),
            removing("metadata.resourceVersion"),
            removing("metadata.clusterName"),
            removing("metadata.generateName"),
            removing("metadata.labels"),
            removing("metadata.annotations"),
            removing("spec.initContainers[0].image"),
            removing("spec.containers[0].image"),
            removing("spec.activeDeadlineSeconds"),
            removing("spec.tolerations"),
        ),
        base=combine(
            with_init_containers,
            setting("metadata.clusterName", "east"),
            setting("metadata.generateName", "hello-"),
            setting("metadata.annotations", {"a": "b"}),
            setting("spec.activeDeadlineSeconds", 30),
            setting("spec.tolerations", [{"key": "a", "operator": "Exists"}]),
        ),
    ),
]


@pytest.mark.parametrize("case", UPDATABLE_CASES, ids=ids)
def test_updatable_changes_are_allowed(case: Case) -> None:
    assert case.run() == []


def test_updatable_table_covers_every_rule() -> None:
    touched = {
        "metadata.selfLink",
        "metadata.resourceVersion",
        "metadata.clusterName",
        "metadata.generateName",
        "metadata.labels",
        "metadata.annotations",
        "spec.initContainers[*].image",
        "spec.containers[*].image",
        "spec.activeDeadlineSeconds",
        "spec.tolerations",
    }
    assert set(UPDATABLE_PATHS) == touched
    assert describe_updatable_fields() == ", ".join(UPDATABLE_PATHS)


def test_unchanged_pod_has_no_violations() -> None:
    assert paths(example_pod(), example_pod()) == []


# --- frozen fields: each denied with the exact paths ----------------------------

FROZEN_CASES = [
    # metadata
    Case("name", setting("metadata.name", "other"), ("metadata.name",)),
    Case("namespace", setting("metadata.namespace", "prod"), ("metadata.namespace",)),
    Case("uid", setting("metadata.uid", "0000"), ("metadata.uid",)),
    Case("uid removed", removing("metadata.uid"), ("metadata.uid",)),
    Case(
        "creationTimestamp",
        setting("metadata.creationTimestamp", "2020-01-01T00:00:00Z"),
        ("metadata.creationTimestamp",),
    ),
    Case("finalizer added", setting("metadata.finalizers", ["a/b"]), ("metadata.finalizers",)),
    Case(
        "finalizer replaced in place",
        setting("metadata.finalizers", ["x/new"]),
        ("metadata.finalizers[0]",),
        base=setting("metadata.finalizers", ["x/old"]),
    ),
    Case(
        "ownerReferences added",
        setting("metadata.ownerReferences", [{"kind": "ReplicaSet", "name": "rs", "uid": "1"}]),
        ("metadata.ownerReferences",),
    ),
    Case(
        "ownerReference uid changed",
        setting("metadata.ownerReferences[0].uid", "2"),
        ("metadata.ownerReferences[0].uid",),
        base=setting(
            "metadata.ownerReferences", [{"kind": "ReplicaSet", "name": "rs", "uid": "1"}]
        ),
    ),
    Case(
        "deletionGracePeriodSeconds",
        setting("metadata.deletionGracePeriodSeconds", 0),
        ("metadata.deletionGracePeriodSeconds",),
    ),
    Case(
        "deletionTimestamp set by the user",
        setting("metadata.deletionTimestamp", DELETION_TIMESTAMP),
        ("metadata.deletionTimestamp",),
    ),
    Case("unknown metadata field", setting("metadata.extra", "x"), ("metadata.extra",)),
    # spec
    Case("nodeName", setting("spec.nodeName", "node-2"), ("spec.nodeName",)),
    Case("nodeName removed", removing("spec.nodeName"), ("spec.nodeName",)),
    Case(
        "nodeSelector added (identifier key)",
        setting("spec.nodeSelector", {"disktype": "ssd"}),
        ("spec.nodeSelector.disktype",),
    ),
    Case(
        "nodeSelector added (prefixed key)",
        setting("spec.nodeSelector", {"kubernetes.io/hostname": "node-1"}),
        ('spec.nodeSelector["kubernetes.io/hostname"]',),
    ),
    Case(
        "nodeSelector replaced by a scalar",
        setting("spec.nodeSelector", "node-1"),
        ("spec.nodeSelector",),
    ),
    Case(
        "schedulingGates added",
        setting("spec.schedulingGates", [{"name": "example.com/gate"}]),
        ("spec.schedulingGates",),
    ),
    Case(
        "schedulingGates removed",
        removing("spec.schedulingGates"),
        ("spec.schedulingGates",),
        base=setting("spec.schedulingGates", [{"name": "example.com/gate"}]),
    ),
    Case(
        "volume added",
        appending("spec.volumes", {"name": "cache", "emptyDir": {}}),
        ("spec.volumes",),
    ),
    Case("volume removed", removing("spec.volumes[0]"), ("spec.volumes",)),
    Case(
        "volume secret renamed",
        setting("spec.volumes[1].secret.secretName", "other"),
        ("spec.volumes[1].secret.secretName",),
    ),
    Case(
        "emptyDir medium set",
        setting("spec.volumes[0].emptyDir.medium", "Memory"),
        ("spec.volumes[0].emptyDir.medium",),
    ),
    Case(
        "volumes reordered",
        lambda pod: pod["spec"]["volumes"].reverse(),
        # emptyDir: {} equals an absent emptyDir, so only name and secret differ.
        (
            "spec.volumes[0].name",
            "spec.volumes[0].secret.secretName",
            "spec.volumes[1].name",
            "spec.volumes[1].secret.secretName",
        ),
    ),
    Case("restartPolicy", setting("spec.restartPolicy", "Never"), ("spec.restartPolicy",)),
    Case("dnsPolicy", setting("spec.dnsPolicy", "Default"), ("spec.dnsPolicy",)),
    Case(
        "serviceAccountName",
        setting("spec.serviceAccountName", "admin"),
        ("spec.serviceAccountName",),
    ),
    Case("serviceAccount", setting("spec.serviceAccount", "admin"), ("spec.serviceAccount",)),
    Case(
        "automountServiceAccountToken",
        setting("spec.automountServiceAccountToken", False),
        ("spec.automountServiceAccountToken",),
    ),
    Case(
        "pod securityContext",
        setting("spec.securityContext", {"runAsUser": 0, "runAsNonRoot": False}),
        ("spec.securityContext.runAsNonRoot", "spec.securityContext.runAsUser"),
    ),
    Case(
        "affinity added",
        setting(
            "spec.affinity",
            {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": []}]
                    }
                }
            },
        ),
        (
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
            ".nodeSelectorTerms",
        ),
    ),
    Case("hostNetwork", setting("spec.hostNetwork", True), ("spec.hostNetwork",)),
    Case("hostPID", setting("spec.hostPID", True), ("spec.hostPID",)),
    Case("priority", setting("spec.priority", 1000), ("spec.priority",)),
    Case(
        "priorityClassName",
        setting("spec.priorityClassName", "high"),
        ("spec.priorityClassName",),
    ),
    Case(
        "terminationGracePeriodSeconds",
        setting("spec.terminationGracePeriodSeconds", 5),
        ("spec.terminationGracePeriodSeconds",),
    ),
    Case("hostname", setting("spec.hostname", "h"), ("spec.hostname",)),
    Case(
        "runtimeClassName", setting("spec.runtimeClassName", "gvisor"), ("spec.runtimeClassName",)
    ),
    Case(
        "overhead (resource name key)",
        setting("spec.overhead", {"cpu": "250m", "nvidia.com/gpu": "1"}),
        ("spec.overhead.cpu", 'spec.overhead["nvidia.com/gpu"]'),
    ),
    Case(
        "ephemeral container added through the main resource",
        setting("spec.ephemeralContainers", [{"name": "debug", "image": "busybox"}]),
        ("spec.ephemeralContainers",),
    ),
    # containers
    Case(
        "env value",
        setting("spec.containers[0].env[0].value", SECRET),
        ("spec.containers[0].env[0].value",),
    ),
    Case(
        "env name",
        setting("spec.containers[0].env[0].name", "CY"),
        ("spec.containers[0].env[0].name",),
    ),
    Case(
        "env var added",
        appending("spec.containers[0].env", {"name": "X", "value": "1"}),
        ("spec.containers[0].env",),
    ),
    Case("env removed", removing("spec.containers[0].env"), ("spec.containers[0].env",)),
    Case(
        "env valueFrom replacing value",
        setting(
            "spec.containers[0].env[0]",
            {"name": "cy", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ),
        (
            "spec.containers[0].env[0].value",
            "spec.containers[0].env[0].valueFrom.secretKeyRef.key",
            "spec.containers[0].env[0].valueFrom.secretKeyRef.name",
        ),
    ),
    Case(
        "command",
        setting("spec.containers[0].command", ["/bin/sh"]),
        ("spec.containers[0].command",),
    ),
    Case(
        "command argument changed",
        setting("spec.containers[0].command[1]", "-x"),
        ("spec.containers[0].command[1]",),
        base=setting("spec.containers[0].command", ["/bin/sh", "-c"]),
    ),
    Case("args", setting("spec.containers[0].args", ["--v=2"]), ("spec.containers[0].args",)),
    Case(
        "ports",
        setting("spec.containers[0].ports", [{"containerPort": 80}]),
        ("spec.containers[0].ports",),
    ),
    Case(
        "resources limits",
        setting("spec.containers[0].resources", {"limits": {"memory": "1Gi", "cpu": "1"}}),
        ("spec.containers[0].resources.limits.cpu", "spec.containers[0].resources.limits.memory"),
    ),
    Case(
        "resources extended resource",
        setting("spec.containers[0].resources.requests", {"nvidia.com/gpu": "1"}),
        ('spec.containers[0].resources.requests["nvidia.com/gpu"]',),
    ),
    Case(
        "volumeMount path",
        setting("spec.containers[0].volumeMounts[0].mountPath", "/tmp/bar"),
        ("spec.containers[0].volumeMounts[0].mountPath",),
    ),
    Case(
        "volumeMount readOnly",
        setting("spec.containers[0].volumeMounts[1].readOnly", False),
        ("spec.containers[0].volumeMounts[1].readOnly",),
    ),
    Case(
        "volumeMount added",
        appending("spec.containers[0].volumeMounts", {"name": "test", "mountPath": "/x"}),
        ("spec.containers[0].volumeMounts",),
    ),
    Case(
        "container renamed", setting("spec.containers[0].name", "hi"), ("spec.containers[0].name",)
    ),
    Case(
        "imagePullPolicy",
        setting("spec.containers[0].imagePullPolicy", "Always"),
        ("spec.containers[0].imagePullPolicy",),
    ),
    Case(
        "terminationMessagePath",
        setting("spec.containers[0].terminationMessagePath", "/x"),
        ("spec.containers[0].terminationMessagePath",),
    ),
    Case(
        "container securityContext",
        setting("spec.containers[0].securityContext", {"privileged": True}),
        ("spec.containers[0].securityContext.privileged",),
    ),
    Case(
        "livenessProbe",
        setting("spec.containers[0].livenessProbe", {"httpGet": {"path": "/", "port": 80}}),
        (
            "spec.containers[0].livenessProbe.httpGet.path",
            "spec.containers[0].livenessProbe.httpGet.port",
        ),
    ),
    Case("container added", with_sidecar, ("spec.containers",)),
    Case("container removed", removing("spec.containers[0]"), ("spec.containers",)),
    Case("containers unset", removing("spec.containers"), ("spec.containers",)),
    Case(
        "containers reordered",
        lambda pod: pod["spec"]["containers"].reverse(),
        # Each index is compared with the same index: the names and everything except
        # the (updatable) image differ at both positions.
        (
            "spec.containers[0].env",
            "spec.containers[0].imagePullPolicy",
            "spec.containers[0].name",
            "spec.containers[0].ports",
            "spec.containers[0].terminationMessagePath",
            "spec.containers[0].volumeMounts",
            "spec.containers[1].env",
            "spec.containers[1].imagePullPolicy",
            "spec.containers[1].name",
            "spec.containers[1].ports",
            "spec.containers[1].terminationMessagePath",
            "spec.containers[1].volumeMounts",
        ),
        base=with_sidecar,
    ),
    Case(
        "init container added",
        setting("spec.initContainers", INIT_CONTAINERS[:1]),
        ("spec.initContainers",),
    ),
    Case(
        "init container removed",
        removing("spec.initContainers[1]"),
        ("spec.initContainers",),
        base=with_init_containers,
    ),
    Case(
        "init container command",
        setting("spec.initContainers[0].command[2]", "false"),
        ("spec.initContainers[0].command[2]",),
        base=with_init_containers,
    ),
    Case(
        "init container renamed",
        setting("spec.initContainers[1].name", "init-2"),
        ("spec.initContainers[1].name",),
        base=with_init_containers,
    ),
    # top level
    Case("kind", setting("kind", "Deployment"), ("kind",)),
    Case("apiVersion", setting("apiVersion", "v2"), ("apiVersion",)),
    Case("unknown top-level field", setting("extra", {"a": 1}), ("extra.a",)),
    # Removing the whole spec reports every non-empty field of the example spec, sorted
    # (securityContext: {} equals absent).
    Case(
        "spec removed",
        removing("spec"),
        (
            "spec.containers",
            "spec.dnsPolicy",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.serviceAccount",
            "spec.serviceAccountName",
            "spec.terminationGracePeriodSeconds",
            "spec.volumes",
        ),
    ),
]


@pytest.mark.parametrize("case", FROZEN_CASES, ids=ids)
def test_frozen_changes_are_denied_with_exact_paths(case: Case) -> None:
    assert case.run() == list(case.want)
    assert case.want, "a frozen case must expect at least one path"


RENDERED = [
    (("spec", "nodeName"), "spec.nodeName"),
    (("spec", "containers", 0, "env", 1), "spec.containers[0].env[1]"),
    (("metadata", "finalizers", 0), "metadata.finalizers[0]"),
    (("spec", "nodeSelector", "kubernetes.io/os"), 'spec.nodeSelector["kubernetes.io/os"]'),
    (("spec", "nodeSelector", "0"), 'spec.nodeSelector["0"]'),
    (("a b",), '["a b"]'),
    (("spec", "nodeSelector", "a\\"), 'spec.nodeSelector["a\\\\"]'),
    (("spec", "nodeSelector", 'a"'), 'spec.nodeSelector["a\\""]'),
]


@pytest.mark.parametrize(("segments", "want"), RENDERED, ids=[w for _, w in RENDERED])
def test_paths_render_once_with_json_quoted_keys(
    segments: tuple[str | int, ...], want: str
) -> None:
    assert render_path(segments) == want


@FUZZ
@given(
    first=st.lists(st.one_of(st.text(max_size=6), st.integers(0, 9)), max_size=4),
    second=st.lists(st.one_of(st.text(max_size=6), st.integers(0, 9)), max_size=4),
)
def test_fuzz_different_paths_render_differently(
    first: list[str | int], second: list[str | int]
) -> None:
    assume(first != second)
    assert render_path(tuple(first)) != render_path(tuple(second))


def test_violation_holds_only_a_path() -> None:
    old, new = example_pod(), example_pod()
    put(new, "spec.containers[0].env[0].value", SECRET)
    violations = find_violations(old, new)
    assert violations == [Violation(("spec", "containers", 0, "env", 0, "value"))]
    assert violations[0].path == "spec.containers[0].env[0].value"
    assert SECRET not in repr(violations)


# --- allowed and frozen changes mixed ---------------------------------------------

MIXED_CASES = [
    Case(
        "labels, image, nodeName and env value",
        combine(
            setting("metadata.labels.name", "x"),
            setting("spec.containers[0].image", "beego:v9"),
            setting("spec.nodeName", "node-9"),
            setting("spec.containers[0].env[0].value", SECRET),
            setting("spec.tolerations", [{"operator": "Exists"}]),
        ),
        ("spec.containers[0].env[0].value", "spec.nodeName"),
    ),
    Case(
        "every updatable field plus frozen fields everywhere",
        combine(
            setting("metadata.resourceVersion", "1"),
            setting("metadata.annotations", {"a": "b"}),
            setting("metadata.finalizers", ["f"]),
            setting("spec.initContainers[0].image", "x"),
            setting("spec.initContainers[1].name", "renamed"),
            setting("spec.activeDeadlineSeconds", 1),
            setting("spec.restartPolicy", "Never"),
            setting("spec.containers[0].image", "y"),
            setting("spec.containers[0].resources", {"limits": {"cpu": "1"}}),
            setting("kind", "Pod2"),
        ),
        (
            "kind",
            "metadata.finalizers",
            "spec.containers[0].resources.limits.cpu",
            "spec.initContainers[1].name",
            "spec.restartPolicy",
        ),
        base=with_init_containers,
    ),
    Case(
        "image change in a container whose other field changed",
        combine(
            setting("spec.containers[0].image", "beego:v2"),
            setting("spec.containers[0].imagePullPolicy", "Always"),
        ),
        ("spec.containers[0].imagePullPolicy",),
    ),
]


@pytest.mark.parametrize("case", MIXED_CASES, ids=ids)
def test_mixed_changes_report_only_frozen_paths(case: Case) -> None:
    assert case.run() == list(case.want)


def test_order_does_not_depend_on_key_insertion_order() -> None:
    old = example_pod()
    new = example_pod()
    put(new, "spec.nodeName", "n")
    put(new, "spec.dnsPolicy", "Default")
    put(new, "metadata.name", "x")
    put(new, "spec.containers[0].name", "c")
    reordered_new = {key: new[key] for key in reversed(list(new))}
    reordered_new["spec"] = {key: new["spec"][key] for key in reversed(list(new["spec"]))}
    reordered_old = {key: old[key] for key in reversed(list(old))}
    want = ["metadata.name", "spec.containers[0].name", "spec.dnsPolicy", "spec.nodeName"]
    assert paths(old, new) == want
    assert paths(reordered_old, reordered_new) == want
    assert paths(old, reordered_new) == want


def test_list_indexes_are_reported_in_numeric_order() -> None:
    old, new = example_pod(), example_pod()
    for pod in (old, new):
        pod["spec"]["containers"] = [
            {"name": f"c{index}", "image": "i", "args": ["a"]} for index in range(12)
        ]
    for index in (11, 2, 10, 1):
        new["spec"]["containers"][index]["args"] = ["b"]
    assert paths(old, new) == [
        "spec.containers[1].args[0]",
        "spec.containers[2].args[0]",
        "spec.containers[10].args[0]",
        "spec.containers[11].args[0]",
    ]


# --- empty-equivalence: absent == null == {} == [] == "" ---------------------------

ABSENT = object()
EMPTIES: list[Any] = [ABSENT, None, {}, [], ""]


def _place(pod: Pod, path: str, value: Any) -> None:
    if value is ABSENT:
        if path.rsplit(".", 1)[-1] in get(pod, path.rsplit(".", 1)[0]):
            drop(pod, path)
    else:
        put(pod, path, value)


def _name(value: Any) -> str:
    return "absent" if value is ABSENT else repr(value)


EMPTY_PAIRS = [(a, b) for a in EMPTIES for b in EMPTIES]


@pytest.mark.parametrize(
    "where",
    [
        "spec.nodeSelector",
        "spec.containers[0].resources",
        "spec.containers[0].args",
        "spec.securityContext",
        "metadata.finalizers",
        "spec.volumes[0].emptyDir",
        "spec.hostname",
    ],
)
@pytest.mark.parametrize(
    ("old_value", "new_value"),
    EMPTY_PAIRS,
    ids=[f"{_name(a)}-{_name(b)}" for a, b in EMPTY_PAIRS],
)
def test_empty_values_are_equivalent(where: str, old_value: Any, new_value: Any) -> None:
    old, new = example_pod(), example_pod()
    _place(old, where, old_value)
    _place(new, where, new_value)
    assert paths(old, new) == []


def test_maps_holding_only_empty_values_equal_absent() -> None:
    old, new = example_pod(), example_pod()
    put(new, "spec.securityContext", {"runAsUser": None, "seLinuxOptions": {}, "sysctls": []})
    put(new, "spec.containers[0].resources", {"limits": {}, "requests": None})
    assert paths(old, new) == []


@pytest.mark.parametrize(
    ("value", "want"),
    [
        # The spec's empty values are exactly absent, null, {}, [] and "": zero and
        # false are values (the API server decodes into typed structs before calling
        # webhooks, so both objects of a real review serialise them alike).
        (0, ["spec.priority"]),
        (False, ["spec.priority"]),
        ([None], ["spec.priority"]),
        ({"a": "b"}, ["spec.priority.a"]),
        (" ", ["spec.priority"]),
    ],
)
def test_non_empty_values_differ_from_absent(value: Any, want: list[str]) -> None:
    old, new = example_pod(), example_pod()
    put(new, "spec.priority", value)
    assert paths(old, new) == want
    assert paths(new, old) == want


def test_a_list_of_one_empty_item_differs_from_an_empty_list() -> None:
    old, new = example_pod(), example_pod()
    put(old, "spec.containers[0].args", [])
    put(new, "spec.containers[0].args", [""])
    assert paths(old, new) == ["spec.containers[0].args"]


# --- server-managed fields ---------------------------------------------------------

SERVER_MANAGED_CASES = [
    Case(
        "managedFields added",
        setting(
            "metadata.managedFields",
            [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
        ),
    ),
    Case(
        "managedFields rewritten",
        setting("metadata.managedFields[0].manager", "kube-controller-manager"),
        base=setting("metadata.managedFields", [{"manager": "kubectl", "operation": "Update"}]),
    ),
    Case(
        "generation bumped",
        setting("metadata.generation", 2),
        base=setting("metadata.generation", 1),
    ),
    Case("generation set", setting("metadata.generation", 1)),
    Case("status phase", setting("status.phase", "Succeeded")),
    Case("status conditions", setting("status.conditions", [])),
    Case("status removed", removing("status")),
    Case("status replaced by a scalar", setting("status", "x")),
    Case(
        "server fields and an image change",
        combine(
            setting("metadata.generation", 5),
            setting("status.podIP", "10.0.0.1"),
            setting("spec.containers[0].image", "beego:v2"),
        ),
    ),
]


@pytest.mark.parametrize("case", SERVER_MANAGED_CASES, ids=ids)
def test_server_managed_fields_are_ignored(case: Case) -> None:
    assert case.run() == []


def test_server_managed_paths_are_exactly_the_documented_ones() -> None:
    assert SERVER_MANAGED_PATHS == ("metadata.managedFields", "metadata.generation", "status")


def test_server_managed_fields_do_not_hide_frozen_changes() -> None:
    old, new = example_pod(), example_pod()
    put(new, "status.phase", "Failed")
    put(new, "metadata.generation", 3)
    put(new, "spec.restartPolicy", "Never")
    assert paths(old, new) == ["spec.restartPolicy"]


class NotComparable:
    """A value that fails the test if the diff ever compares it."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("a value under a freely updatable path was compared")

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("sides", ["both", "old", "new"])
def test_a_freely_updatable_key_of_a_walked_map_is_never_compared(sides: str) -> None:
    """The keys of a map being walked that the rules allow wholesale (status at the
    top; managedFields, labels, annotations in metadata) are skipped, not compared:
    status and managedFields are a large part of a pod and every update changes them."""
    old, new = example_pod(), example_pod()
    if sides in ("both", "old"):
        old["status"] = NotComparable()
    if sides in ("both", "new"):
        new["status"] = NotComparable()
    put(new, "spec.nodeName", "elsewhere")
    assert paths(old, new) == ["spec.nodeName"]


# --- deleting pods and finalizers ----------------------------------------------------


def deleting(finalizers: list[str]) -> Change:
    return combine(
        setting("metadata.deletionTimestamp", DELETION_TIMESTAMP),
        setting("metadata.deletionGracePeriodSeconds", 30),
        setting("metadata.finalizers", finalizers),
    )


FINALIZER_CASES = [
    Case(
        "deleting: one finalizer removed",
        setting("metadata.finalizers", ["a/one"]),
        base=deleting(["a/one", "b/two"]),
    ),
    Case(
        "deleting: the last finalizer removed",
        setting("metadata.finalizers", ["b/two"]),
        base=deleting(["a/one", "b/two"]),
    ),
    Case(
        "deleting: all removed", removing("metadata.finalizers"), base=deleting(["a/one", "b/two"])
    ),
    Case("deleting: emptied", setting("metadata.finalizers", []), base=deleting(["a/one"])),
    Case(
        "deleting: reordered",
        setting("metadata.finalizers", ["b/two", "a/one"]),
        base=deleting(["a/one", "b/two"]),
    ),
    Case(
        "deleting: duplicate removed",
        setting("metadata.finalizers", ["a/one"]),
        base=deleting(["a/one", "a/one"]),
    ),
    Case(
        "deleting: finalizer added",
        setting("metadata.finalizers", ["a/one", "b/two", "c/three"]),
        ("metadata.finalizers",),
        base=deleting(["a/one", "b/two"]),
    ),
    Case(
        "deleting: finalizer replaced",
        setting("metadata.finalizers", ["a/one", "c/three"]),
        ("metadata.finalizers[1]",),
        base=deleting(["a/one", "b/two"]),
    ),
    Case(
        "deleting: one removed and another added",
        setting("metadata.finalizers", ["c/three"]),
        ("metadata.finalizers",),
        base=deleting(["a/one", "b/two"]),
    ),
    Case(
        "deleting: a duplicate added",
        setting("metadata.finalizers", ["a/one", "a/one"]),
        ("metadata.finalizers",),
        base=deleting(["a/one"]),
    ),
    Case(
        "deleting: finalizers removed and a frozen field changed",
        combine(removing("metadata.finalizers"), setting("spec.nodeName", "n")),
        ("spec.nodeName",),
        base=deleting(["a/one"]),
    ),
    Case(
        "deleting: deletionTimestamp changed",
        combine(removing("metadata.finalizers"), setting("metadata.deletionTimestamp", "x")),
        ("metadata.deletionTimestamp",),
        base=deleting(["a/one"]),
    ),
    Case(
        "not deleting: finalizer removed",
        setting("metadata.finalizers", ["a/one"]),
        ("metadata.finalizers",),
        base=setting("metadata.finalizers", ["a/one", "b/two"]),
    ),
    Case(
        "not deleting: all removed",
        removing("metadata.finalizers"),
        ("metadata.finalizers",),
        base=setting("metadata.finalizers", ["a/one"]),
    ),
    Case(
        "not deleting: reordered",
        setting("metadata.finalizers", ["b/two", "a/one"]),
        ("metadata.finalizers[0]", "metadata.finalizers[1]"),
        base=setting("metadata.finalizers", ["a/one", "b/two"]),
    ),
    Case(
        "not deleting (null deletionTimestamp): finalizer removed",
        setting("metadata.finalizers", []),
        ("metadata.finalizers",),
        base=combine(
            setting("metadata.finalizers", ["a/one"]),
            setting("metadata.deletionTimestamp", None),
        ),
    ),
    Case(
        "deletion requested in the same update: finalizer removed",
        combine(
            setting("metadata.deletionTimestamp", DELETION_TIMESTAMP),
            removing("metadata.finalizers"),
        ),
        ("metadata.deletionTimestamp", "metadata.finalizers"),
        base=setting("metadata.finalizers", ["a/one"]),
    ),
    Case(
        "deleting: finalizers that are not strings are judged normally",
        setting("metadata.finalizers", [1]),
        ("metadata.finalizers",),
        base=deleting([]),
        old_only=setting("metadata.finalizers", [1, 2]),
    ),
]


@pytest.mark.parametrize("case", FINALIZER_CASES, ids=ids)
def test_finalizers_on_deleting_and_live_pods(case: Case) -> None:
    assert case.run() == list(case.want)


@pytest.mark.parametrize(
    ("timestamp", "want"),
    [(DELETION_TIMESTAMP, True), (None, False), ("", False), (ABSENT, False)],
    ids=["set", "null", "empty", "absent"],
)
def test_is_being_deleted(timestamp: Any, want: bool) -> None:
    pod = example_pod()
    if timestamp is not ABSENT:
        pod["metadata"]["deletionTimestamp"] = timestamp
    assert is_being_deleted(pod) is want


def test_is_being_deleted_tolerates_missing_or_odd_metadata() -> None:
    assert is_being_deleted({}) is False
    assert is_being_deleted({"metadata": "x"}) is False
    assert is_being_deleted({"metadata": None}) is False


# --- map keys that are not identifiers are quoted ---------------------------------------

KEY_CASES = [
    ("kubernetes.io/hostname", 'spec.nodeSelector["kubernetes.io/hostname"]'),
    ("disk-type", "spec.nodeSelector.disk-type"),
    ("disk_type2", "spec.nodeSelector.disk_type2"),
    ("_private", "spec.nodeSelector._private"),
    ("1st", 'spec.nodeSelector["1st"]'),
    ("-dash", 'spec.nodeSelector["-dash"]'),
    ("with space", 'spec.nodeSelector["with space"]'),
    ('with"quote', 'spec.nodeSelector["with\\"quote"]'),
    ("a[0]", 'spec.nodeSelector["a[0]"]'),
    ("", 'spec.nodeSelector[""]'),
    ("ünïcode", 'spec.nodeSelector["ünïcode"]'),
]


@pytest.mark.parametrize(("key", "want"), KEY_CASES, ids=[want for _, want in KEY_CASES])
def test_map_keys_that_are_not_identifiers_are_quoted(key: str, want: str) -> None:
    old, new = example_pod(), example_pod()
    new["spec"]["nodeSelector"] = {key: "x"}
    assert paths(old, new) == [want]


def test_quoted_keys_sort_among_identifier_keys() -> None:
    old, new = example_pod(), example_pod()
    new["spec"]["nodeSelector"] = {"zone": "a", "kubernetes.io/arch": "arm64", "Disk": "ssd"}
    assert paths(old, new) == [
        "spec.nodeSelector.Disk",
        'spec.nodeSelector["kubernetes.io/arch"]',
        "spec.nodeSelector.zone",
    ]


# --- hostile nesting ------------------------------------------------------------------


def nested(depth: int, leaf: Any, container: str = "map") -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value} if container == "map" else [value]
    return value


# Nested values are assigned directly: put() deep-copies, which would itself recurse.


def test_reasonable_nesting_reports_the_deep_path() -> None:
    old, new = example_pod(), example_pod()
    old["spec"]["x"] = nested(50, 1)
    new["spec"]["x"] = nested(50, 2)
    assert paths(old, new) == ["spec.x" + ".a" * 50]


class CountedLeaf:
    """A leaf that counts how often it is compared: a comparison of two subtrees that
    differ only at their leaves reaches it once."""

    compared = 0

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        CountedLeaf.compared += 1
        return isinstance(other, CountedLeaf) and other.value == self.value

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("container", ["map", "list"])
def test_a_deep_difference_costs_linear_work_not_the_square_of_its_depth(
    container: str,
) -> None:
    """Each comparison of two subtrees runs down to their first difference: done at every
    level of a 90-deep chain that differs at the bottom, it reached the leaf 90 times
    (a hostile review of such chains took 112 ms of the serving loop)."""
    compared = {}
    for depth in (45, 90):
        old, new = example_pod(), example_pod()
        old["spec"]["x"] = nested(depth, CountedLeaf(1), container)
        new["spec"]["x"] = nested(depth, CountedLeaf(2), container)
        CountedLeaf.compared = 0
        assert len(paths(old, new)) == 1
        compared[depth] = CountedLeaf.compared
    # The quick comparisons above QUICK_COMPARE_DEPTH, then one at the leaf: the same
    # for both depths.
    assert compared[45] == compared[90] <= QUICK_COMPARE_DEPTH + 2, compared


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 150, 5_000, 200_000])
@pytest.mark.parametrize("container", ["map", "list"])
def test_absurd_nesting_raises_nesting_too_deep(depth: int, container: str) -> None:
    old, new = example_pod(), example_pod()
    old["spec"]["x"] = nested(depth, 1, container)
    new["spec"]["x"] = nested(depth, 2, container)
    with pytest.raises(NestingTooDeep):
        find_violations(old, new)


def test_absurd_nesting_on_one_side_only_raises_nesting_too_deep() -> None:
    old, new = example_pod(), example_pod()
    new["spec"]["x"] = nested(200_000, "leaf")
    with pytest.raises(NestingTooDeep):
        find_violations(old, new)


def test_nesting_too_deep_is_a_value_error_not_a_recursion_error() -> None:
    assert issubclass(NestingTooDeep, ValueError)
    assert not issubclass(NestingTooDeep, RecursionError)


def test_deep_but_identical_subtrees_are_not_an_error() -> None:
    old, new = example_pod(), example_pod()
    old["spec"]["x"] = nested(150, 1)
    new["spec"]["x"] = nested(150, 1)
    assert paths(old, new) == []


# --- linear cost (counted, not timed) ----------------------------------------------------

MANY = 500


def many_containers(count: int) -> Pod:
    pod = example_pod()
    template = pod["spec"]["containers"][0]
    containers = []
    for index in range(count):
        container = copy.deepcopy(template)
        container["name"] = f"c{index}"
        containers.append(container)
    pod["spec"]["containers"] = containers
    return pod


def test_many_image_changes_give_no_violations() -> None:
    old = many_containers(MANY)
    new = copy.deepcopy(old)
    for index, container in enumerate(new["spec"]["containers"]):
        container["image"] = f"beego:v{index}"
    assert paths(old, new) == []


def test_many_env_changes_give_one_path_each_in_order() -> None:
    old = many_containers(MANY)
    new = copy.deepcopy(old)
    for container in new["spec"]["containers"]:
        container["env"][0]["value"] = SECRET
    assert paths(old, new) == [f"spec.containers[{index}].env[0].value" for index in range(MANY)]


def test_adding_one_container_to_many_reports_one_path() -> None:
    old = many_containers(MANY)
    new = many_containers(MANY + 1)
    assert paths(old, new) == ["spec.containers"]


# --- property tests ------------------------------------------------------------------------

# Leaves of the example pod (scalars and empty maps) that no rule allows to change.
_RULE_PATTERNS = [
    re.compile("^" + re.escape(rule).replace(re.escape("[*]"), r"\[\d+\]") + r"($|[.\[])")
    for rule in UPDATABLE_PATHS + SERVER_MANAGED_PATHS
]


def _covered(path: str) -> bool:
    return any(pattern.match(path) for pattern in _RULE_PATTERNS)


def _leaves(value: Any, path: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, _join(path, key))]
    if isinstance(value, list) and value:
        return [
            leaf for index, item in enumerate(value) for leaf in _leaves(item, f"{path}[{index}]")
        ]
    return [path]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fuzz_base() -> Pod:
    pod = example_pod()
    with_init_containers(pod)
    with_sidecar(pod)
    pod["spec"]["tolerations"] = [{"key": "a", "operator": "Exists"}]
    pod["metadata"]["annotations"] = {"note": "x"}
    return pod


FROZEN_LEAVES = sorted(leaf for leaf in _leaves(_fuzz_base(), "") if not _covered(leaf))
COVERED_LEAVES = sorted(leaf for leaf in _leaves(_fuzz_base(), "") if _covered(leaf))


def test_leaf_enumeration_is_sensible() -> None:
    assert "spec.containers[0].env[0].value" in FROZEN_LEAVES
    assert "spec.securityContext" in FROZEN_LEAVES
    assert "spec.containers[0].image" in COVERED_LEAVES
    assert "spec.initContainers[1].image" in COVERED_LEAVES
    assert "status.phase" in COVERED_LEAVES
    assert not any(leaf.startswith(("metadata.labels", "status")) for leaf in FROZEN_LEAVES)


UPDATABLE_TARGETS = [
    "metadata.selfLink",
    "metadata.resourceVersion",
    "metadata.clusterName",
    "metadata.generateName",
    "metadata.labels",
    "metadata.annotations",
    "spec.initContainers[{i}].image",
    "spec.containers[{i}].image",
    "spec.activeDeadlineSeconds",
    "spec.tolerations",
]


@st.composite
def updatable_edit(draw: st.DrawFn) -> tuple[str, Any]:
    """(concrete path under an updatable rule, new value or ABSENT to unset)."""
    target = draw(st.sampled_from(UPDATABLE_TARGETS)).format(i=draw(st.integers(0, 1)))
    if target in ("metadata.labels", "metadata.annotations", "spec.tolerations"):
        suffix = draw(
            st.sampled_from(["", ".note", ".name", ".new-key"])
            if target != "spec.tolerations"
            else st.sampled_from(["", "[0]", "[0].key", "[0].effect"])
        )
        target += suffix
    value = draw(st.just(ABSENT) | JSON_VALUES)
    return target, value


def _apply(pod: Pod, target: str, value: Any) -> None:
    if value is ABSENT:
        parent_path, _, last = target.rpartition(".")
        if target.endswith("]"):
            parent_path, _, _ = target.rpartition("[")
            if get(pod, parent_path):
                drop(pod, target)
            return
        if last in get(pod, parent_path):
            drop(pod, target)
        return
    put(pod, target, value)


@FUZZ
@given(edits=st.lists(updatable_edit(), min_size=1, max_size=6))
def test_fuzz_changes_under_updatable_paths_are_allowed(edits: list[tuple[str, Any]]) -> None:
    old, new = _fuzz_base(), _fuzz_base()
    for target, value in edits:
        try:
            _apply(new, target, value)
        except (TypeError, KeyError, IndexError, AttributeError):
            # An earlier edit replaced a map or list with a scalar; the edit is moot.
            continue
    assert paths(old, new) == []


def _under(path: str, leaf: str) -> bool:
    return path == leaf or path.startswith((leaf + ".", leaf + "[", leaf + '["'))


@FUZZ
@given(
    leaf=st.sampled_from(FROZEN_LEAVES),
    value=st.just(ABSENT) | JSON_VALUES,
    also=st.lists(updatable_edit(), max_size=4),
)
def test_fuzz_change_at_a_frozen_leaf_is_denied_at_or_under_it(
    leaf: str, value: Any, also: list[tuple[str, Any]]
) -> None:
    old, new = _fuzz_base(), _fuzz_base()
    before = get(old, leaf)
    if value is ABSENT and leaf.endswith("]"):
        value = None  # removing a list item is a length change, reported at the list
    assume(canonical(None if value is ABSENT else value) != canonical(before))
    _apply(new, leaf, value)
    reported = paths(old, new)
    assert reported, f"changing {leaf} was not reported"
    assert all(_under(path, leaf) for path in reported), (leaf, reported)
    # Adding allowed changes on top reports exactly the same frozen paths.
    for target, extra in also:
        try:
            _apply(new, target, extra)
        except (TypeError, KeyError, IndexError, AttributeError):
            continue
    assert paths(old, new) == reported


@FUZZ
@given(old=JSON_OBJECTS, new=JSON_OBJECTS)
def test_fuzz_arbitrary_objects_raise_nothing(old: dict[str, Any], new: dict[str, Any]) -> None:
    try:
        violations = find_violations(old, new)
    except NestingTooDeep:
        return
    assert all(isinstance(v, Violation) and isinstance(v.path, str) for v in violations)
    assert len({v.path for v in violations}) == len(violations), "duplicate paths"
    assert find_violations(old, new) == violations, "not deterministic"
    assert find_violations(old, copy.deepcopy(old)) == []
    if canonical(old) == canonical(new):
        assert violations == []


@FUZZ
@given(pod_edits=st.dictionaries(st.sampled_from(FROZEN_LEAVES), JSON_VALUES, max_size=4))
def test_fuzz_violations_are_symmetric_for_live_pods(pod_edits: dict[str, Any]) -> None:
    old, new = _fuzz_base(), _fuzz_base()
    for leaf, value in pod_edits.items():
        try:
            put(new, leaf, value)
        except (TypeError, KeyError, IndexError, AttributeError):
            continue
    assert paths(old, new) == paths(new, old)


@FUZZ
@given(base=JSON_OBJECTS, key=st.text(max_size=8), value=JSON_VALUES)
def test_fuzz_mutated_random_objects_report_the_mutated_key(
    base: dict[str, Any], key: str, value: Any
) -> None:
    # metadata, spec and status hold rules; any other top-level key is frozen.
    assume(key not in ("metadata", "spec", "status"))
    old = copy.deepcopy(base)
    new = copy.deepcopy(base)
    new[key] = value
    assume(canonical(old.get(key)) != canonical(value))
    reported = paths(old, new)
    assert reported
    assert all(_under(path, render_path((key,))) for path in reported), (key, reported)
