"""Warn mode, a webhook that is down, excluded namespaces — with a real API server.

These tests switch the shared webhook; each one restores enforce mode and
failurePolicy Fail before it ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ControlPlane, audit_events
from tests.e2e.conftest import (
    WEBHOOK_NAMESPACE,
    Webhook,
    ensure_namespace,
    pod_manifest,
    wait_for_enforcement,
)
from tests.e2e.test_enforcement import FINALIZER, create_pod

FINALIZER_PATCH = '{"metadata":{"finalizers":["' + FINALIZER + '"]}}'


@pytest.fixture
def restore(webhook: Webhook) -> Iterator[Webhook]:
    yield webhook
    if webhook.failure_policy != "Fail":
        webhook.set_failure_policy("Fail")
    if webhook.mode != "enforce" or not webhook.running:
        webhook.restart("enforce")
    wait_for_enforcement(webhook.plane)


@pytest.mark.parametrize(
    ("mode", "expected_warning"),
    [
        ("warn", "Warning: pod-replace-guard: metadata.finalizers may not be changed"),
        ("audit", None),
    ],
)
def test_warn_and_audit_modes_let_the_update_through(
    plane: ControlPlane, restore: Webhook, namespace: str, mode: str, expected_warning: str | None
) -> None:
    create_pod(plane, namespace, mode)
    restore.restart(mode)
    patch = ["-n", namespace, "patch", "pod", mode, "--type=merge", "-p"]
    result = plane.kubectl(*patch, FINALIZER_PATCH, check=False)
    assert result.returncode == 0, result.stderr
    if expected_warning:
        assert expected_warning in result.stderr, result.stderr
    else:
        assert "Warning" not in result.stderr
    # Leave nothing behind that would keep the namespace from going away.
    plane.kubectl(*patch, '{"metadata":{"finalizers":null}}')


def test_webhook_down(plane: ControlPlane, restore: Webhook, namespace: str) -> None:
    create_pod(plane, namespace, "target")
    for excluded in ("kube-system", WEBHOOK_NAMESPACE):
        ensure_namespace(plane, excluded)
        plane.kubectl("apply", "-f", "-", input=_json(pod_manifest("excluded-probe", excluded)))
    restore.stop()

    # failurePolicy: Fail — every judged update is refused, with a clear reason.
    result = plane.kubectl(
        "-n", namespace, "label", "pod", "target", "down=fail", check=False, timeout=90
    )
    assert result.returncode != 0
    assert "failed calling webhook" in result.stderr, result.stderr
    assert restore.name in result.stderr

    # Pods in excluded namespaces are never sent to the webhook.
    for excluded in ("kube-system", WEBHOOK_NAMESPACE):
        result = plane.kubectl(
            "-n",
            excluded,
            "label",
            "pod",
            "excluded-probe",
            "--overwrite",
            "down=fail",
            check=False,
        )
        assert result.returncode == 0, f"{excluded}: {result.stderr}"

    # CREATE and DELETE are not sent either.
    plane.kubectl("apply", "-f", "-", input=_json(pod_manifest("created-while-down", namespace)))
    plane.kubectl("-n", namespace, "delete", "pod", "created-while-down", "--wait=false")

    # failurePolicy: Ignore — the same update passes.
    restore.set_failure_policy("Ignore")
    result = plane.kubectl(
        "-n", namespace, "label", "pod", "target", "down=ignore", check=False, timeout=90
    )
    assert result.returncode == 0, result.stderr


def _json(obj: object) -> str:
    import json

    return json.dumps(obj)


@pytest.mark.local_plane
@pytest.mark.parametrize(("mode", "decision"), [("warn", "warned"), ("audit", "audited")])
def test_violations_reach_the_api_servers_audit_log(
    plane: ControlPlane, restore: Webhook, namespace: str, mode: str, decision: str
) -> None:
    """The webhook's auditAnnotations land on the API server's audit event of the
    request it judged: paths and counts, never the values."""
    name = f"audited-{mode}"
    create_pod(plane, namespace, name)
    restore.restart(mode)
    marker = "s3cr3t-audit-value"
    patch = {"metadata": {"finalizers": [f"example.com/{marker}"]}}
    command = ["-n", namespace, "patch", "pod", name, "--type=merge", "-p"]
    result = plane.kubectl(*command, _json(patch), check=False)
    assert result.returncode == 0, result.stderr
    annotations = _audit_annotations_for(plane, namespace, name, restore.name)
    assert annotations[f"{restore.name}/decision"] == decision
    assert annotations[f"{restore.name}/violations"] == "metadata.finalizers"
    assert annotations[f"{restore.name}/violations-total"] == "1"
    assert marker not in json.dumps(annotations)
    plane.kubectl(*command, '{"metadata":{"finalizers":null}}')


@pytest.mark.local_plane
def test_a_denial_reaches_the_api_servers_audit_log(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    create_pod(plane, namespace, "audited-deny")
    result = plane.kubectl(
        "-n", namespace, "patch", "pod", "audited-deny", "--type=merge",
        "-p", FINALIZER_PATCH, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    annotations = _audit_annotations_for(plane, namespace, "audited-deny", webhook.name)
    assert annotations[f"{webhook.name}/decision"] == "denied"
    assert annotations[f"{webhook.name}/violations"] == "metadata.finalizers"


def _audit_annotations_for(
    plane: ControlPlane, namespace: str, name: str, webhook_name: str
) -> dict[str, str]:
    """The annotations of the latest audit event of a patch of this pod that carries the
    webhook's annotations (the log is written as requests complete)."""
    deadline = time.monotonic() + 15
    while True:
        for event in reversed(audit_events(plane)):
            ref = event.get("objectRef") or {}
            annotations: dict[str, str] = event.get("annotations") or {}
            if (
                ref.get("namespace") == namespace
                and ref.get("name") == name
                and event.get("verb") == "patch"
                and f"{webhook_name}/decision" in annotations
            ):
                return annotations
        if time.monotonic() > deadline:
            raise AssertionError(f"no audit event with {webhook_name}'s annotations for {name}")
        time.sleep(0.5)


