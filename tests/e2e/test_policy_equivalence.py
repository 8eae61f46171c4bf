"""The generated ValidatingAdmissionPolicy and the webhook give the same verdicts.

Differential, through the real API server: the rules' own table cases
(tests/unit/test_rules.py) and fuzz-generated pairs (the differential fuzzer's
generator, tests/reliability/strategies.py) become real pods and real updates. Each
pair's old pod is created once (pods are shared between pairs with the same old
pod; a pod that is being deleted is created and then deleted, which the absent
kubelet never completes), and the new pod is sent as a dry-run PUT, once with only
the webhook registered and once with only the generated policy (made by
``pod-replace-guard policy --live`` from this API server's schema). Every pair must
get the same verdict: allowed, denied by the rules, or refused by the API server
before admission (its own ValidatePodUpdate refuses most spec changes, for both).

A denial must also name the same fields: every path the policy names is a prefix of
a path the webhook names and the other way round (the policy reports at field
level, ``spec.containers[0].env``; the webhook at the deepest difference).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e.cluster import REPO, ControlPlane, remove_webhook
from tests.e2e.conftest import Webhook, ensure_namespace, wait_for_enforcement
from tests.reliability.strategies import (
    ACTIONS,
    all_paths,
    apply_mutation,
    base_pods,
    json_values,
    mutated_pair,
)
from tests.support.pods import big_pod
from tests.support.reviews import example_pod
from tests.unit import test_rules
from webhook.admission_policy import MESSAGE_PREFIX, POLICY_NAME

pytestmark = [pytest.mark.local_plane, pytest.mark.timeout(900)]

FUZZ_PAIRS = 400
# The API server's own ValidatePodUpdate refuses most spec changes before admission, so
# the fuzzer's pairs rarely reach a denial; these pairs mutate where admission decides.
ADMISSION_PAIRS = 300
# Pairs aimed at "not set" rendered several ways (EMPTY_CASES, fuzzed).
EMPTY_FUZZ_PAIRS = 200
THREADS = 6
# Metadata the API server sets itself; a created pod cannot carry the example's values.
SERVER_SET = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "generation",
)
WEBHOOK_DENIAL = 'admission webhook "pods.pod-replace-guard.io" denied the request: '
POLICY_DENIAL = f"ValidatingAdmissionPolicy '{POLICY_NAME}' with binding '{POLICY_NAME}' denied"

Pod = dict[str, Any]


@dataclass
class Pair:
    name: str
    old: Pod
    new: Pod


@dataclass(frozen=True)
class Verdict:
    outcome: str  # allowed, denied, or "refused <status>" before admission
    source: str = ""  # webhook or policy, for denials
    paths: tuple[str, ...] = ()
    detail: str = field(default="", compare=False)  # why it was refused, for the log

    def __str__(self) -> str:
        shown = f" by the {self.source}: {', '.join(self.paths)}" if self.source else ""
        return self.outcome + shown


# --- the pairs -----------------------------------------------------------------


TABLES = ("updatable", "frozen", "mixed", "server_managed", "finalizer")


def table_pairs() -> list[Pair]:
    pairs = []
    for table in TABLES:
        for case in getattr(test_rules, f"{table.upper()}_CASES"):
            old, new = example_pod(), example_pod()
            case.base(old)
            case.base(new)
            case.old_only(old)
            case.change(new)
            pairs.append(Pair(f"{table}: {case.name}", old, new))
    return pairs


# "Not set" rendered two ways in the old and the new pod (absent, null, {}, [], ""),
# for whole subtrees the policy compares with one equality and for the LOOSE_PATHS of
# webhook.admission_policy: which of them the API server lets through to admission,
# and that both give the same verdict there. (name, both, old only, new only): dotted
# paths (list indexes as numbers) set to a value, or removed with ABSENT.
ABSENT = object()
Edits = dict[str, Any]
# A pod with a nodeName cannot be gated.
_GATED: Edits = {"spec.schedulingGates": [{"name": "example.com/gate"}], "spec.nodeName": ABSENT}
_NO_VOLUMES: Edits = {
    "spec.automountServiceAccountToken": False,  # no service account volume injected
    "spec.volumes": ABSENT,
    "spec.containers.0.volumeMounts": ABSENT,
}
_PROJECTED: Edits = {
    **_NO_VOLUMES,
    "spec.volumes": [{"name": "p", "projected": {"sources": []}}],
}
_PROJECTED_CM: Edits = {
    **_NO_VOLUMES,
    "spec.volumes": [
        {"name": "p", "projected": {"sources": [{"configMap": {"name": "c", "items": []}}]}}
    ],
}
_REQUIRED = {
    "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]
    }
}
_GATED_EMPTY_NODES: Edits = {**_GATED, "spec.affinity": {"nodeAffinity": {}}}
_OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "u1"}
EMPTY_CASES: list[tuple[str, Edits, Edits, Edits]] = [
    ("affinity {} -> absent", {}, {"spec.affinity": {}}, {}),
    ("affinity absent -> {}", {}, {}, {"spec.affinity": {}}),
    ("affinity {} -> null", {}, {"spec.affinity": {}}, {"spec.affinity": None}),
    ("volumes [] -> absent", _NO_VOLUMES, {"spec.volumes": []}, {}),
    ("volumes absent -> []", _NO_VOLUMES, {}, {"spec.volumes": []}),
    ("volumes absent -> null", _NO_VOLUMES, {}, {"spec.volumes": None}),
    ("securityContext {} -> absent", {}, {"spec.securityContext": {}}, {}),
    ("securityContext absent -> {}", {}, {}, {"spec.securityContext": {}}),
    ("securityContext {} -> null", {}, {"spec.securityContext": {}},
     {"spec.securityContext": None}),
    ("dnsConfig absent -> {}", {}, {}, {"spec.dnsConfig": {}}),
    ("dnsConfig {} -> absent", {}, {"spec.dnsConfig": {}}, {}),
    ("hostAliases absent -> []", {}, {}, {"spec.hostAliases": []}),
    ("readinessGates absent -> []", {}, {}, {"spec.readinessGates": []}),
    ("overhead absent -> {}", {}, {}, {"spec.overhead": {}}),
    ("runtimeClassName absent -> ''", {}, {}, {"spec.runtimeClassName": ""}),
    ("priorityClassName absent -> ''", {}, {}, {"spec.priorityClassName": ""}),
    ("hostnameOverride absent -> ''", {}, {}, {"spec.hostnameOverride": ""}),
    ("imagePullSecrets absent -> [{}]", {}, {}, {"spec.imagePullSecrets": [{}]}),
    ("container securityContext absent -> {}", {}, {},
     {"spec.containers.0.securityContext": {}}),
    ("container resources {} -> absent", {}, {}, {"spec.containers.0.resources": ABSENT}),
    ("container env [] -> absent", {}, {"spec.containers.0.env": []},
     {"spec.containers.0.env": ABSENT}),
    ("container command absent -> []", {}, {}, {"spec.containers.0.command": []}),
    ("container lifecycle absent -> {}", {}, {}, {"spec.containers.0.lifecycle": {}}),
    ("container image and env [] -> absent", {}, {"spec.containers.0.env": []},
     {"spec.containers.0.env": ABSENT, "spec.containers.0.image": "beego:v2"}),
    ("emptyDir {} -> {medium: ''}", {}, {}, {"spec.volumes.0.emptyDir": {"medium": ""}}),
    ("emptyDir {} -> null", {}, {}, {"spec.volumes.0.emptyDir": None}),
    ("projected sources [] -> null", _PROJECTED, {}, {"spec.volumes.0.projected.sources": None}),
    ("projected sources null -> []", _PROJECTED, {"spec.volumes.0.projected.sources": None}, {}),
    ("projected sources [] -> absent", _PROJECTED, {},
     {"spec.volumes.0.projected.sources": ABSENT}),
    ("projected sources [] -> [] and an image", _PROJECTED, {},
     {"spec.containers.0.image": "beego:v2"}),
    ("projected items [] -> absent", _PROJECTED_CM, {},
     {"spec.volumes.0.projected.sources.0.configMap.items": ABSENT}),
    ("projected configMap {name} -> {name, optional: null}", _PROJECTED_CM, {},
     {"spec.volumes.0.projected.sources.0.configMap.optional": None}),
    ("gated: affinity absent -> {nodeAffinity: {}}", _GATED, {},
     {"spec.affinity": {"nodeAffinity": {}}}),
    ("gated: affinity {nodeAffinity: {}} -> absent", _GATED,
     {"spec.affinity": {"nodeAffinity": {}}}, {}),
    ("gated: affinity {} -> {nodeAffinity: {}}", _GATED, {"spec.affinity": {}},
     {"spec.affinity": {"nodeAffinity": {}}}),
    ("gated: affinity absent -> {}", _GATED, {}, {"spec.affinity": {}}),
    ("gated: nodeAffinity {} -> {preferred: []}", _GATED_EMPTY_NODES, {},
     {"spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution": []}),
    ("gated: nodeAffinity {} -> {required: null}", _GATED_EMPTY_NODES, {},
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution": None}),
    ("gated: nodeAffinity absent -> a required term", _GATED, {},
     {"spec.affinity": {"nodeAffinity": _REQUIRED}}),
    ("gated: nodeAffinity {} -> a required term", _GATED, {"spec.affinity": {"nodeAffinity": {}}},
     {"spec.affinity": {"nodeAffinity": _REQUIRED}}),
    ("gated: required term values absent -> []",
     {**_GATED, "spec.affinity": {"nodeAffinity": _REQUIRED}}, {},
     {"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution."
      "nodeSelectorTerms.0.matchExpressions.0.values": []}),
    ("gated: podAffinity absent -> {}", _GATED, {}, {"spec.affinity": {"podAffinity": {}}}),
    ("gated: nodeSelector absent -> {a: ''}", _GATED, {}, {"spec.nodeSelector": {"a": ""}}),
    ("gated: nodeSelector {a: v} -> {a: v, b: ''}", _GATED, {"spec.nodeSelector": {"a": "v"}},
     {"spec.nodeSelector": {"a": "v", "b": ""}}),
    ("gated: nodeSelector {a: ''} -> absent", _GATED, {"spec.nodeSelector": {"a": ""}}, {}),
    ("gated: nodeSelector absent -> {}", _GATED, {}, {"spec.nodeSelector": {}}),
    ("gated: nodeSelector absent -> {a: x}", _GATED, {}, {"spec.nodeSelector": {"a": "x"}}),
    ("gated: nodeSelector absent -> null", _GATED, {}, {"spec.nodeSelector": None}),
    ("gated: schedulingGates removed", _GATED, {}, {"spec.schedulingGates": ABSENT}),
    ("gated: schedulingGates [] ", _GATED, {}, {"spec.schedulingGates": []}),
    ("ownerReferences absent -> []", {}, {}, {"metadata.ownerReferences": []}),
    ("ownerReferences [] -> null", {}, {"metadata.ownerReferences": []},
     {"metadata.ownerReferences": None}),
    ("ownerReference controller absent -> false", {"metadata.ownerReferences": [_OWNER]}, {},
     {"metadata.ownerReferences.0.controller": False}),
    ("ownerReference controller absent -> null", {"metadata.ownerReferences": [_OWNER]}, {},
     {"metadata.ownerReferences.0.controller": None}),
    ("finalizers absent -> []", {}, {}, {"metadata.finalizers": []}),
    ("finalizers absent -> null", {}, {}, {"metadata.finalizers": None}),
    ("labels absent -> {}", {"metadata.labels": ABSENT}, {}, {"metadata.labels": {}}),
    ("generateName absent -> ''", {}, {}, {"metadata.generateName": ""}),
    ("namespace -> ''", {}, {}, {"metadata.namespace": ""}),
    ("deletionGracePeriodSeconds absent -> null", {}, {},
     {"metadata.deletionGracePeriodSeconds": None}),
    ("tolerations absent -> []", {}, {}, {"spec.tolerations": []}),
    ("activeDeadlineSeconds absent -> null", {}, {}, {"spec.activeDeadlineSeconds": None}),
]  # fmt: skip


def _edit(pod: Pod, edits: Edits) -> None:
    for dotted, value in edits.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        here: Any = pod
        for part in parents:
            here = here[part]
        if value is ABSENT:
            if isinstance(here, dict):
                here.pop(last, None)
        else:
            here[last] = copy.deepcopy(value)


def empty_pairs() -> list[Pair]:
    pairs = []
    for name, both, old_only, new_only in EMPTY_CASES:
        old, new = example_pod(), example_pod()
        for pod in (old, new):
            _edit(pod, both)
        _edit(old, old_only)
        _edit(new, new_only)
        pairs.append(Pair(f"empty: {name}", old, new))
    return pairs


# Values the API server decodes for metadata and the mutable spec fields, besides the
# fuzzer's arbitrary JSON (which it mostly refuses with 400).
_FINALIZERS = ["example.com/a", "example.com/b", "example.com/c"]
_TYPED_VALUES: st.SearchStrategy[Any] = (
    st.sampled_from(["", "x", "example.com/c", "nginx:2", 30, 0, None, [], {}])
    | st.lists(st.sampled_from(_FINALIZERS), max_size=4)
    | st.dictionaries(
        st.sampled_from(["a", "b", "k8s.io/c"]), st.sampled_from(["", "v"]), max_size=3
    )
    | st.lists(
        st.fixed_dictionaries(
            {
                "apiVersion": st.just("v1"),
                "kind": st.just("ConfigMap"),
                "name": st.sampled_from(["a", "b"]),
                "uid": st.sampled_from(["u1", "u2"]),
            },
            optional={"controller": st.booleans(), "blockOwnerDeletion": st.booleans()},
        ),
        max_size=2,
    )
)
_ADMISSION_ROOTS = (
    "metadata",
    "spec.activeDeadlineSeconds",
    "spec.tolerations",
    "spec.containers",
    "spec.initContainers",
    "spec.nodeSelector",
    "spec.schedulingGates",
)
# "Not set" in its several renderings, in the old pod, where the policy compares whole
# subtrees or LOOSE_PATHS: the admission fuzz mutates them (a gated pod may change
# nodeSelector and nodeAffinity).
_EMPTY_SHAPES: dict[str, list[Any]] = {
    "affinity": [{}, {"nodeAffinity": {}}, {"podAffinity": {}}, {"nodeAffinity": {"a": None}}],
    "securityContext": [{}, None],
    "nodeSelector": [{}, {"a": ""}, {"a": "v"}, None],
    "volumes": [{"name": "p", "projected": {"sources": []}}, {"name": "p", "projected": {}}],
}
_EMPTY_ROOTS = [["spec", key] for key in _EMPTY_SHAPES]
_EMPTY_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [None, [], {}, "", {"nodeAffinity": {}}, {"sources": []}, {"sources": None}, {"a": ""}]
)


_FAVOURED = (["metadata", "finalizers"], ["metadata", "ownerReferences"])


def _reaches_admission(path: list[str | int]) -> bool:
    dotted = ".".join(map(str, path))
    if dotted.startswith(("spec.containers", "spec.initContainers")):
        return len(path) == 2 or path[-1] == "image"  # the list, or an image
    return bool(path) and dotted.startswith(_ADMISSION_ROOTS)


@st.composite
def admission_pair(draw: st.DrawFn) -> tuple[Pod, Pod]:
    """The fuzzer's base pods and mutations, at paths the API server lets through to
    admission (metadata, images, tolerations, ...), with values it can decode."""
    old = draw(base_pods)
    if draw(st.booleans()):
        old["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "u1"}
        ]
    new = copy.deepcopy(old)
    for _ in range(draw(st.integers(1, 3))):
        paths = [path for path in all_paths(new) if _reaches_admission(path)]
        # Finalizers and owner references reach the rules most often (the API server
        # refuses changes to name, uid, timestamps and most of the spec itself).
        paths += [path for path in paths if path[:2] in _FAVOURED] * 4
        path = draw(st.sampled_from(paths))
        value = draw(_TYPED_VALUES | json_values)
        apply_mutation(new, path, draw(st.sampled_from(ACTIONS)), value)
    return old, new


@st.composite
def empty_admission_pair(draw: st.DrawFn) -> tuple[Pod, Pod]:
    """The fuzzer's base pods, three in four scheduling-gated (nodeSelector and
    nodeAffinity may then change), with "not set" in one of its renderings at the
    subtrees the policy compares whole or loosely, then mutated there."""
    old = draw(base_pods)
    # no service account volume injected: an update keeps the volumes' length
    old["spec"]["automountServiceAccountToken"] = False
    if draw(st.integers(0, 3)):
        old["spec"]["schedulingGates"] = [{"name": "example.com/gate"}]
        old["spec"].pop("nodeName", None)  # a pod with a nodeName cannot be gated
    for key in sorted(draw(st.sets(st.sampled_from(sorted(_EMPTY_SHAPES))))):
        shape = copy.deepcopy(draw(st.sampled_from(_EMPTY_SHAPES[key])))
        if key == "volumes":
            old["spec"]["volumes"].append(shape)
        else:
            old["spec"][key] = shape
    new = copy.deepcopy(old)
    for _ in range(draw(st.integers(1, 2))):
        paths = [path for path in all_paths(new) if path[:2] in _EMPTY_ROOTS]
        paths += [["spec"]] if not paths else []
        path = draw(st.sampled_from(paths))
        value = copy.deepcopy(draw(_EMPTY_VALUES | _TYPED_VALUES))
        action = draw(st.sampled_from(("set", "delete", "add-key", "empty", "set")))
        apply_mutation(new, path, action, value)
        if path == ["spec"]:
            new["spec"][draw(st.sampled_from(sorted(_EMPTY_SHAPES)))] = value
    return old, new


def generated_pairs(
    strategy: st.SearchStrategy[tuple[Pod, Pod]], count: int, tag: str
) -> list[Pair]:
    """``count`` (old, new) pairs drawn from ``strategy``, the same every run."""
    found: list[Pair] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None)
    @given(strategy)
    def collect(pair: tuple[Pod, Pod]) -> None:
        found.append(Pair(f"{tag} {len(found)}", *copy.deepcopy(pair)))

    collect()
    return found


def _metadata(pod: Pod) -> dict[str, Any]:
    metadata = pod.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def creatable(old: Pod, namespace: str, name: str) -> Pod:
    """The old pod as a create request: server-set metadata and status removed."""
    pod = copy.deepcopy(old)
    metadata = pod.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        pod["metadata"] = metadata = {}
    for key in SERVER_SET:
        metadata.pop(key, None)
    metadata["name"], metadata["namespace"] = name, namespace
    pod.pop("status", None)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    return pod


def transplant(live: Any, old: Any, new: Any) -> Any:
    """``live`` (the stored old pod) changed where ``new`` differs from ``old``."""
    if old == new:
        return live
    if isinstance(old, dict) and isinstance(new, dict) and isinstance(live, dict):
        out = dict(live)
        for key in old.keys() - new.keys():
            out.pop(key, None)
        for key, value in new.items():
            if key not in old:
                out[key] = copy.deepcopy(value)
            elif old[key] != value:
                out[key] = transplant(live.get(key), old[key], value)
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and isinstance(live, list)
        and len(old) == len(new) == len(live)
    ):
        return [transplant(*items) for items in zip(live, old, new, strict=True)]
    return copy.deepcopy(new)


# --- talking to the API server ---------------------------------------------------


class Client:
    """Raw JSON requests with one ApiClient per thread: the generated client methods
    validate bodies against their models and would refuse the pairs' odd fields
    before the API server sees them."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.local = threading.local()

    def call(
        self, method: str, path: str, body: Any = None, query: tuple[tuple[str, str], ...] = ()
    ) -> tuple[int, Any]:
        if not hasattr(self.local, "api"):
            self.local.api = self.plane.api_client()
        api = self.local.api
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        serialized = api.param_serialize(
            method, path, query_params=list(query), header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        response = api.call_api(*serialized, _request_timeout=60)
        response.read()
        try:
            data = json.loads(response.data)
        except ValueError:
            data = {"message": response.data.decode(errors="replace")}
        return response.status, data

    def pods(self, namespace: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")


def _paths(message: str, prefix: str) -> tuple[str, ...]:
    listed = message.split(prefix, 1)[1].split(". Only these fields", 1)[0]
    return tuple(path.strip() for path in listed.split(", ") if path.strip())


def classify(status: int, message: str) -> Verdict:
    if 200 <= status < 300:
        return Verdict("allowed")
    if WEBHOOK_DENIAL in message:
        return Verdict("denied", "webhook", _paths(message, WEBHOOK_DENIAL + MESSAGE_PREFIX))
    if POLICY_DENIAL in message:
        if MESSAGE_PREFIX not in message:  # an evaluation error, not the rules' verdict
            return Verdict(f"policy error: {message[:300]}", "policy")
        return Verdict("denied", "policy", _paths(message, MESSAGE_PREFIX))
    return Verdict(f"refused {status}", detail=message[:200])


def send(client: Client, namespace: str, name: str, body: Pod) -> Verdict:
    try:
        status, data = client.call("PUT", client.pods(namespace, name), body, (("dryRun", "All"),))
    except (TypeError, ValueError):  # e.g. a lone surrogate: no request leaves the client
        return Verdict("unsendable")
    return classify(status, str(data.get("message", "")) if isinstance(data, dict) else "")


@dataclass
class Prepared:
    pair: Pair
    pod: str  # the stored old pod's name
    body: Pod  # the update


def prepare(client: Client, namespace: str, pairs: list[Pair]) -> tuple[list[Prepared], int]:
    """Create each distinct old pod once; the pairs whose old pod could be created."""
    by_old: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_old.setdefault(json.dumps(pair.old, sort_keys=True, default=str), []).append(pair)

    def create(index: int, group: list[Pair]) -> list[Prepared]:
        old = group[0].old
        deleting = bool(_metadata(old).get("deletionTimestamp"))
        name = f"old-{index}"
        try:
            status, _ = client.call("POST", client.pods(namespace), creatable(old, namespace, name))
        except (TypeError, ValueError):  # not even JSON the client can send
            return []
        if status != 201:
            return []  # not a pod the API server accepts: nothing to compare
        if deleting:
            client.call("DELETE", client.pods(namespace, name))
        status, live = client.call("GET", client.pods(namespace, name))
        if status != 200 or bool(live["metadata"].get("deletionTimestamp")) != deleting:
            return []
        return [Prepared(pair, name, transplant(live, pair.old, pair.new)) for pair in group]

    with ThreadPoolExecutor(THREADS) as pool:
        groups = list(pool.map(lambda item: create(*item), enumerate(by_old.values())))
    return [prepared for group in groups for prepared in group], len(by_old)


def judge_all(client: Client, namespace: str, prepared: list[Prepared]) -> list[Verdict]:
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda p: send(client, namespace, p.pod, p.body), prepared))


