"""The replace rules enforced by a real API server, through kubectl as users run it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import REPO, ControlPlane
from tests.e2e.conftest import PAUSE_IMAGE, Webhook, pod_manifest

GATE = "e2e.pod-replace-guard.io/gate"
FINALIZER = "e2e.pod-replace-guard.io/keep"


def get_pod(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        plane.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout
    )
    return pod


def create_pod(
    plane: ControlPlane, namespace: str, name: str, server_side: bool = False, **kwargs: Any
) -> dict[str, Any]:
    # kubectl apply (not create) records last-applied-configuration (or, server-side,
    # field ownership), so later applies compute what they remove as they do for users.
    mode = ["--server-side"] if server_side else []
    manifest = json.dumps(pod_manifest(name, namespace, **kwargs))
    plane.kubectl("apply", *mode, "-f", "-", input=manifest)
    return get_pod(plane, namespace, name)


def assert_denied_by_webhook(
    result: subprocess.CompletedProcess[str], webhook: Webhook, *paths: str
) -> None:
    assert result.returncode != 0, f"expected a denial, got success: {result.stdout}"
    assert f'admission webhook "{webhook.name}" denied the request' in result.stderr, result.stderr
    for path in paths:
        assert path in result.stderr, f"{path} not named in: {result.stderr}"


# --- ways of changing a pod, as users do ----------------------------------------


def _write(tmp: Path, obj: dict[str, Any]) -> str:
    path = tmp / f"{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(obj))
    return str(path)


def via_replace(
    plane: ControlPlane, pod: dict[str, Any], tmp: Path, dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    """kubectl replace, retried on a Conflict as a user would: on a real cluster the
    kubelet updates the pod's status (a new resourceVersion) at any time."""
    for _ in range(5):
        args = ["replace", "-f", _write(tmp, pod)]
        result = plane.kubectl(*args, *(["--dry-run=server"] if dry_run else []), check=False)
        if "the object has been modified" not in result.stderr:
            return result
        meta = pod["metadata"]
        current = get_pod(plane, meta["namespace"], meta["name"])
        pod = {
            **pod,
            "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
        }
    return result


def via_apply(
    plane: ControlPlane, pod: dict[str, Any], tmp: Path, dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    manifest = _manifest_of(pod)
    return plane.kubectl(
        "apply",
        "-f",
        _write(tmp, manifest),
        *(["--dry-run=server"] if dry_run else []),
        check=False,
    )


def via_server_side_apply(
    plane: ControlPlane, pod: dict[str, Any], tmp: Path
) -> subprocess.CompletedProcess[str]:
    manifest = _manifest_of(pod)
    return plane.kubectl(
        # The pod was created by server-side apply with the default field manager,
        # so fields left out of the manifest are removed, as for users.
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        _write(tmp, manifest),
        check=False,
    )


def via_put(
    plane: ControlPlane, pod: dict[str, Any], tmp: Path
) -> subprocess.CompletedProcess[str]:
    """What `kubectl edit` sends: a PUT of the whole edited object (Python client)."""
    from kubernetes.client.exceptions import ApiException

    api = plane.core()
    meta = pod["metadata"]
    try:
        api.replace_namespaced_pod(meta["name"], meta["namespace"], pod)
    except ApiException as error:
        body = json.loads(error.body or "{}")
        return subprocess.CompletedProcess(
            [], 1, "", f"Error from server: {body.get('message', error.body)}"
        )
    return subprocess.CompletedProcess([], 0, "", "")


def _manifest_of(pod: dict[str, Any]) -> dict[str, Any]:
    """What a user keeps in git: the live object without server-populated fields."""
    meta = pod["metadata"]
    keep = {
        k: meta[k]
        for k in ("name", "namespace", "labels", "annotations", "finalizers", "ownerReferences")
        if k in meta
    }
    keep.get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    spec = {k: v for k, v in pod["spec"].items() if k not in ("volumes",)}
    spec["containers"] = [
        {k: v for k, v in c.items() if k != "volumeMounts"} for c in spec["containers"]
    ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": keep, "spec": spec}


FULL_OBJECT_METHODS: dict[str, Callable[..., subprocess.CompletedProcess[str]]] = {
    "replace": via_replace,
    "apply": via_apply,
    "apply-server-side": via_server_side_apply,
    "put": via_put,
}


# --- frozen changes the API server itself allows --------------------------------


def add_finalizer(pod: dict[str, Any]) -> None:
    pod["metadata"].setdefault("finalizers", []).append(FINALIZER)


def add_owner_reference(pod: dict[str, Any]) -> None:
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": str(uuid.uuid4())}
    ]


def remove_scheduling_gate(pod: dict[str, Any]) -> None:
    pod["spec"].pop("schedulingGates", None)


def add_node_selector(pod: dict[str, Any]) -> None:
    pod["spec"]["nodeSelector"] = {"disktype": "ssd"}


FROZEN_CHANGES: dict[str, tuple[Callable[[dict[str, Any]], None], str, dict[str, Any]]] = {
    # name: (change, reported path, patch equivalent)
    "finalizer": (add_finalizer, "metadata.finalizers", {"metadata": {"finalizers": [FINALIZER]}}),
    "ownerReferences": (
        add_owner_reference,
        "metadata.ownerReferences",
        {
            "metadata": {
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": "0f4a2c2e-7b1e-4d0e-9d7a-3c1e6f3b2a11",
                    }
                ]
            }
        },
    ),
    "schedulingGates": (
        remove_scheduling_gate,
        "spec.schedulingGates",
        {"spec": {"schedulingGates": None}},
    ),
    "nodeSelector": (
        add_node_selector,
        "spec.nodeSelector",
        {"spec": {"nodeSelector": {"disktype": "ssd"}}},
    ),
}