SUBRESOURCES = ["pods", "pods/ephemeralcontainers", "pods/resize"]
EPHEMERAL = {
    "name": "debugger",
    "image": "registry.k8s.io/pause:3.10.1",
    "targetContainerName": "main",
}


@pytest.mark.local_plane
def test_judging_subresources_is_opt_in_and_denies_kubectl_debug(
    plane: ControlPlane, restore: Webhook, namespace: str
) -> None:
    """Default: an ephemeral container (what `kubectl debug` adds) goes through. With
    PRG_JUDGED_SUBRESOURCES and the subresources in the webhook's rules, it is denied.

    The patch of pods/ephemeralcontainers is sent as `kubectl debug` sends it, through
    the API (kubectl 1.30's `patch --subresource` offers only status and scale)."""
    from kubernetes.client.exceptions import ApiException

    core = plane.core()
    body = {"spec": {"ephemeralContainers": [EPHEMERAL]}}

    def add_ephemeral(name: str) -> str:
        """ "" if the API server added the container, else its status and message."""
        try:
            core.patch_namespaced_pod_ephemeralcontainers(name, namespace, body)
        except ApiException as error:
            return f"{error.status} {json.loads(error.body or '{}').get('message', '')}"
        return ""

    create_pod(plane, namespace, "debug-default")
    assert add_ephemeral("debug-default") == ""

    create_pod(plane, namespace, "debug-judged")
    restore.stop()
    restore.start(env={"PRG_JUDGED_SUBRESOURCES": "ephemeralcontainers,resize"})
    restore.install(resources=SUBRESOURCES)
    try:
        wait_for_enforcement(plane)
        refused = add_ephemeral("debug-judged")
        assert refused.startswith("403 "), refused
        assert f'admission webhook "{restore.name}" denied the request' in refused
        assert "spec.ephemeralContainers" in refused
    finally:
        restore.install(resources=["pods"])
        restore.restart("enforce")
