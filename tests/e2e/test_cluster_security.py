"""Who may call the webhook, and what its certificate's lifetime does, on a real cluster.

`make kind-test` deploys the webhook with client-certificate authentication (the kind
cluster's API server presents a certificate through its admission-control kubeconfig,
hack/kind/admission.sh): every update judged in this suite shows the API server gets
through, and here a pod without the certificate does not. Then the certificates'
lifetime: the controller renews CAs and serving certificates that live minutes while pod
updates stream through, and none is refused.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import (
    WEBHOOK_NAMESPACE,
    Webhook,
    wait_for_enforcement,
    wait_for_rollout,
    webhook_pods,
)
from tests.e2e.test_enforcement import create_pod
from webhook.registration import CANARY_LABEL, CANARY_NAME, WEBHOOK_NAME

pytestmark = pytest.mark.real_cluster

DEPLOYMENT = "deployment/pod-replace-guard"

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


def _expiry_metric(plane: ControlPlane, pod: str) -> float:
    script = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:8081/metrics').read().decode())"
    )
    text = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "exec", pod, "-c", "webhook", "--", "python3", "-c", script
    )  # fmt: skip
    for line in text.stdout.splitlines():
        if line.startswith("pod_replace_guard_certificate_expiry_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no certificate expiry metric")


LIFETIMES = {"PRG_CA_LIFETIME": "150s", "PRG_CERT_LIFETIME": "60s", "PRG_SYNC_SECONDS": "3"}
STREAM_SECONDS = 270


@pytest.fixture
def short_lifetimes(plane: ControlPlane) -> Iterator[None]:
    """Every container of the webhook's pods with certificate lifetimes of minutes; the
    controller renews what outlives them (webhook/rotation.py), then keeps renewing."""
    settings = [f"{key}={value}" for key, value in LIFETIMES.items()]
    plane.kubectl("-n", WEBHOOK_NAMESPACE, "set", "env", DEPLOYMENT, *settings)
    try:
        wait_for_rollout(plane)
        wait_for_enforcement(plane)
        yield
    finally:
        unset = [f"{key}-" for key in LIFETIMES]
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "set", "env", DEPLOYMENT, *unset)
        wait_for_rollout(plane)
        wait_for_enforcement(plane)


def _published_serials(plane: ControlPlane) -> set[int]:
    from cryptography import x509

    result = plane.kubectl(
        "get", "validatingwebhookconfiguration", "pod-replace-guard",
        "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}",
    )  # fmt: skip
    bundle = base64.b64decode(result.stdout)
    return {ca.serial_number for ca in x509.load_pem_x509_certificates(bundle)}


@pytest.mark.timeout(900)
def test_certificates_rotate_under_a_stream_of_updates(
    plane: ControlPlane, webhook: Webhook, namespace: str, short_lifetimes: None
) -> None:
    """Several CA and serving-certificate renewals by the controller, with lifetimes of
    minutes, while pod updates stream through the webhook: none refused, and the
    expiry metric follows each renewal."""
    create_pod(plane, namespace, "target")
    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            result = plane.kubectl(
                "-n", namespace, "label", "pod", "target", f"step={sent}", "--overwrite",
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                failures.append(result.stderr.strip()[-300:])

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    cas: set[int] = set()
    expiries: set[float] = set()
    deadline = time.monotonic() + STREAM_SECONDS
    try:
        while time.monotonic() < deadline:
            cas |= _published_serials(plane)
            for pod in webhook_pods(plane):
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                expires = _expiry_metric(plane, pod["metadata"]["name"])
                assert expires > time.time(), "an expired certificate is served"
                expiries.add(expires)
            time.sleep(5)
    finally:
        stop.set()
        thread.join(60)
    print(
        f"\nrotation on kind: {sent} updates sent, {len(failures)} refused; "
        f"{len(cas)} CAs published, {len(expiries)} serving certificates seen in the metric"
    )
    assert not failures, failures[:3]
    assert sent > 100
    assert len(cas) >= 3, "the CA was not renewed twice"
    assert len(expiries) >= 4, "the expiry metric did not follow the renewals"
    logs = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "logs", DEPLOYMENT, "-c", "controller", "--tail=-1"
    ).stdout
    assert "PRIVATE KEY" not in logs


def test_only_the_controllers_probe_is_refused_by_the_canary(plane: ControlPlane) -> None:
    """Flux applies every object with a server-side dry run first, and `kubectl diff`
    is one: the canary must let theirs through (it refused every dry run of its
    ConfigMap, so a GitOps apply of the install failed), and the registration it
    proved is in place."""
    config = json.loads(
        plane.kubectl(
            "get", "validatingwebhookconfiguration", "pod-replace-guard", "-o", "json"
        ).stdout
    )
    assert [e["name"] for e in config["webhooks"]] == [WEBHOOK_NAME, CANARY_NAME]
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "pod-replace-guard-canary",
                "namespace": WEBHOOK_NAMESPACE,
                "labels": {CANARY_LABEL: "true", "gitops": "dry-run"},
            },
        }
    )
    for args in (
        ["apply", "--server-side", "--dry-run=server", "--field-manager=flux", "-f", "-"],
        ["apply", "--dry-run=server", "-f", "-"],
    ):
        result = plane.kubectl(*args, input=manifest, check=False)
        assert result.returncode == 0, result.stderr
    labelled = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "label", "configmap", "pod-replace-guard-canary", "x=y",
        "--dry-run=server", check=False,
    )  # fmt: skip
    assert labelled.returncode == 0, labelled.stderr
