"""Hypothesis strategies: arbitrary JSON, mutated pods and structured AdmissionReviews."""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.support.reviews import example_pod, make_review


def fuzz_examples(default: int = 200) -> int:
    """The example budget: PRG_FUZZ_EXAMPLES (``make fuzz``) or FUZZ_EXAMPLES."""
    raw = os.environ.get("PRG_FUZZ_EXAMPLES") or os.environ.get("FUZZ_EXAMPLES") or ""
    return int(raw) if raw.strip().isdigit() else default


def fuzz_settings(examples: int | None = None) -> settings:
    return settings(
        max_examples=examples if examples is not None else fuzz_examples(),
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)

# Keys a pod has, so that random maps hit rule paths as well as random names.
pod_keys = st.sampled_from(
    [
        "metadata", "spec", "status", "labels", "annotations", "finalizers", "image",
        "containers", "initContainers", "tolerations", "env", "name", "value",
        "activeDeadlineSeconds", "generation", "managedFields", "deletionTimestamp",
        "resourceVersion", "selfLink", "generateName", "clusterName", "command", "[*]",
        "", "a.b", "x y", '"q"', "0",
    ]
)  # fmt: skip
keys = pod_keys | st.text(max_size=8)

json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=6)


def _base_pod(
    finalizers: bool, deleting: bool, init: bool, tolerations: bool, extras: bool
) -> dict[str, Any]:
    pod = example_pod()
    metadata = pod["metadata"]
    spec = pod["spec"]
    if finalizers:
        metadata["finalizers"] = ["example.com/a", "example.com/b", "example.com/a"]
    if deleting:
        metadata["deletionTimestamp"] = "2016-08-08T08:00:00Z"
        metadata["deletionGracePeriodSeconds"] = 30
    if init:
        spec["initContainers"] = [
            {"name": "init", "image": "busybox:1", "command": ["true"]},
            {"name": "init2", "image": "busybox:2"},
        ]
    if tolerations:
        spec["tolerations"] = [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
    if extras:
        metadata["annotations"] = {"a": "1"}
        metadata["generation"] = 1
        metadata["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
        spec["activeDeadlineSeconds"] = 600
        spec["nodeSelector"] = {"disktype": "ssd"}
        spec["containers"].append({"name": "sidecar", "image": "envoy:1", "args": ["-c", "x"]})
    return pod


base_pods = st.builds(
    _base_pod, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans()
)

PathList = list[str | int]


def all_paths(value: object, prefix: PathList | None = None) -> list[PathList]:
    """Every path (map keys and list indexes) into ``value``, the root included."""
    prefix = prefix or []
    found = [prefix]
    if isinstance(value, dict):
        for name, child in value.items():
            found += all_paths(child, [*prefix, name])
    elif isinstance(value, list):
        for position, child in enumerate(value):
            found += all_paths(child, [*prefix, position])
    return found


def _parent(root: Any, path: PathList) -> Any:
    node = root
    for step in path[:-1]:
        node = node[step]
    return node


# What a mutation does at its path.
ACTIONS = ("set", "delete", "add-key", "append", "pop", "swap", "empty", "tweak")


def apply_mutation(pod: dict[str, Any], path: PathList, action: str, value: Any) -> None:
    """Change ``pod`` in place at ``path`` (a no-op where the action does not fit)."""
    target: Any = pod
    for step in path:
        target = target[step]
    if action == "set" and path:
        _parent(pod, path)[path[-1]] = value
    elif action == "delete" and path:
        parent = _parent(pod, path)
        del parent[path[-1]]
    elif action == "add-key" and isinstance(target, dict):
        name = value if isinstance(value, str) else "added"
        target[name] = value
    elif action == "append" and isinstance(target, list):
        target.append(copy.deepcopy(target[0]) if target and value is None else value)
    elif action == "pop" and isinstance(target, list) and target:
        target.pop()
    elif action == "swap" and isinstance(target, list) and len(target) >= 2:
        target[0], target[-1] = target[-1], target[0]
    elif action == "empty" and path:
        _parent(pod, path)[path[-1]] = value if value in (None, "", [], {}) else None
    elif action == "tweak" and path:
        parent = _parent(pod, path)
        current = parent[path[-1]]
        if isinstance(current, str):
            parent[path[-1]] = current + "-changed"
        elif isinstance(current, bool):
            parent[path[-1]] = not current
        elif isinstance(current, int | float):
            parent[path[-1]] = current + 1


@st.composite
def mutated_pair(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(old, new): a base pod and a copy changed at 1-4 random paths (rule paths too)."""
    old = draw(base_pods)
    if draw(st.integers(0, 5)) == 0:  # sometimes the old pod is odd as well
        path = draw(st.sampled_from(all_paths(old)))
        apply_mutation(old, path, draw(st.sampled_from(ACTIONS)), draw(json_values))
    new = copy.deepcopy(old)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(all_paths(new)))
        action = draw(st.sampled_from(ACTIONS))
        value = draw(
            json_values | st.sampled_from([None, "", [], {}, "nginx:2", ["x"], {"k": "v"}])
        )
        apply_mutation(new, path, action, value)
    return old, new


OPERATIONS = ["UPDATE", "CREATE", "DELETE", "CONNECT", "PATCH", "", None, 1]


@st.composite
def structured_reviews(draw: st.DrawFn) -> Any:
    """AdmissionReviews that are mostly well formed, with fields swapped for odd JSON."""
    old, new = draw(mutated_pair())
    review: dict[str, Any] = make_review(
        old,
        new,
        operation=draw(st.sampled_from(["UPDATE", "UPDATE", "UPDATE", "CREATE", "DELETE"])),
        namespace=draw(st.sampled_from(["default", "kube-system", "pod-replace-guard"])),
        user=draw(st.sampled_from(["alice", "system:kube-controller-manager"])),
        sub_resource=draw(st.sampled_from(["", "", "status", "ephemeralcontainers"])),
        api_version=draw(st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])),
    )
    request = review["request"]
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["review", "request", "userInfo", "kind", "resource"]))
        holder = review if where == "review" else request
        if where in ("userInfo", "kind", "resource"):
            holder = request.get(where)
        if not isinstance(holder, dict):
            continue
        field = draw(st.sampled_from([*holder.keys(), "extra"]))
        if draw(st.booleans()):
            holder.pop(field, None)
        else:
            holder[field] = draw(json_values | st.sampled_from(OPERATIONS))
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not an AdmissionReview at all
    return review
