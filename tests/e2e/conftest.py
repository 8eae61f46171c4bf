"""Fixtures of the end-to-end suite.

E2E_TARGET selects the cluster:
- ``local`` (default): etcd + kube-apiserver built from Go modules, started on
  loopback; the webhook runs as ``python -m webhook serve`` on 127.0.0.1 and the
  ValidatingWebhookConfiguration from deploy/ points at it by url.
- ``cluster``: the current kubeconfig context (kind), with the webhook deployed by
  ``make deploy``: the webhook runs as pods behind its Service, next to a real
  kubelet, scheduler and controller-manager.

Most tests run on both. A test that starts or signals the local webhook process is
marked ``local_plane``; its in-cluster equivalent (deleting, scaling, restarting,
draining and freezing the webhook's pods) is marked ``real_cluster``. Each run
deselects the other kind and says so; none is skipped.

Outside CI, a machine without Go skips this suite with the reason printed; with
CI=true it must run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import (
    ControlPlane,
    ControlPlaneUnavailable,
    existing_cluster,
    install_webhook,
    local_control_plane,
)
from tests.support.server import Server, start_server
from webhook.certs import write_certificates

WEBHOOK_NAMESPACE = "pod-replace-guard"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_cluster = os.environ.get("E2E_TARGET", "local") == "cluster"
    other = "local_plane" if on_cluster else "real_cluster"
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
        (deselected if item.get_closest_marker(other) else kept).append(item)
    if deselected:
        where = "a real cluster" if on_cluster else "the local control plane"
        print(f"\non {where}: {len(deselected)} tests for the other environment deselected")
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    target = os.environ.get("E2E_TARGET", "local")
    in_ci = os.environ.get("CI") == "true"
    try:
        if target == "cluster":
            context = existing_cluster()
        else:
            context = local_control_plane(
                tmp_path_factory.mktemp("controlplane"), os.environ.get("K8S_VERSION") or None
            )
        with context as plane:
            yield plane
    except ControlPlaneUnavailable as reason:
        if in_ci:
            raise
        print(f"\nSKIPPING the real-apiserver suite: {reason}")
        pytest.skip(f"real-apiserver suite skipped: {reason}")


def ensure_namespace(plane: ControlPlane, name: str) -> None:
    """A namespace with its default ServiceAccount, which pods need.

    On a real cluster kube-controller-manager creates the ServiceAccount (creating it
    too would race with it); the local control plane does not run it.
    """
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"e2e": "pod-replace-guard"}},
    }
    if not plane.local:
        plane.apply(namespace)
        deadline = time.monotonic() + 60
        while plane.kubectl("-n", name, "get", "sa", "default", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name} after 60 s"
            time.sleep(0.5)
        return
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": name},
    }
    plane.apply([namespace, service_account])


class Webhook:
    """Switches the webhook under test: mode, failure policy, up or down."""

    def __init__(self, plane: ControlPlane, work_dir: Path) -> None:
        self.plane = plane
        self.work_dir = work_dir
        self.server: Server | None = None
        self.mode = "enforce"
        self.failure_policy = "Fail"
        self.name = ""
        self.url = ""
        self.ca_bundle = ""
        self.running = False

    # -- local: a real serve process on loopback ---------------------------------
    def start(self, mode: str = "enforce", env: dict[str, str] | None = None) -> None:
        self.running = True
        if not self.plane.local:
            self._set_cluster_mode(mode)
            self.mode = mode
            return
        run_dir = self.work_dir / f"run-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(parents=True)
        cert_dir = run_dir / "certs"
        issued = write_certificates(cert_dir, "pod-replace-guard", WEBHOOK_NAMESPACE)
        self.ca_bundle = issued.ca_bundle
        self.server = start_server(
            run_dir,
            workers=2,
            threads=4,
            generate_certs=False,
            env={"PRG_MODE": mode, **(env or {})},
        )
        self.url = f"{self.server.url}/validate"
        self.mode = mode
        self.install()

    def install(
        self, timeout_seconds: int | None = None, resources: list[str] | None = None
    ) -> None:
        if self.plane.local:
            config = install_webhook(
                self.plane,
                self.url,
                self.ca_bundle,
                self.failure_policy,
                timeout_seconds,
                resources,
            )
        else:
            op = {
                "op": "replace",
                "path": "/webhooks/0/failurePolicy",
                "value": self.failure_policy,
            }
            patch = json.dumps([op])
            self.plane.kubectl(
                "patch",
                "validatingwebhookconfiguration",
                "pod-replace-guard",
                "--type=json",
                "-p",
                patch,
            )
            config = self.configuration()
        self.name = config["webhooks"][0]["name"]

    def configuration(self) -> dict[str, Any]:
        result = self.plane.kubectl(
            "get", "validatingwebhookconfiguration", "pod-replace-guard", "-o", "json"
        )
        config: dict[str, Any] = json.loads(result.stdout)
        return config

    def stop(self) -> None:
        self.running = False
        if self.plane.local:
            if self.server is not None:
                self.server.stop()
                self.server = None
        else:
            self.plane.kubectl(
                "-n", WEBHOOK_NAMESPACE, "scale", "deployment/pod-replace-guard", "--replicas=0"
            )
            self.plane.kubectl(
                "-n", WEBHOOK_NAMESPACE, "wait", "--for=delete", "pod",
                "-l", "app.kubernetes.io/name=pod-replace-guard", "--timeout=90s",
            )  # fmt: skip

    def restart(self, mode: str) -> None:
        if self.plane.local:
            self.stop()
        self.start(mode)
        wait_for_enforcement(self.plane, expect_mode=mode)

    def set_failure_policy(self, policy: str) -> None:
        self.failure_policy = policy
        self.install()
        time.sleep(2)  # the API server picks configuration changes up through a watch

    def _set_cluster_mode(self, mode: str) -> None:
        plane = self.plane
        plane.kubectl(
            "-n",
            WEBHOOK_NAMESPACE,
            "set",
            "env",
            "deployment/pod-replace-guard",
            f"PRG_MODE={mode}",
        )
        plane.kubectl(
            "-n", WEBHOOK_NAMESPACE, "scale", "deployment/pod-replace-guard", "--replicas=2"
        )
        wait_for_rollout(plane)


def webhook_pods(plane: ControlPlane) -> list[dict[str, Any]]:
    """The webhook's pods on a real cluster, terminating ones included."""
    result = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=pod-replace-guard",
        "-o", "json",
    )  # fmt: skip
    pods: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return pods


