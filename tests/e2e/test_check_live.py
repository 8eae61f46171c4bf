"""``check --live`` against the real verdict of ``kubectl replace``, case by case.

Each case makes a pod, builds a replacement manifest, asks ``check --live`` (a
server-side dry run through the same API server), then runs ``kubectl replace`` with
the same manifest and requires the same verdict and the same refusing layer: the API
server's own validation (ValidatePodUpdate, before any webhook) or the replace rules.

On kind the kubelet writes each pod's status while it starts (and at any time after),
so the manifests name no resourceVersion, as one kept in git would not; ``kubectl
replace`` still reads the current version and sends it, and a status write between
that read and its PUT is a Conflict: optimistic concurrency, not a verdict. The pods
are Running (and far from their activeDeadlineSeconds) before they are read, and a
case that meets a Conflict is read, checked and replaced again from the start.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane, remove_webhook
from tests.e2e.conftest import Webhook, wait_for_enforcement
from tests.e2e.test_enforcement import create_pod, get_pod
from webhook.live import WEBHOOK_NAME

Pod = dict[str, Any]
# the live pod as read -> the replacement
Build = Callable[[Pod], Pod]

TOLERATION = {"key": "example.com/dedicated", "operator": "Exists", "effect": "NoSchedule"}
# The default grace period (30 s), so that leaving it out changes nothing. The deadline
# is far beyond the test's run: on kind the kubelet would otherwise end the pods (a
# status write) in the middle of it.
BASE_SPEC = {
    "activeDeadlineSeconds": 3600,
    "tolerations": [TOLERATION],
    "terminationGracePeriodSeconds": 30,
}


def from_live(edit: Callable[[Pod], None]) -> Build:
    """The live pod (as `kubectl get -o yaml` shows it), edited."""

    def build(live: Pod) -> Pod:
        pod = copy.deepcopy(live)
        # Unconditional, as a manifest saved earlier would be: no stale-version Conflict.
        pod["metadata"].pop("resourceVersion", None)
        pod.pop("status", None)
        edit(pod)
        return pod

    return build


# Fields the API server fills in with defaults, which a hand-edited manifest leaves out
# (the example): the offline check cannot know them.
DEFAULTED_SPEC = ("dnsPolicy", "restartPolicy", "terminationGracePeriodSeconds")
DEFAULTED_CONTAINER = ("imagePullPolicy", "terminationMessagePath")


def without_defaults(edit: Callable[[Pod], None]) -> Build:
    """The live pod without the defaulted fields, edited."""

    def build(live: Pod) -> Pod:
        pod = from_live(edit)(live)
        for key in DEFAULTED_SPEC:
            pod["spec"].pop(key, None)
        for key in DEFAULTED_CONTAINER:
            pod["spec"]["containers"][0].pop(key, None)
        return pod

    return build


def nothing(pod: Pod) -> None:
    del pod


def image(value: str) -> Callable[[Pod], None]:
    def edit(pod: Pod) -> None:
        pod["spec"]["containers"][0]["image"] = value

    return edit


def each(*edits: Callable[[Pod], None]) -> Callable[[Pod], None]:
    def edit(pod: Pod) -> None:
        for one in edits:
            one(pod)

    return edit


def spec(key: str, value: Any) -> Callable[[Pod], None]:
    def edit(pod: Pod) -> None:
        if value is None:
            pod["spec"].pop(key, None)
        else:
            pod["spec"][key] = value

    return edit


def metadata(key: str, value: Any) -> Callable[[Pod], None]:
    def edit(pod: Pod) -> None:
        pod["metadata"][key] = value

    return edit


def container(key: str, value: Any) -> Callable[[Pod], None]:
    def edit(pod: Pod) -> None:
        pod["spec"]["containers"][0][key] = value

    return edit


def add_container(pod: Pod) -> None:
    pod["spec"]["containers"].append({"name": "extra", "image": "registry.k8s.io/pause:3.10"})


NEW_IMAGE = "registry.k8s.io/pause:3.10.1"
OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "0" * 8}


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    # The verdict on the local control plane (no scheduler: pods stay unscheduled).
    want: str  # "allowed", "api-server" or "replace-rules"


CASES = [
    Case("live pod unchanged", from_live(nothing), "allowed"),
    Case("live pod with a new image", from_live(image(NEW_IMAGE)), "allowed"),
    # The false deny of the offline check: the API server defaults what is left out.
    Case("defaults left out, new image", without_defaults(image(NEW_IMAGE)), "allowed"),
    Case("defaults left out", without_defaults(nothing), "allowed"),
    Case("label added", from_live(metadata("labels", {"app": "e2e", "x": "y"})), "allowed"),
    Case("annotation added", from_live(metadata("annotations", {"a": "b"})), "allowed"),
    Case("activeDeadlineSeconds lowered", from_live(spec("activeDeadlineSeconds", 600)), "allowed"),
    Case(
        "toleration added",
        from_live(spec("tolerations", [TOLERATION, {**TOLERATION, "key": "b"}])),
        "allowed",
    ),
    Case(
        "defaults left out, new image and a label",
        without_defaults(each(image(NEW_IMAGE), metadata("labels", {"app": "e2e", "v": "2"}))),
        "allowed",
    ),
    # The false allow of the offline check: the API server's own rules refuse these.
    Case(
        "tolerations removed, deadline raised, image dropped",
        from_live(each(spec("tolerations", None), spec("activeDeadlineSeconds", 600), image(""))),
        "api-server",
    ),
    Case("tolerations removed", from_live(spec("tolerations", None)), "api-server"),
    Case(
        "activeDeadlineSeconds raised", from_live(spec("activeDeadlineSeconds", 7200)), "api-server"
    ),
    Case("image emptied", from_live(image("")), "api-server"),
    Case(
        "env value changed",
        from_live(container("env", [{"name": "GREETING", "value": "s3cr3t"}])),
        "api-server",
    ),
    Case("nodeSelector set", from_live(spec("nodeSelector", {"zone": "a"})), "api-server"),
    Case("container added", from_live(add_container), "api-server"),
    Case("container renamed", from_live(container("name", "renamed")), "api-server"),
    Case(
        "terminationGracePeriodSeconds changed",
        from_live(spec("terminationGracePeriodSeconds", 45)),
        "api-server",
    ),
    Case(
        "defaults left out, env changed",
        without_defaults(container("env", [{"name": "GREETING", "value": "bye"}])),
        "api-server",
    ),
    # Changes the API server allows and the replace rules do not.
    Case(
        "finalizer added", from_live(metadata("finalizers", ["example.com/keep"])), "replace-rules"
    ),
    Case("ownerReference added", from_live(metadata("ownerReferences", [OWNER])), "replace-rules"),
    Case(
        "defaults left out, finalizer added",
        without_defaults(metadata("finalizers", ["example.com/keep"])),
        "replace-rules",
    ),
]


CONFLICT = "the object has been modified"


def check_live(plane: ControlPlane, manifest: Pod) -> tuple[int, dict[str, Any]]:
    result = run_check_live(plane, manifest)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def run_check_live(plane: ControlPlane, manifest: Pod) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "webhook", "check", "--live", "--kubeconfig",
            str(plane.kubeconfig), "--new", "-", "-o", "json",
        ],
        input=json.dumps(manifest), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def replace_verdict(plane: ControlPlane, manifest: Pod) -> str:
    """The layer that refused ``kubectl replace``, "allowed", or "conflict"."""
    result = plane.kubectl("replace", "-f", "-", input=json.dumps(manifest), check=False)
    if result.returncode == 0:
        return "allowed"
    if f'admission webhook "{WEBHOOK_NAME}" denied the request' in result.stderr:
        return "replace-rules"
    if CONFLICT in result.stderr:
        return "conflict"
    assert " is invalid" in result.stderr, result.stderr
    return "api-server"


def prepare(plane: ControlPlane, namespace: str, index: int) -> str:
    name = f"live-{index:02d}"
    create_pod(plane, namespace, name, spec=BASE_SPEC)
    return name


def wait_until_running(plane: ControlPlane, namespace: str) -> None:
    """On a cluster, the kubelet's start-up status writes are over (the local control
    plane has no kubelet: its pods stay Pending and nobody writes them)."""
    if not plane.local:
        plane.kubectl(
            "-n", namespace, "wait", "pod", "--all", "--for=jsonpath={.status.phase}=Running",
            "--timeout=180s",
        )  # fmt: skip


# A Conflict means the pod changed between kubectl's read and its write: each retry
# starts from a new read, and more than a few in a row is a failure of its own.
ATTEMPTS = 4


def compare(plane: ControlPlane, namespace: str, case: Case, name: str) -> str | None:
    """Read, check and replace one case; a disagreement, or None."""
    for _ in range(ATTEMPTS):
        manifest = case.build(get_pod(plane, namespace, name))
        code, verdict = check_live(plane, manifest)
        assert "s3cr3t" not in json.dumps(verdict)
        said = verdict["verdict"] if verdict["allowed"] else verdict["layer"]
        assert code == (0 if verdict["allowed"] else 1)
        real = replace_verdict(plane, manifest)
        if real == "conflict":
            print(f"{case.name}: Conflict on kubectl replace, read again")
            continue
        if said != real or (plane.local and real != case.want):
            return f"{case.name}: check --live {said}, kubectl replace {real}"
        return None
    return f"{case.name}: kubectl replace met a Conflict {ATTEMPTS} times in a row"


def test_check_live_agrees_with_kubectl_replace(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    with ThreadPoolExecutor(4) as pool:
        names = list(pool.map(lambda i: prepare(plane, namespace, i), range(len(CASES))))
    wait_until_running(plane, namespace)
    with ThreadPoolExecutor(4) as pool:
        found = pool.map(
            lambda pair: compare(plane, namespace, *pair), zip(CASES, names, strict=True)
        )
        disagreements = [d for d in found if d]
    assert not disagreements, "\n".join(disagreements)


def test_check_live_calls_a_stale_manifest_stale_as_kubectl_replace_does(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """A manifest that names a resourceVersion the pod has moved on from: kubectl replace
    meets a Conflict, and check --live says so (exit 2, one line) rather than a verdict.
    The pod is moved on by a label, on both environments; on kind the kubelet may move it
    too, which makes the manifest no less stale."""
    name = prepare(plane, namespace, 98)
    manifest = copy.deepcopy(get_pod(plane, namespace, name))
    manifest.pop("status", None)
    manifest["spec"]["containers"][0]["image"] = NEW_IMAGE  # allowed, were it current
    plane.kubectl("-n", namespace, "label", "pod", name, "moved=on")
    result = run_check_live(plane, manifest)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"pod {namespace}/{name} has changed since the manifest was read" in result.stderr
    assert replace_verdict(plane, manifest) == "conflict"
    # The same manifest with no resourceVersion replaces the current pod: allowed.
    del manifest["metadata"]["resourceVersion"]
    code, verdict = check_live(plane, manifest)
    assert (code, verdict["verdict"]) == (0, "allowed"), verdict


@pytest.mark.local_plane
def test_check_live_judges_the_rules_without_the_webhook(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """With no webhook installed the dry run succeeds, and check --live applies the
    replace rules to what the API server would store: the same layer is named."""
    live = get_pod(plane, namespace, prepare(plane, namespace, 99))
    manifest = from_live(metadata("finalizers", ["example.com/keep"]))(live)
    remove_webhook(plane)
    try:
        code, verdict = check_live(plane, manifest)
        assert (code, verdict["layer"]) == (1, "replace-rules"), verdict
        assert verdict["violations"] == [{"path": "metadata.finalizers"}]
        code, verdict = check_live(plane, from_live(image(NEW_IMAGE))(live))
        assert (code, verdict["verdict"]) == (0, "allowed"), verdict
    finally:
        webhook.install()
        wait_for_enforcement(plane)
