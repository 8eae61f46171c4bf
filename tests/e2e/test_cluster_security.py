"""Who may call the webhook, and what its certificate's lifetime does, on a real cluster.

`make kind-test` deploys the webhook with client-certificate authentication (the kind
cluster's API server presents a certificate through its admission-control kubeconfig,
hack/kind/admission.sh): every update judged in this suite shows the API server gets
through, and here a pod without the certificate does not. Then a serving certificate
that expires while served: the expiry metric said when, the pods turn unready and leave the
Service, and renewing the Secret in place brings them back without a restart.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import REPO, ControlPlane
from tests.e2e.conftest import (
    WEBHOOK_NAMESPACE,
    Webhook,
    wait_for_enforcement,
    wait_for_rollout,
    webhook_pods,
)
from tests.e2e.test_enforcement import create_pod

pytestmark = pytest.mark.real_cluster

DEPLOYMENT = "deployment/pod-replace-guard"
CERT_DIR = REPO / ".deploy-certs"  # deploy/install.sh's default; its CA signs the caBundle

# Runs in a pod of the cluster: a review sent to the webhook's Service without a client
# certificate, over TLS on the admission port and in plain HTTP on the health port.
CLIENT = r"""
import http.client, json, ssl
review = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
    "request": {"uid": "probe", "operation": "UPDATE"}})
headers = {"Content-Type": "application/json"}
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
try:
    conn = http.client.HTTPSConnection("pod-replace-guard.NAMESPACE.svc", 443,
                                       context=context, timeout=10)
    conn.request("POST", "/validate", review, headers)
    print("tls: answered", conn.getresponse().status)
except Exception as error:
    print("tls: refused", type(error).__name__, error)
try:
    conn = http.client.HTTPConnection("pod-replace-guard.NAMESPACE.svc", 8081, timeout=10)
    conn.request("POST", "/validate", review, headers)
    print("health: answered", conn.getresponse().status)
except Exception as error:
    print("health: refused", type(error).__name__, error)
""".replace("NAMESPACE", WEBHOOK_NAMESPACE)


def _deployment(plane: ControlPlane) -> dict[str, object]:
    result = plane.kubectl("-n", WEBHOOK_NAMESPACE, "get", DEPLOYMENT, "-o", "json")
    deployment: dict[str, object] = json.loads(result.stdout)
    return deployment


def _container(plane: ControlPlane) -> dict[str, object]:
    spec = _deployment(plane)["spec"]
    container: dict[str, object] = spec["template"]["spec"]["containers"][0]  # type: ignore[index]
    return container


def test_a_pod_without_the_client_certificate_gets_no_decision(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    container = _container(plane)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}  # type: ignore[attr-defined]
    assert env.get("PRG_CLIENT_CA"), "deployed without CLIENT_CA (make kind-test sets it)"
    # The API server gets through: updates are judged (here, and in the whole suite).
    wait_for_enforcement(plane)
    name = f"intruder-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": container["image"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", CLIENT],
                }
            ],
        },
    }
    plane.apply(pod)
    plane.kubectl(
        "-n", namespace, "wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Succeeded",
        "--timeout=120s", timeout=130,
    )  # fmt: skip
    output = plane.kubectl("-n", namespace, "logs", name).stdout
    print(f"\nfrom a pod without a client certificate:\n{output}")
    assert "tls: refused" in output, output
    assert "health: answered 404" in output, output


def _write_serving_certificate(days: float) -> None:
    subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"), "-m", "webhook", "certs",
            "--out", str(CERT_DIR), "--service", "pod-replace-guard",
            "--namespace", WEBHOOK_NAMESPACE, "--days", str(days),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def _apply_secret(plane: ControlPlane) -> None:
    secret = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "create", "secret", "generic", "pod-replace-guard-tls",
        "--type=kubernetes.io/tls",
        f"--from-file=tls.crt={CERT_DIR / 'tls.crt'}",
        f"--from-file=tls.key={CERT_DIR / 'tls.key'}",
        f"--from-file=ca.crt={CERT_DIR / 'ca.crt'}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=secret)


def _ready_pods(plane: ControlPlane) -> int:
    return sum(
        1
        for pod in webhook_pods(plane)
        if not pod["metadata"].get("deletionTimestamp")
        and any(c.get("ready") for c in pod["status"].get("containerStatuses", []))
    )


def _ready_endpoints(plane: ControlPlane) -> int:
    result = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "get", "endpointslices",
        "-l", "kubernetes.io/service-name=pod-replace-guard", "-o", "json",
    )  # fmt: skip
    return sum(
        1
        for endpoint_slice in json.loads(result.stdout)["items"]
        for endpoint in endpoint_slice.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
    )


def _expiry_metric(plane: ControlPlane, pod: str) -> float:
    script = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:8081/metrics').read().decode())"
    )
    text = plane.kubectl("-n", WEBHOOK_NAMESPACE, "exec", pod, "--", "python3", "-c", script)
    for line in text.stdout.splitlines():
        if line.startswith("pod_replace_guard_certificate_expiry_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no certificate expiry metric")


@pytest.fixture
def renewed_afterwards(plane: ControlPlane) -> Iterator[None]:
    assert (CERT_DIR / "ca.key").is_file(), "the CA of make deploy is in .deploy-certs"
    try:
        yield
    finally:
        _write_serving_certificate(365)
        _apply_secret(plane)
        deadline = time.monotonic() + 240
        while _ready_pods(plane) < 2 and time.monotonic() < deadline:
            time.sleep(2)
        wait_for_enforcement(plane)


@pytest.mark.timeout(600)
def test_an_expiring_certificate_is_seen_and_renewed_in_place(
    plane: ControlPlane, webhook: Webhook, namespace: str, renewed_afterwards: None
) -> None:
    create_pod(plane, namespace, "target")
    lifetime = 75.0
    _write_serving_certificate(lifetime / 86400)
    _apply_secret(plane)
    plane.kubectl("-n", WEBHOOK_NAMESPACE, "rollout", "restart", DEPLOYMENT)
    wait_for_rollout(plane)
    wait_for_enforcement(plane)
    pod = next(p for p in webhook_pods(plane) if not p["metadata"].get("deletionTimestamp"))
    expires = _expiry_metric(plane, pod["metadata"]["name"])
    assert 0 < expires - time.time() < lifetime, "the metric names the coming expiry"

    # Expired: the readiness probes fail and the Service has no ready endpoint left, so
    # no new connection reaches the webhook (connections the API server opened while
    # the certificate was valid carry on: TLS checks validity at the handshake). That
    # is loud: two unready pods, the metric's alert, a log warning at every load.
    deadline = expires + 60
    while _ready_pods(plane) and time.time() < deadline:
        time.sleep(2)
    assert _ready_pods(plane) == 0, "pods still ready with an expired certificate"
    assert _ready_endpoints(plane) == 0, "the Service still offers an expired webhook"

    # Renewed in place (what re-running `make deploy` does): no restart needed.
    restarts_before = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
        for p in webhook_pods(plane)
    }
    _write_serving_certificate(365)
    _apply_secret(plane)
    deadline = time.monotonic() + 240
    while _ready_pods(plane) < 2 and time.monotonic() < deadline:
        time.sleep(2)
    assert _ready_pods(plane) == 2, "ready again once the Secret volume has the new pair"
    wait_for_enforcement(plane)
    plane.kubectl("-n", namespace, "label", "pod", "target", "renewed=yes")
    restarts_after = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
        for p in webhook_pods(plane)
    }
    assert restarts_after == restarts_before, "renewed without restarting the pods"
    assert Path(CERT_DIR / "tls.crt").is_file()