# --- switching between the webhook and the policy --------------------------------

PROBE_NAMESPACE = "e2e-policy-probe"
PROBE_PATCH = '{"metadata":{"finalizers":["e2e.pod-replace-guard.io/probe"]}}'


def _probe(plane: ControlPlane) -> str:
    result = plane.kubectl(
        "-n", PROBE_NAMESPACE, "patch", "pod", "probe", "--type=merge", "-p", PROBE_PATCH,
        "--dry-run=server", check=False,
    )  # fmt: skip
    if result.returncode == 0:
        return "none"
    if POLICY_DENIAL in result.stderr:
        return "policy"
    if "denied the request" in result.stderr:
        return "webhook"
    return result.stderr.strip()


def wait_for(plane: ControlPlane, wanted: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = _probe(plane)
        if seen == wanted:
            return
        time.sleep(0.5)
    raise TimeoutError(f"admission {wanted!r} not in force after {timeout}s (probe: {seen})")


def generated_policy(plane: ControlPlane, *extra: str) -> list[Pod]:
    result = subprocess.run(
        [
            sys.executable, "-m", "webhook", "policy", "--live",
            "--kubeconfig", str(plane.kubeconfig),
            "--settings-env", str(REPO / "deploy" / "base" / "settings.env"),
            "-o", "json", *extra,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    items: list[Pod] = json.loads(result.stdout)["items"]
    return items


@pytest.fixture(scope="module")
def admission(plane: ControlPlane, webhook: Webhook) -> Iterator[Callable[[str], None]]:
    """use("webhook") or use("policy"): only that one is in force afterwards."""
    ensure_namespace(plane, PROBE_NAMESPACE)
    plane.apply(creatable(example_pod(), PROBE_NAMESPACE, "probe"))
    policy = generated_policy(plane)

    current = ["webhook"]

    def use(which: str) -> None:
        if which == current[0]:
            return
        if which == "webhook":
            plane.kubectl("delete", "validatingadmissionpolicybinding", POLICY_NAME,
                          "--ignore-not-found")  # fmt: skip
            plane.kubectl("delete", "validatingadmissionpolicy", POLICY_NAME, "--ignore-not-found")
            webhook.install()
            # The API server runs policies before webhooks: a denial by the webhook
            # means the policy is gone.
            wait_for(plane, "webhook")
        else:
            remove_webhook(plane)
            wait_for(plane, "none")
            plane.apply(policy)
            wait_for(plane, "policy")
        current[0] = which

    try:
        yield use
    finally:
        use("webhook")
        wait_for_enforcement(plane)


# --- the tests ---------------------------------------------------------------------


def _compare(judged: Judged) -> None:
    disagreements = []
    for item, one, two in zip(judged.prepared, judged.by_webhook, judged.by_policy, strict=True):
        same = one.outcome == two.outcome
        if same and one.outcome == "denied":
            same = all(any(w.startswith(p) for w in one.paths) for p in two.paths) and all(
                any(w.startswith(p) for p in two.paths) for w in one.paths
            )
        if not same:
            disagreements.append(
                f"{item.pair.name}: webhook {one} / policy {two}\n"
                f"  old: {json.dumps(item.pair.old, default=str)[:1500]}\n"
                f"  new: {json.dumps(item.body, default=str)[:1500]}"
            )
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements)


@dataclass
class Judged:
    prepared: list[Prepared]
    by_webhook: list[Verdict]
    by_policy: list[Verdict]

    def of(self, prefix: str | tuple[str, ...]) -> Judged:
        keep = [i for i, p in enumerate(self.prepared) if p.pair.name.startswith(prefix)]
        return Judged(
            [self.prepared[i] for i in keep],
            [self.by_webhook[i] for i in keep],
            [self.by_policy[i] for i in keep],
        )

    def count(self, outcome: str) -> int:
        return sum(verdict.outcome == outcome for verdict in self.by_webhook)


@pytest.fixture(scope="module")
def judged(plane: ControlPlane, admission: Callable[[str], None]) -> Judged:
    """Every pair judged with only the webhook, then with only the policy (one switch
    for all of them: the API server takes seconds to compile the policy)."""
    namespace = f"e2e-policy-{uuid.uuid4().hex[:6]}"
    ensure_namespace(plane, namespace)
    pairs = table_pairs()
    pairs += generated_pairs(mutated_pair(), FUZZ_PAIRS, "fuzz")
    pairs += generated_pairs(admission_pair(), ADMISSION_PAIRS, "fuzz-admission")
    pairs += empty_pairs()
    pairs += generated_pairs(empty_admission_pair(), EMPTY_FUZZ_PAIRS, "empty-fuzz")
    client = Client(plane)
    started = time.monotonic()
    prepared, olds = prepare(client, namespace, pairs)
    created = time.monotonic()
    admission("webhook")
    by_webhook = judge_all(client, namespace, prepared)
    admission("policy")
    by_policy = judge_all(client, namespace, prepared)
    result = Judged(prepared, by_webhook, by_policy)
    counts: dict[str, int] = {}
    for verdict in by_webhook:
        counts[verdict.outcome] = counts.get(verdict.outcome, 0) + 1
    print(
        f"\n{len(pairs)} pairs, {len(prepared)} with a creatable old pod ({olds} old pods, "
        f"created in {created - started:.1f}s); verdicts {counts}; judged by both in "
        f"{time.monotonic() - created:.1f}s"
    )
    assert {v.source for v in by_webhook if v.source} <= {"webhook"}
    assert {v.source for v in by_policy if v.source} <= {"policy"}
    return result


def test_table_cases_get_the_same_verdict(judged: Judged) -> None:
    table = judged.of(tuple(f"{t}:" for t in TABLES))
    _compare(table)
    # Enough of the table reaches admission to mean something, both ways.
    assert len(table.prepared) >= 120
    assert table.count("allowed") >= 20
    assert table.count("denied") >= 5


def test_empty_versus_absent_gets_the_same_verdict(judged: Judged) -> None:
    """Absent, null, {}, [] and "" in the old and the new pod: where the API server lets
    the update through, the policy (whole-subtree equalities, LOOSE_PATHS) judges as
    the webhook does."""
    _compare(judged.of(("empty:", "empty-fuzz")))
    empty = judged.of("empty:")
    for item, one, two in zip(empty.prepared, empty.by_webhook, empty.by_policy, strict=True):
        print(f"{item.pair.name}: webhook {one} / policy {two} {one.detail}")
    assert len(empty.prepared) >= len(EMPTY_CASES) - 3  # nearly every old pod creatable
    # Enough of them reach admission, both ways, for the comparison to mean something,
    # among them the LOOSE_PATHS cases that a whole-value equality would get wrong.
    assert empty.count("allowed") >= 30
    assert empty.count("denied") >= 6
    fuzzed = judged.of("empty-fuzz")
    outcomes: dict[str, int] = {}
    for verdict in fuzzed.by_webhook:
        outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
    print(f"empty-fuzz: {len(fuzzed.prepared)} pairs with a creatable old pod: {outcomes}")
    assert fuzzed.count("allowed") + fuzzed.count("denied") >= 25
    reached = {
        item.pair.name
        for item, verdict in zip(empty.prepared, empty.by_webhook, strict=True)
        if verdict.outcome == "allowed"
    }
    assert "empty: gated: affinity absent -> {nodeAffinity: {}}" in reached
    assert "empty: gated: nodeSelector absent -> {a: ''}" in reached
    assert "empty: projected sources [] -> null" in reached


def test_fuzz_pairs_get_the_same_verdict(judged: Judged) -> None:
    fuzz = judged.of("fuzz")
    _compare(fuzz)
    assert len(fuzz.prepared) >= 600
    assert fuzz.count("allowed") + fuzz.count("denied") >= 250
    assert fuzz.count("denied") >= 15


def test_a_pod_with_100_containers_and_the_most_annotations_is_judged_within_the_cost_budget(
    plane: ControlPlane, admission: Callable[[str], None], namespace: str
) -> None:
    """The runtime cost limit is not reached: the policy judges (allows or denies with
    the rules' message), it does not fail on cost (which would deny every update).

    The API server refuses annotations over 256 KiB in all, so a real pod cannot carry
    the 1 MB the webhook's own tests use; 250 KB is the most it can."""
    admission("policy")
    pod = big_pod(100, namespace=namespace, name="big", annotation_bytes=250_000)
    plane.apply(pod, "--server-side")
    client = Client(plane)
    _, live = client.call("GET", client.pods(namespace, "big"))
    images = copy.deepcopy(live)
    for container in images["spec"]["containers"]:
        container["image"] = "registry.k8s.io/pause:3.9"
    images["metadata"]["annotations"]["note-0"] = "y" * 1000
    checks_before, seconds_before = policy_check_seconds(plane)
    started = time.perf_counter()
    assert send(client, namespace, "big", images) == Verdict("allowed")
    allowed_ms = (time.perf_counter() - started) * 1000
    finalizer = copy.deepcopy(images)
    finalizer["metadata"]["finalizers"] = ["e2e.pod-replace-guard.io/x"]
    started = time.perf_counter()
    assert send(client, namespace, "big", finalizer) == Verdict(
        "denied", "policy", ("metadata.finalizers",)
    )
    denied_ms = (time.perf_counter() - started) * 1000
    checks, seconds = policy_check_seconds(plane)
    checks, seconds = checks - checks_before, seconds - seconds_before
    # The API server times a policy's checks when they deny (dispatcher.go): the
    # denied update, evaluated whole.
    assert checks == 1
    print(
        f"\nbig pod: allowed in {allowed_ms:.0f} ms, denied in {denied_ms:.0f} ms (dry run, "
        f"at the client); apiserver_validating_admission_policy_check_duration_seconds of "
        f"the denial: {seconds * 1000:.1f} ms"
    )


def test_images_change_at_positions_past_each_digit_of_a_250_container_pod(
    plane: ControlPlane, admission: Callable[[str], None], namespace: str
) -> None:
    """The v1.30+ variant counts positions with base-100 digits: image changes at 0, 99,
    100, 101 and 249 (either side of a digit's carry) and of init container 119 are
    allowed by both, a finalizer with them denied by both, naming only the finalizers."""
    pod = big_pod(250, namespace=namespace, name="wide")
    pod["spec"]["initContainers"] = [
        {"name": f"init-{index}", "image": "registry.k8s.io/pause:3.9"} for index in range(120)
    ]
    plane.apply(pod, "--server-side")
    client = Client(plane)
    _, live = client.call("GET", client.pods(namespace, "wide"))
    changed = copy.deepcopy(live)
    for index in (0, 99, 100, 101, 249):
        changed["spec"]["containers"][index]["image"] = "registry.k8s.io/pause:3.10"
    changed["spec"]["initContainers"][119]["image"] = "registry.k8s.io/pause:3.10"
    for source in ("policy", "webhook"):
        admission(source)
        assert send(client, namespace, "wide", changed) == Verdict("allowed"), source
        finalizer = copy.deepcopy(changed)
        finalizer["metadata"]["finalizers"] = ["e2e.pod-replace-guard.io/x"]
        assert send(client, namespace, "wide", finalizer) == Verdict(
            "denied", source, ("metadata.finalizers",)
        ), source


def policy_check_seconds(plane: ControlPlane) -> tuple[int, float]:
    """(count, sum of seconds) of apiserver_validating_admission_policy_check_duration_
    seconds for the generated policy, over every label combination (denials only)."""
    metrics = plane.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    count, total = 0, 0.0
    for line in metrics.splitlines():
        if f'policy="{POLICY_NAME}"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith("apiserver_validating_admission_policy_check_duration_seconds_count"):
            count += int(float(value))
        elif name.startswith("apiserver_validating_admission_policy_check_duration_seconds_sum"):
            total += float(value)
    return count, total


def test_the_installed_policy_covers_the_live_schema(plane: ControlPlane, tmp_path: Path) -> None:
    """``policy --check --live`` passes for the installed policy generated from this
    server, and fails (exit 1, naming the field) for one that lacks a field it has."""
    policy = generated_policy(plane, "--name", "check-" + uuid.uuid4().hex[:6])[0]
    name = policy["metadata"]["name"]
    plane.apply(policy)
    check = [sys.executable, "-m", "webhook", "policy", "--check", "--live", "--name", name,
             "--kubeconfig", str(plane.kubeconfig)]  # fmt: skip
    try:
        result = subprocess.run(check, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        plane.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")
    fields = json.loads(policy["metadata"]["annotations"]["pod-replace-guard.io/fields"])
    fields["io.k8s.api.core.v1.PodSpec"].remove("hostUsers")
    policy["metadata"]["annotations"]["pod-replace-guard.io/fields"] = json.dumps(fields)
    older = tmp_path / "older.json"
    older.write_text(json.dumps(policy))
    result = subprocess.run(
        [*check, "--policy", str(older)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "io.k8s.api.core.v1.PodSpec.hostUsers" in result.stdout


def test_check_reports_what_the_packaged_policy_misses_on_this_server(
    plane: ControlPlane, tmp_path: Path
) -> None:
    """The committed policy (pod schema v1.34.4, the v1.33+ variant) checked against this
    server: covered up to v1.34 (older schemas have fewer fields), fields reported (exit
    1) on a release that adds some; before 1.33, reported as a variant this server
    cannot compile (exit 1)."""
    packaged = tmp_path / "packaged.yaml"
    packaged.write_text((REPO / "deploy" / "components" / "policy" / "policy.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "policy", "--check", "--live", "--policy",
         str(packaged), "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    version = plane.server_version()
    print(f"\npackaged policy on {version}: {result.stdout.splitlines()[0]}")
    if plane.server_release() < (1, 33):
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.startswith("covered:"), result.stdout
        assert f"NOT for this cluster: the policy is the v1.33+ variant; Kubernetes {version} " \
            "compiles the v1.30+ variant" in result.stdout, result.stdout  # fmt: skip
    elif plane.server_release() <= (1, 34):
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        # e.g. v1.37 adds spec.schedulingGroup and spec.evictionResponders
        assert result.returncode == 1, result.stdout + result.stderr
        assert "io.k8s.api.core.v1.PodSpec." in result.stdout
