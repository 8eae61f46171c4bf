"""Warn mode, a webhook that is down, excluded namespaces — with a real API server.

These tests switch the shared webhook; each one restores enforce mode and
failurePolicy Fail before it ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ControlPlane
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
