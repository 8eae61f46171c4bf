"""The installs on a real cluster, as an operator uses them. First the fail-safe cases
of docs/operations.md for `make deploy` (an upgrade to an image that does not exist, then
an install of one) and for Helm (an install of one): pod updates elsewhere keep
succeeding throughout, the install fails with its reason, nothing is left that refuses.
Then the chart: `helm install`, the end-to-end smoke through the Service, `helm upgrade`
to mode warn, `helm rollback` and an upgrade to a broken image under a loop of pod
updates, the break-glass drill, and `helm uninstall` leaving nothing behind. The tests
run in order and share the release.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.charts.tools import CHART, REPO, image_values, tool_path
from tests.e2e.cluster import ControlPlane, existing_cluster
from tests.e2e.conftest import (
    WEBHOOK_NAMESPACE,
    ensure_namespace,
    wait_for_rollout,
    webhook_pods,
)
from tests.e2e.test_disruptions import UpdateLoad, decisions_for
from tests.e2e.test_enforcement import FINALIZER, create_pod
from tests.support.clientcerts import write_ca

RELEASE = "pod-replace-guard"
CERTIFICATES = "pod-replace-guard-certificates"
VWC = "validatingwebhookconfiguration/pod-replace-guard"
WEBHOOK_NAME = "pods.pod-replace-guard.io"
FROZEN_PATCH = json.dumps({"metadata": {"finalizers": [FINALIZER]}})
ON_CALL = "oncall@example.com"
# The break-glass role of docs/operations.md: patch or delete this one configuration.
BREAK_GLASS: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "pod-replace-guard-break-glass"},
        "rules": [
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations"],
                "resourceNames": ["pod-replace-guard"],
                "verbs": ["get", "patch", "delete"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "pod-replace-guard-break-glass"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "pod-replace-guard-break-glass",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ON_CALL}],
    },
]


class Helm:
    def __init__(self, plane: ControlPlane) -> None:
        self.path = tool_path("helm")
        self.plane = plane

    def __call__(self, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
        command = [self.path, "--kubeconfig", str(self.plane.kubeconfig), *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{result.stderr}"
        return result


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with existing_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def helm(plane: ControlPlane) -> Helm:
    return Helm(plane)


@pytest.fixture(scope="module")
def namespace(plane: ControlPlane) -> Iterator[str]:
    name = f"helm-{uuid.uuid4().hex[:8]}"
    ensure_namespace(plane, name)
    yield name
    plane.kubectl(
        "-n", name, "patch", "pods", "--all", "--type=merge",
        "-p", '{"metadata":{"finalizers":null}}', check=False,
    )  # fmt: skip
    plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def pod(plane: ControlPlane, namespace: str) -> str:
    create_pod(plane, namespace, "target")
    return "target"


def label(plane: ControlPlane, namespace: str, pod: str) -> subprocess.CompletedProcess[str]:
    value = uuid.uuid4().hex[:8]
    return plane.kubectl(
        "-n", namespace, "label", "pod", pod, f"step={value}", "--overwrite", check=False
    )


def add_finalizer(
    plane: ControlPlane, namespace: str, pod: str
) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(
        "-n", namespace, "patch", "pod", pod, "--type=merge", "-p", FROZEN_PATCH, check=False
    )


def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f} s"
        time.sleep(1)


def configuration(plane: ControlPlane) -> dict[str, Any] | None:
    result = plane.kubectl("get", VWC, "-o", "json", check=False)
    found: dict[str, Any] | None = json.loads(result.stdout) if result.returncode == 0 else None
    return found


def secret_data(plane: ControlPlane, name: str) -> dict[str, str]:
    result = plane.kubectl("-n", WEBHOOK_NAMESPACE, "get", "secret", name, "-o", "json")
    data: dict[str, str] = json.loads(result.stdout)["data"]
    return data


MISSING_IMAGE = "pod-replace-guard-missing:0.0.0"


def registered(plane: ControlPlane) -> bool:
    """Whether the pods entry is registered (the canary's entry may be there alone)."""
    config = configuration(plane) or {}
    return any(entry["name"] == WEBHOOK_NAME for entry in config.get("webhooks") or [])


def controller_logs(plane: ControlPlane) -> str:
    return plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "logs", "-l", "app.kubernetes.io/name=pod-replace-guard",
        "-c", "controller", "--tail=-1", check=False,
    ).stdout  # fmt: skip