GATED = {"schedulingGates": [{"name": GATE}]}


def _new_pod(plane: ControlPlane, namespace: str, server_side: bool = False) -> dict[str, Any]:
    # Gated, so that the API server allows gate removal and nodeSelector additions
    # and the only layer left to refuse them is the webhook.
    name = f"p-{uuid.uuid4().hex[:6]}"
    return create_pod(plane, namespace, name, server_side=server_side, spec=GATED)


@pytest.mark.parametrize("method", sorted(FULL_OBJECT_METHODS))
@pytest.mark.parametrize("change", sorted(FROZEN_CHANGES))
def test_frozen_change_denied_by_full_object_writes(
    plane: ControlPlane, webhook: Webhook, namespace: str, tmp_path: Path, change: str, method: str
) -> None:
    pod = _new_pod(plane, namespace, server_side=method == "apply-server-side")
    mutate, path, _ = FROZEN_CHANGES[change]
    mutate(pod)
    result = FULL_OBJECT_METHODS[method](plane, pod, tmp_path)
    assert_denied_by_webhook(result, webhook, path)
    after = get_pod(plane, namespace, pod["metadata"]["name"])
    assert after["spec"].get("schedulingGates") == GATED["schedulingGates"]
    assert not after["metadata"].get("finalizers")


@pytest.mark.parametrize("patch_type", ["merge", "strategic", "json"])
@pytest.mark.parametrize("change", sorted(FROZEN_CHANGES))
def test_frozen_change_denied_by_patch(
    plane: ControlPlane, webhook: Webhook, namespace: str, change: str, patch_type: str
) -> None:
    pod = _new_pod(plane, namespace)
    _, path, merge_patch = FROZEN_CHANGES[change]
    if patch_type == "json":
        section, fields = next(iter(merge_patch.items()))
        field, value = next(iter(fields.items()))
        op = (
            {"op": "remove", "path": f"/{section}/{field}"}
            if value is None
            else {"op": "add", "path": f"/{section}/{field}", "value": value}
        )
        body = json.dumps([op])
    else:
        body = json.dumps(merge_patch)
    name = pod["metadata"]["name"]
    result = plane.kubectl(
        "-n", namespace, "patch", "pod", name, f"--type={patch_type}", "-p", body, check=False
    )
    assert_denied_by_webhook(result, webhook, path)