def webhook_decisions(plane: ControlPlane) -> list[dict[str, Any]]:
    """The decision log lines of the webhook's running pods (a real cluster)."""
    decisions = []
    for pod in webhook_pods(plane):
        logs = plane.kubectl("-n", WEBHOOK_NAMESPACE, "logs", pod["metadata"]["name"], check=False)
        for line in logs.stdout.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "decision":
                decisions.append(entry)
    return decisions


def wait_for_rollout(plane: ControlPlane) -> None:
    """The webhook's Deployment rolled out and its old pods gone.

    `rollout status` returns while replaced pods are still terminating, and those keep
    answering on the API server's pooled connections until they exit."""
    plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "rollout", "status", "deployment/pod-replace-guard",
        "--timeout=180s", timeout=200,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while any(pod["metadata"].get("deletionTimestamp") for pod in webhook_pods(plane)):
        assert time.monotonic() < deadline, "webhook pods still terminating after 120 s"
        time.sleep(1)


PROBE_NAMESPACE = "e2e-probe"


def wait_for_enforcement(
    plane: ControlPlane, expect_mode: str = "enforce", timeout: float = 60
) -> None:
    """Until a frozen change is judged by the webhook (denied, or warned in warn mode)."""
    ensure_namespace(plane, PROBE_NAMESPACE)
    if plane.kubectl("-n", PROBE_NAMESPACE, "get", "pod", "probe", check=False).returncode != 0:
        plane.apply(pod_manifest("probe", PROBE_NAMESPACE))
    patch = '{"metadata":{"finalizers":["e2e.pod-replace-guard.io/probe"]}}'
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = plane.kubectl(
            "-n", PROBE_NAMESPACE, "patch", "pod", "probe", "--type=merge", "-p", patch,
            "--dry-run=server", check=False,
        )  # fmt: skip
        last = result.stderr
        if expect_mode == "enforce" and "denied the request" in result.stderr:
            return
        if (
            expect_mode == "warn"
            and result.returncode == 0
            and "pod-replace-guard:" in result.stderr
        ):
            return
        if expect_mode == "audit" and result.returncode == 0 and "Warning" not in result.stderr:
            return
        time.sleep(0.5)
    raise TimeoutError(f"webhook enforcement ({expect_mode}) not observed in {timeout}s: {last}")


@pytest.fixture(scope="session")
def webhook(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    hook = Webhook(plane, tmp_path_factory.mktemp("webhook"))
    if plane.local:
        ensure_namespace(plane, WEBHOOK_NAMESPACE)
        ensure_namespace(plane, "kube-system")
    hook.start("enforce")
    if not plane.local:
        hook.install()
    wait_for_enforcement(plane)
    try:
        yield hook
    finally:
        if plane.local:
            hook.stop()
        else:
            with contextlib.suppress(AssertionError):
                hook.failure_policy = "Fail"
                hook.start("enforce")
                hook.install()


@pytest.fixture
def namespace(plane: ControlPlane, webhook: Webhook) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    ensure_namespace(plane, name)
    yield name
    if not plane.local:
        # Finalizers left by a failed test would keep the namespace terminating.
        plane.kubectl(
            "-n",
            name,
            "patch",
            "pods",
            "--all",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pod_manifest(
    name: str,
    namespace: str,
    *,
    labels: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels or {"app": "e2e"},
            **(metadata or {}),
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": PAUSE_IMAGE,
                    "env": [{"name": "GREETING", "value": "hello"}],
                }
            ],
            "terminationGracePeriodSeconds": 0,
            **(spec or {}),
        },
    }
    return body