def deploy_script(plane: ControlPlane, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "KUBECTL": str(plane.kubectl_path),
        **env,
    }
    return subprocess.run(
        [str(REPO / "deploy" / script)], env=full, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def test_make_deploy_of_a_missing_image_over_a_working_install(
    plane: ControlPlane, namespace: str, pod: str
) -> None:
    """An upgrade (deploy/install.sh) to an image that does not exist: the old replicas
    keep serving (maxUnavailable 0), not one update fails, the script names the reason."""
    assert registered(plane), "make deploy's install is live"
    with UpdateLoad(plane, namespace, pod) as load:
        result = deploy_script(
            plane, "install.sh", IMAGE=MISSING_IMAGE, ROLLOUT_TIMEOUT="40s",
            NAMESPACE=WEBHOOK_NAMESPACE,
        )  # fmt: skip
    load.report("pod updates during make deploy of a missing image")
    print(f"\ninstall.sh said: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 1
    assert "did not become ready" in result.stderr.strip().splitlines()[-1]
    assert "ErrImagePull" in result.stderr or "ImagePullBackOff" in result.stderr
    assert load.sent > 20
    assert not load.failures, load.failures[:3]
    assert registered(plane)


def test_missing_images_install_nothing_that_refuses(
    plane: ControlPlane, helm: Helm, namespace: str, pod: str
) -> None:
    """From nothing, an image that does not exist, with `make deploy` and with
    `helm install --wait`: each fails with its reason, and pod updates in other
    namespaces keep succeeding (the entry is registered only once a replica answers)."""
    removed = deploy_script(plane, "uninstall.sh")
    assert removed.returncode == 0, removed.stderr
    assert configuration(plane) is None
    with UpdateLoad(plane, namespace, pod) as load:
        result = deploy_script(
            plane, "install.sh", IMAGE=MISSING_IMAGE, ROLLOUT_TIMEOUT="40s",
            NAMESPACE=WEBHOOK_NAMESPACE,
        )  # fmt: skip
        assert result.returncode == 1
        print(f"\ninstall.sh said: {result.stderr.strip().splitlines()[-1]}")
        assert "pod updates are not refused" in result.stderr.strip().splitlines()[-1]
        assert configuration(plane) is not None
        assert not registered(plane)
        assert deploy_script(plane, "uninstall.sh").returncode == 0
        # As the chart's NOTES say: the namespace, labelled as deploy/base/namespace.yaml.
        plane.kubectl("create", "namespace", WEBHOOK_NAMESPACE)
        plane.kubectl(
            "label", "namespace", WEBHOOK_NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        )  # fmt: skip
        command = [
            helm.path, "--kubeconfig", str(plane.kubeconfig), "install", RELEASE, str(CHART),
            "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout", "45s",
            *image_values(MISSING_IMAGE),
        ]  # fmt: skip
        failed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        print(f"helm install said: {failed.stderr.strip()}")
        assert failed.returncode != 0
        assert configuration(plane) is not None
        assert not registered(plane)
        helm("uninstall", RELEASE, "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout", "120s")
        assert configuration(plane) is None
    load.report("pod updates during the installs of a missing image")
    assert load.sent > 20
    assert not load.failures, load.failures[:3]


def client_ca_values(ca_file: str | Path) -> list[str]:
    return ["--set", "clientAuth.enabled=true", "--set-file", f"clientAuth.caCertificate={ca_file}"]


def test_install(plane: ControlPlane, helm: Helm, namespace: str, pod: str, tmp_path: Path) -> None:
    """`helm install` into a Pod Security "restricted" namespace. On kind (whose API
    server presents a client certificate) first with clientAuth trusting a CA that did
    not sign it: the webhook answers TLS inside the cluster but refuses the API
    server's calls. The canary keeps the entry unregistered, so no update is refused;
    `helm upgrade` to the right CA registers it."""
    # The image the kind flow built and loaded (make helm-kind), not the chart's default
    # (the published one, which an offline cluster cannot pull).
    args = image_values(os.environ.get("HELM_E2E_IMAGE") or "pod-replace-guard:dev")
    install = ["-n", WEBHOOK_NAMESPACE, "--wait", "--timeout", "240s"]
    client_ca = os.environ.get("HELM_E2E_CLIENT_CA")
    verb = "install"
    if client_ca:
        write_ca(tmp_path, "a CA that did not sign the API server's client certificate")
        with UpdateLoad(plane, namespace, pod) as load:
            helm("install", RELEASE, str(CHART), *install, *args,
                 *client_ca_values(tmp_path / "ca.crt"))  # fmt: skip
            until(
                lambda: "the API server did not reach the webhook" in controller_logs(plane),
                "the controller to report that the API server did not reach the webhook",
                90,
            )
            time.sleep(10)  # a sync or more later: still nothing registered
            assert not registered(plane)
        load.report("pod updates while the API server could not reach the webhook")
        reason = [line for line in controller_logs(plane).splitlines() if "did not reach" in line]
        print(f"the controller said: {reason[0][:400]}")
        assert load.sent > 20
        assert not load.failures, load.failures[:3]
        args += client_ca_values(client_ca)
        verb = "upgrade"
    started = time.monotonic()
    helm(verb, RELEASE, str(CHART), *install, *args)
    print(f"\nhelm {verb} --wait: {time.monotonic() - started:.1f} s")
    wait_for_rollout(plane)
    status = json.loads(helm("status", RELEASE, "-n", WEBHOOK_NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    until(lambda: registered(plane), "the controller to register the webhook entry", 60)
    config = configuration(plane)
    assert config is not None
    ca_bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
    assert base64.b64decode(ca_bundle) == base64.b64decode(
        secret_data(plane, CERTIFICATES)["ca-bundle.crt"]
    )


def test_smoke(plane: ControlPlane, namespace: str, pod: str) -> None:
    """Through the API server and the Service: an allowed change accepted, a frozen one denied."""

    def accepted() -> bool:
        return label(plane, namespace, pod).returncode == 0

    until(accepted, "an allowed label change accepted")
    before = decisions_for(plane, namespace, pod)
    assert label(plane, namespace, pod).returncode == 0
    until(
        lambda: decisions_for(plane, namespace, pod) > before,
        "a decision logged by a webhook pod",
        20,
    )
    denied = add_finalizer(plane, namespace, pod)
    assert denied.returncode != 0
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in denied.stderr, denied.stderr
    assert "metadata.finalizers" in denied.stderr
    # The API server's own metrics, which the alerts and the dashboard use, count both.
    metrics = plane.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    ours = [line for line in metrics.splitlines() if f'name="{WEBHOOK_NAME}"' in line]
    assert any(line.startswith("apiserver_admission_webhook_request_total{") for line in ours)
    assert any(
        line.startswith("apiserver_admission_webhook_rejection_count{")
        and 'error_type="no_error"' in line
        for line in ours
    )
    assert any(
        line.startswith("apiserver_admission_webhook_admission_duration_seconds_bucket{")
        for line in ours
    )


def test_upgrade_to_warn(plane: ControlPlane, helm: Helm, namespace: str, pod: str) -> None:
    """mode enforce -> warn rolls the pods; not one pod update fails meanwhile."""
    pods_before = {pod["metadata"]["name"] for pod in webhook_pods(plane)}
    certificates_before = secret_data(plane, CERTIFICATES)
    started = time.monotonic()
    with UpdateLoad(plane, namespace, pod) as load:
        helm(
            "upgrade", RELEASE, str(CHART), "-n", WEBHOOK_NAMESPACE, "--reuse-values",
            "--set", "settings.mode=warn", "--wait", "--timeout", "240s",
        )  # fmt: skip
        wait_for_rollout(plane)
        time.sleep(5)
    print(f"\nhelm upgrade --wait and rollout: {time.monotonic() - started:.1f} s")
    load.report("pod updates during helm upgrade")
    # The setting rolled the pods (it is read at start-up).
    pods_after = {pod["metadata"]["name"] for pod in webhook_pods(plane)}
    assert len(pods_after) == 2
    assert not pods_after & pods_before
    assert load.sent > 20
    assert not load.failures, load.failures[:3]
    configmap = plane.kubectl("-n", WEBHOOK_NAMESPACE, "get", "configmap", RELEASE, "-o", "json")
    assert json.loads(configmap.stdout)["data"]["PRG_MODE"] == "warn"
    # The frozen change is now allowed, with a warning.
    warned = add_finalizer(plane, namespace, pod)
    assert warned.returncode == 0, warned.stderr
    assert "Warning:" in warned.stderr
    # An upgrade makes no key material: the certificates the controller keeps stay.
    assert secret_data(plane, CERTIFICATES) == certificates_before


def test_rollback(plane: ControlPlane, helm: Helm, namespace: str, pod: str) -> None:
    """`helm rollback` to the first revision in enforce mode that the API server can
    reach (on kind, test_install's first revision trusts the wrong client CA): enforce
    again, no failed update meanwhile."""
    revision = "2" if os.environ.get("HELM_E2E_CLIENT_CA") else "1"
    with UpdateLoad(plane, namespace, pod) as load:
        helm("rollback", RELEASE, revision, "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout", "240s")
        wait_for_rollout(plane)
        time.sleep(5)
    load.report("pod updates during helm rollback")
    assert load.sent > 20
    assert not load.failures, load.failures[:3]
    configmap = plane.kubectl("-n", WEBHOOK_NAMESPACE, "get", "configmap", RELEASE, "-o", "json")
    assert json.loads(configmap.stdout)["data"]["PRG_MODE"] == "enforce"
    another = json.dumps({"metadata": {"finalizers": [FINALIZER, f"{FINALIZER}-2"]}})
    denied = plane.kubectl(
        "-n", namespace, "patch", "pod", pod, "--type=merge", "-p", another, check=False
    )
    assert denied.returncode != 0
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in denied.stderr


def test_upgrade_to_a_broken_image(
    plane: ControlPlane, helm: Helm, namespace: str, pod: str
) -> None:
    """`helm upgrade` to an image that does not exist: it fails, the old replicas keep
    judging, not one update fails; `helm rollback` puts the working revision back."""
    with UpdateLoad(plane, namespace, pod) as load:
        command = [
            helm.path, "--kubeconfig", str(plane.kubeconfig), "upgrade", RELEASE, str(CHART),
            "-n", WEBHOOK_NAMESPACE, "--reuse-values", "--wait", "--timeout", "45s",
            *image_values(MISSING_IMAGE),
        ]  # fmt: skip
        failed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        before = decisions_for(plane, namespace, pod)
        time.sleep(5)
        still_judged = decisions_for(plane, namespace, pod) > before
    load.report("pod updates during helm upgrade to a missing image")
    print(f"helm upgrade said: {failed.stderr.strip()}")
    assert failed.returncode != 0
    assert still_judged, "the old replicas stopped judging"
    assert load.sent > 20
    assert not load.failures, load.failures[:3]
    assert registered(plane)
    with UpdateLoad(plane, namespace, pod) as load:
        helm("rollback", RELEASE, "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout", "240s")
        wait_for_rollout(plane)
    load.report("pod updates during helm rollback from the broken image")
    assert not load.failures, load.failures[:3]


def test_break_glass(plane: ControlPlane, helm: Helm, namespace: str, pod: str) -> None:
    """docs/operations.md: no replica under failurePolicy Fail refuses updates; patching or
    deleting the configuration (with the narrow break-glass role) lets them through;
    `helm upgrade` puts everything back."""
    plane.apply(BREAK_GLASS)
    try:
        allowed = plane.kubectl("auth", "can-i", "patch", VWC, "--as", ON_CALL, check=False)
        assert allowed.stdout.strip() == "yes"
        other = plane.kubectl(
            "auth",
            "can-i",
            "patch",
            "validatingwebhookconfiguration/other",
            "--as",
            ON_CALL,
            check=False,
        )
        assert other.stdout.strip() == "no"
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "scale", f"deployment/{RELEASE}", "--replicas=0")
        plane.kubectl(
            "-n", WEBHOOK_NAMESPACE, "wait", "--for=delete", "pod",
            "-l", "app.kubernetes.io/name=pod-replace-guard", "--timeout=90s", timeout=100,
        )  # fmt: skip
        refused = label(plane, namespace, pod)
        assert refused.returncode != 0
        assert f'failed calling webhook "{WEBHOOK_NAME}"' in refused.stderr, refused.stderr
        # Step 1 of the runbook: fail open.
        patch = (
            '[{"op":"test","path":"/webhooks/0/name","value":"pods.pod-replace-guard.io"},'
            '{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]'
        )
        plane.kubectl("patch", VWC, "--type=json", "-p", patch, "--as", ON_CALL)
        until(
            lambda: label(plane, namespace, pod).returncode == 0, "updates after failing open", 30
        )
        # Or remove the configuration altogether.
        plane.kubectl("delete", VWC, "--as", ON_CALL)
        assert label(plane, namespace, pod).returncode == 0
        # Put it back: the release's own objects and values.
        helm(
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            WEBHOOK_NAMESPACE,
            "--reuse-values",
            "--wait",
            "--timeout",
            "240s",
        )
        wait_for_rollout(plane)
    finally:
        for doc in BREAK_GLASS:
            kind, name = doc["kind"].lower(), doc["metadata"]["name"]
            plane.kubectl("delete", kind, name, "--ignore-not-found")
    # The configuration came back empty; the controller registered the entry again.
    until(lambda: registered(plane), "the entry registered again", 60)
    config = configuration(plane)
    assert config is not None
    assert config["webhooks"][0]["failurePolicy"] == "Fail"
    replicas = plane.kubectl(
        "-n",
        WEBHOOK_NAMESPACE,
        "get",
        f"deployment/{RELEASE}",
        "-o",
        "jsonpath={.status.readyReplicas}",
    )
    assert replicas.stdout == "2"
    until(lambda: label(plane, namespace, pod).returncode == 0, "updates judged again", 30)
    before = decisions_for(plane, namespace, pod)
    assert label(plane, namespace, pod).returncode == 0
    until(lambda: decisions_for(plane, namespace, pod) > before, "a decision after the restore", 20)


def test_uninstall_leaves_nothing(
    plane: ControlPlane, helm: Helm, namespace: str, pod: str
) -> None:
    started = time.monotonic()
    helm("uninstall", RELEASE, "-n", WEBHOOK_NAMESPACE, "--wait", "--timeout", "180s")
    print(f"\nhelm uninstall --wait: {time.monotonic() - started:.1f} s")
    assert configuration(plane) is None
    instance = f"app.kubernetes.io/instance={RELEASE}"
    cluster_scoped = plane.kubectl(
        "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations,clusterroles,"
        "clusterrolebindings,namespaces,priorityclasses", "-l", instance, "-o", "name",
    )  # fmt: skip
    assert cluster_scoped.stdout.strip() == ""
    until(lambda: not webhook_pods(plane), "webhook pods gone", 90)
    left = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "get",
        "all,configmaps,secrets,serviceaccounts,poddisruptionbudgets,networkpolicies,endpointslices,roles,rolebindings",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    # What Kubernetes itself puts in every namespace.
    assert sorted(left) == ["configmap/kube-root-ca.crt", "serviceaccount/default"], left
    assert helm("list", "-a", "-n", WEBHOOK_NAMESPACE, "-q").stdout.strip() == ""
    # Pod updates go through unjudged again.
    assert label(plane, namespace, pod).returncode == 0
    # The namespace was made by hand before the install (the chart does not own it).
    plane.kubectl("delete", "namespace", WEBHOOK_NAMESPACE, "--timeout=120s", timeout=150)
