"""``pod-replace-guard controller`` against a real kube-apiserver: it registers the
webhook only once the server answers TLS with a certificate the bundle trusts, and
it rotates CAs and serving certificates (lifetimes of a minute or two) under a stream
of pod updates with none refused.

The controller and the server are real processes; the API server is the local control
plane's (it calls the server by url, as it would call a Service).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import ensure_namespace, pod_manifest
from tests.support.clientcerts import write_ca, write_client
from tests.support.server import REPO, Server, free_port, start_server, stop_process
from webhook.registration import CANARY_LABEL, CANARY_NAME, WEBHOOK_NAME

pytestmark = pytest.mark.local_plane

NAMESPACE = "prg-controller"
PODS = "prg-controller-pods"
SECRET = "prg-controller-certificates"
CANARY = "prg-controller-canary"
CONFIGURATION = "prg-controller-test"
# A CA lives 2 minutes (renewed with 40 s left), a serving certificate 1 minute
# (renewed with 20 s left): the stream below sees a CA renewal and several certificates
# (the kind suite runs longer, test_cluster_security.py).
CA_LIFETIME, CERT_LIFETIME, SYNC_SECONDS = "120s", "60s", "2"
STREAM_SECONDS = 130


def _objects(plane: ControlPlane) -> None:
    ensure_namespace(plane, NAMESPACE)
    ensure_namespace(plane, PODS)
    plane.kubectl("delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found")
    plane.kubectl("-n", NAMESPACE, "delete", "secret", SECRET, "--ignore-not-found")
    plane.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": CANARY,
                    "namespace": NAMESPACE,
                    "labels": {CANARY_LABEL: "true"},
                },
            },
            # What the install creates: an empty Secret and a configuration with no
            # entries, which refuses nothing.
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
                "type": "Opaque",
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": CONFIGURATION},
                "webhooks": [],
            },
        ]
    )


def _controller_env(plane: ControlPlane, cert_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRG_")}
    env.update(
        {
            "KUBECONFIG": str(plane.kubeconfig),
            "PRG_NAMESPACE": NAMESPACE,
            "PRG_CERT_DIR": str(cert_dir),
            "PRG_CERT_SECRET": SECRET,
            "PRG_WEBHOOK_CONFIGURATION": CONFIGURATION,
            "PRG_CANARY_CONFIGMAP": CANARY,
            "PRG_WEBHOOK_URL": f"https://127.0.0.1:{port}/validate",
            "PRG_EXEMPT_NAMESPACES": "kube-system",
            "PRG_CA_LIFETIME": CA_LIFETIME,
            "PRG_CERT_LIFETIME": CERT_LIFETIME,
            "PRG_SYNC_SECONDS": SYNC_SECONDS,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _configuration(plane: ControlPlane) -> dict[str, Any]:
    result = plane.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION, "-o", "json")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _published_cas(plane: ControlPlane) -> list[x509.Certificate]:
    """The CAs the pods entry carries ([] while it is not registered)."""
    webhooks = _configuration(plane).get("webhooks") or []
    mine = [entry for entry in webhooks if entry["name"] == WEBHOOK_NAME]
    if not mine:
        return []
    return x509.load_pem_x509_certificates(base64.b64decode(mine[0]["clientConfig"]["caBundle"]))


def _served_certificate(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def controller_run(plane: ControlPlane, tmp_path: Path) -> Iterator[dict[str, Any]]:
    _objects(plane)
    # Where start_server(tmp_path / "server") has the server read its certificates.
    cert_dir = tmp_path / "server" / "certs"
    port = free_port()
    env = _controller_env(plane, cert_dir, port)
    once = subprocess.run(
        [sys.executable, "-m", "webhook", "controller", "--once", "--timeout", "60"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert once.returncode == 0, once.stderr
    assert (cert_dir / "tls.crt").is_file()
    assert (cert_dir / "tls.key").stat().st_mode & 0o077 == 0
    log_path = tmp_path / "controller.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "controller"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    state: dict[str, Any] = {"port": port, "cert_dir": cert_dir, "log": log_path}
    try:
        yield state
    finally:
        stop_process(process, 10)
        server: Server | None = state.get("server")
        if server is not None:
            server.stop(10)
        plane.kubectl(
            "delete", "validatingwebhookconfiguration", CONFIGURATION, "--ignore-not-found"
        )
        print(f"\ncontroller log (last lines):\n{log_path.read_text()[-3000:]}")


def _label(plane: ControlPlane, pod: str, value: str) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(
        "-n", PODS, "label", "pod", pod, f"step={value}", "--overwrite", check=False
    )


def _wait_judged(plane: ControlPlane, server: Server, pod: str) -> None:
    """Until an allowed update passes and a forbidden one is refused by ``server``."""
    _wait(
        lambda: (
            _label(plane, pod, "judged").returncode == 0
            and any(not d["allowed"] for d in _decisions(server, pod, forbid=True, plane=plane))
        ),
        30,
        "the server to judge updates",
    )


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_registers_only_once_served_and_rotates_under_updates(
    plane: ControlPlane, controller_run: dict[str, Any], tmp_path: Path
) -> None:
    port = controller_run["port"]
    pod = "rotating"
    plane.kubectl("-n", PODS, "delete", "pod", pod, "--ignore-not-found", "--wait=false")
    plane.apply(pod_manifest(pod, PODS))

    # No server yet: several syncs later nothing is registered, and updates pass.
    time.sleep(4 * float(SYNC_SECONDS))
    assert not _configuration(plane).get("webhooks"), "an entry with no server answering"
    assert _label(plane, pod, "before").returncode == 0
    log = controller_run["log"].read_text()
    assert "not registering yet" in log

    server = start_server(
        tmp_path / "server", port=port, generate_certs=False,
        env={"PRG_NAMESPACE": NAMESPACE, "PRG_CERT_RELOAD_SECONDS": "0.5"},
    )  # fmt: skip
    controller_run["server"] = server
    _wait(lambda: bool(_published_cas(plane)), 30, "the webhook entry to be registered")
    entry, canary = _configuration(plane)["webhooks"]
    assert (entry["name"], canary["name"]) == (WEBHOOK_NAME, CANARY_NAME)
    assert entry["failurePolicy"] == "Fail"
    assert entry["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system",
        NAMESPACE,
    ]

    # A forbidden update is refused by this server.
    _wait_judged(plane, server, pod)

    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            result = _label(plane, pod, str(sent))
            if result.returncode != 0:
                failures.append(result.stderr.strip()[-300:])
            time.sleep(0.2)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    cas: set[int] = set()
    servings: set[int] = set()
    deadline = time.monotonic() + STREAM_SECONDS
    while time.monotonic() < deadline:
        cas.update(c.serial_number for c in _published_cas(plane))
        served = _served_certificate(port)
        servings.add(served.serial_number)
        # What is served is always signed by a CA the API server is given.
        assert any(_signed(served, ca) for ca in _published_cas(plane))
        time.sleep(2)
    stop.set()
    thread.join(30)
    print(f"\nrotation: {sent} updates sent, {len(failures)} refused; "
          f"{len(cas)} CAs published, {len(servings)} serving certificates served")  # fmt: skip
    assert not failures, failures[:3]
    assert sent > 100
    assert len(cas) >= 2, "the CA was not renewed"
    assert len(servings) >= 3, "the serving certificate was not renewed"
    judged = [d for d in _decisions(server, pod) if d["allowed"]]
    assert len(judged) >= sent // 2, "the server did not judge the stream"


def test_an_api_server_the_webhook_does_not_let_in_gets_no_entry(
    plane: ControlPlane, controller_run: dict[str, Any], tmp_path: Path
) -> None:
    """The webhook asks for a client certificate from a CA that did not sign the API
    server's (clientAuth with the wrong CLIENT_CA, or a managed API server that presents
    none): the controller's own TLS check passes, the API server's calls fail. The
    canary's dry run goes through unjudged, so nothing is registered and updates pass;
    once the server lets the API server in, the entry is registered without a restart."""
    port = controller_run["port"]
    pod = "locked-out"
    plane.kubectl("-n", PODS, "delete", "pod", pod, "--ignore-not-found", "--wait=false")
    plane.apply(pod_manifest(pod, PODS))
    stranger = write_ca(tmp_path / "stranger", "a CA that did not sign the API server's")
    server_env = {"PRG_NAMESPACE": NAMESPACE, "PRG_CERT_RELOAD_SECONDS": "0.5"}
    server = start_server(
        tmp_path / "server", port=port, generate_certs=False,
        env={**server_env, "PRG_CLIENT_CA": str(tmp_path / "stranger" / "ca.crt")},
        client_cert=write_client(tmp_path / "stranger", stranger, "readiness"),
    )  # fmt: skip
    controller_run["server"] = server
    _wait(
        lambda: "the API server did not reach the webhook" in controller_run["log"].read_text(),
        60,
        "the canary to report that the API server did not reach the webhook",
    )
    refused = 0
    for step in range(20):
        refused += _label(plane, pod, f"locked-{step}").returncode != 0
    names = [e["name"] for e in _configuration(plane).get("webhooks") or []]
    print(f"\nlocked out: 20 updates sent, {refused} refused; entries: {names}")
    assert names == [CANARY_NAME], "registered although the API server cannot call it"
    assert refused == 0

    server.stop(10)
    controller_run["server"] = server = start_server(
        tmp_path / "server", port=port, generate_certs=False, env=server_env
    )
    _wait(
        lambda: (
            [e["name"] for e in _configuration(plane).get("webhooks") or []]
            == [WEBHOOK_NAME, CANARY_NAME]
        ),
        60,
        "the entry to be registered once the API server gets through",
    )
    _wait_judged(plane, server, pod)


def _signed(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _decisions(
    server: Server, pod: str, forbid: bool = False, plane: ControlPlane | None = None
) -> list[dict[str, Any]]:
    if forbid and plane is not None:
        # The API server lets a finalizer be added; the seed's rules freeze it.
        finalizer = json.dumps({"metadata": {"finalizers": ["example.com/held"]}})
        plane.kubectl("-n", PODS, "patch", "pod", pod, "-p", finalizer, check=False)
    return [
        line for line in server.log_lines()
        if line.get("event") == "decision" and line.get("name") == pod
    ]  # fmt: skip