def test_allowed_changes_through_kubectl(
    plane: ControlPlane, webhook: Webhook, namespace: str, tmp_path: Path
) -> None:
    pod = create_pod(
        plane,
        namespace,
        "allowed",
        spec={"initContainers": [{"name": "init", "image": PAUSE_IMAGE}]},
    )
    manifest = _manifest_of(pod)
    manifest["metadata"]["labels"] = {"app": "e2e", "tier": "web"}
    manifest["metadata"]["annotations"] = {"note": "changed by apply"}
    manifest["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.9"
    manifest["spec"]["initContainers"][0]["image"] = "registry.k8s.io/pause:3.9"
    manifest["spec"]["activeDeadlineSeconds"] = 3600
    result = plane.kubectl("apply", "-f", _write(tmp_path, manifest), check=False)
    assert result.returncode == 0, result.stderr
    for args in (
        ["label", "pod", "allowed", "color=blue"],
        ["annotate", "pod", "allowed", "owner=team-a"],
        ["set", "image", "pod/allowed", "main=registry.k8s.io/pause:3.10"],
        [
            "patch",
            "pod",
            "allowed",
            "--type=json",
            "-p",
            '[{"op":"add","path":"/spec/tolerations/-","value":{"key":"k","operator":"Exists","effect":"NoSchedule"}}]',
        ],
    ):
        result = plane.kubectl("-n", namespace, *args, check=False)
        assert result.returncode == 0, f"{args}: {result.stderr}"
    live = get_pod(plane, namespace, "allowed")
    assert live["metadata"]["labels"] == {"app": "e2e", "tier": "web", "color": "blue"}
    assert live["metadata"]["annotations"]["owner"] == "team-a"
    assert live["spec"]["containers"][0]["image"] == "registry.k8s.io/pause:3.10"
    assert live["spec"]["initContainers"][0]["image"] == "registry.k8s.io/pause:3.9"
    assert live["spec"]["activeDeadlineSeconds"] == 3600
    assert any(t.get("key") == "k" for t in live["spec"]["tolerations"])
    # The API server bumped metadata.generation for the spec changes; that is
    # ignored as server-managed, or the image change would have been refused. Pods
    # have a generation from 1.33 (kubernetes pkg/registry/core/pod/strategy.go); an
    # older server sets none, so there is no bump to see.
    if "generation" in pod["metadata"] or plane.server_release() >= (1, 34):
        assert live["metadata"].get("generation", 1) > 1
    else:
        print(f"\n{plane.server_version()} sets no metadata.generation on pods: no bump")


def test_replace_with_allowed_changes(
    plane: ControlPlane, webhook: Webhook, namespace: str, tmp_path: Path
) -> None:
    pod = create_pod(plane, namespace, "replaced")
    pod["metadata"]["labels"]["version"] = "2"
    pod["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.9"
    result = via_replace(plane, pod, tmp_path)
    assert result.returncode == 0, result.stderr
    assert get_pod(plane, namespace, "replaced")["metadata"]["labels"]["version"] == "2"


def test_dry_run_is_judged_and_persists_nothing(
    plane: ControlPlane, webhook: Webhook, namespace: str, tmp_path: Path
) -> None:
    pod = create_pod(plane, namespace, "dry")
    frozen = json.loads(json.dumps(pod))
    add_finalizer(frozen)
    assert_denied_by_webhook(
        via_replace(plane, frozen, tmp_path, dry_run=True), webhook, "metadata.finalizers"
    )
    result = plane.kubectl(
        "-n", namespace, "label", "pod", "dry", "dry=run", "--dry-run=server", check=False
    )
    assert result.returncode == 0, result.stderr
    live = get_pod(plane, namespace, "dry")
    assert "dry" not in live["metadata"]["labels"]
    assert live["metadata"].get("finalizers") == pod["metadata"].get("finalizers")
    if plane.local:
        # No kubelet writes this pod's status here, so nothing at all may have changed
        # (on a real cluster the kubelet's status updates move the resourceVersion).
        assert live["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]


def test_api_server_refuses_env_change_before_the_webhook(
    plane: ControlPlane, webhook: Webhook, namespace: str, tmp_path: Path
) -> None:
    pod = create_pod(plane, namespace, "env")
    pod["spec"]["containers"][0]["env"][0]["value"] = "changed"
    result = via_replace(plane, pod, tmp_path)
    assert result.returncode != 0
    # The API server's own ValidatePodUpdate runs before validating webhooks: the
    # refusal comes from that layer, not from ours.
    assert "pod updates may not change fields other than" in result.stderr, result.stderr
    assert "admission webhook" not in result.stderr


def test_exempt_controller_may_remove_owner_references(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    # A real owner: on a real cluster the garbage collector deletes a pod whose owner
    # does not exist.
    plane.kubectl("-n", namespace, "create", "configmap", "owner")
    owner_uid = plane.kubectl(
        "-n", namespace, "get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}"
    ).stdout
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
    create_pod(plane, namespace, "owned", metadata={"ownerReferences": [owner]})
    patch = '[{"op":"remove","path":"/metadata/ownerReferences"}]'
    as_user = plane.kubectl(
        "-n", namespace, "patch", "pod", "owned", "--type=json", "-p", patch, check=False
    )
    assert_denied_by_webhook(as_user, webhook, "metadata.ownerReferences")
    as_gc = plane.kubectl(
        "-n", namespace, "patch", "pod", "owned", "--type=json", "-p", patch,
        "--as=system:serviceaccount:kube-system:generic-garbage-collector",
        "--as-group=system:serviceaccounts:kube-system", "--as-group=system:authenticated",
        check=False,
    )  # fmt: skip
    assert as_gc.returncode == 0, as_gc.stderr
    assert not get_pod(plane, namespace, "owned")["metadata"].get("ownerReferences")


def test_deleted_pod_can_lose_its_finalizer_and_go_away(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    create_pod(plane, namespace, "doomed", metadata={"finalizers": [FINALIZER]})
    plane.kubectl("-n", namespace, "delete", "pod", "doomed", "--wait=false")
    live = get_pod(plane, namespace, "doomed")
    assert live["metadata"].get("deletionTimestamp"), "the finalizer keeps the pod"
    result = plane.kubectl(
        "-n",
        namespace,
        "patch",
        "pod",
        "doomed",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
        check=False,
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if plane.kubectl("-n", namespace, "get", "pod", "doomed", check=False).returncode != 0:
            return
        time.sleep(0.5)
    pytest.fail("the pod did not go away after its finalizer was removed")


def test_create_and_delete_are_not_judged(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    # Created with what an update could never add: finalizers, owner references.
    create_pod(
        plane,
        namespace,
        "fresh",
        metadata={"finalizers": [FINALIZER]},
        spec={"nodeSelector": {"a": "b"}, **GATED},
    )
    result = plane.kubectl("-n", namespace, "delete", "pod", "fresh", "--wait=false", check=False)
    assert result.returncode == 0, result.stderr


def _check_live(plane: ControlPlane, new: dict[str, Any], tmp: Path) -> int:
    result = subprocess.run(
        [
            sys.executable, "-m", "webhook", "check", "--live", "--new", _write(tmp, new),
            "--kubeconfig", str(plane.kubeconfig), "-o", "json",
        ],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode


@pytest.mark.parametrize("change", [*sorted(FROZEN_CHANGES), "labels", "image"])
def test_check_live_agrees_with_the_server(
    plane: ControlPlane, webhook: Webhook, namespace: str, tmp_path: Path, change: str
) -> None:
    pod = _new_pod(plane, namespace)
    if change == "labels":
        pod["metadata"]["labels"]["extra"] = "yes"
    elif change == "image":
        pod["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.9"
    else:
        FROZEN_CHANGES[change][0](pod)
    offline = _check_live(plane, pod, tmp_path)
    server = via_replace(plane, pod, tmp_path, dry_run=True)
    assert (offline == 0) == (server.returncode == 0), server.stderr
