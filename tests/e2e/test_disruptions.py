"""The webhook's pods disrupted on a real cluster, as operators and the cluster do it.

The in-cluster equivalents of tests/e2e/test_connections.py, which start and signal a
local webhook process: here the webhook runs as the Deployment of deploy/ behind its
Service, and the disruptions are a deleted pod, a scale to zero, a rolling restart, a
drain of a webhook pod's node, processes frozen in place and a short keep-alive. While
each disruption happens, a client keeps updating a pod (labels, allowed) from several
connections, and every failed update is counted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import (
    WEBHOOK_NAMESPACE,
    Webhook,
    wait_for_enforcement,
    wait_for_rollout,
    webhook_decisions,
    webhook_pods,
)
from tests.e2e.test_enforcement import FINALIZER, create_pod

pytestmark = pytest.mark.real_cluster

DEPLOYMENT = "deployment/pod-replace-guard"
SELECTOR = "app.kubernetes.io/name=pod-replace-guard"


@dataclass
class UpdateLoad:
    """Threads that label one pod in a loop, each with its own API client (connection)."""

    plane: ControlPlane
    namespace: str
    pod: str
    threads: int = 3
    interval: float = 0.2
    sent: int = 0
    started: float = 0.0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> UpdateLoad:
        self.started = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self, index: int) -> None:
        core = self.plane.core()
        step = 0
        while not self._stop.is_set():
            step += 1
            body = {"metadata": {"labels": {f"load-{index}": str(step)}}}
            try:
                core.patch_namespaced_pod(self.pod, self.namespace, body, _request_timeout=30)
                error = ""
            except Exception as failure:  # an ApiException or a connection error
                error = f"{type(failure).__name__}: {str(failure)[:300]}"
            with self._lock:
                self.sent += 1
                if error:
                    self.failures.append(error)
            self._stop.wait(self.interval)

    def report(self, what: str) -> str:
        line = f"{what}: {self.sent} updates sent, {len(self.failures)} failed"
        print(f"\n{line}")
        return line


def decisions_for(plane: ControlPlane, namespace: str, name: str) -> int:
    """How many decision log lines the webhook's running pods wrote about one pod."""
    return sum(
        1
        for entry in webhook_decisions(plane)
        if entry.get("namespace") == namespace and entry.get("name") == name
    )


@pytest.fixture
def target(plane: ControlPlane, webhook: Webhook, namespace: str) -> Iterator[str]:
    """A pod to update, the webhook settled on two ready replicas before and after."""
    wait_for_rollout(plane)
    create_pod(plane, namespace, "target")
    yield "target"
    plane.kubectl("-n", WEBHOOK_NAMESPACE, "scale", DEPLOYMENT, "--replicas=2")
    wait_for_rollout(plane)
    wait_for_enforcement(plane)


def test_the_api_server_reaches_the_pods_through_the_service(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    """A decision in a webhook pod's log for an update sent through the API server."""
    config = json.loads(
        plane.kubectl(
            "get", "validatingwebhookconfiguration", "pod-replace-guard", "-o", "json"
        ).stdout
    )
    service = config["webhooks"][0]["clientConfig"]["service"]
    assert (service["namespace"], service["name"]) == (WEBHOOK_NAMESPACE, "pod-replace-guard")
    before = decisions_for(plane, namespace, target)
    plane.kubectl("-n", namespace, "label", "pod", target, "through=service")
    deadline = time.monotonic() + 10
    while decisions_for(plane, namespace, target) <= before:
        assert time.monotonic() < deadline, "no decision logged by a webhook pod"
        time.sleep(0.5)
    ready = [
        pod
        for pod in webhook_pods(plane)
        if not pod["metadata"].get("deletionTimestamp")
        and any(c.get("ready") for c in pod["status"].get("containerStatuses", []))
    ]
    assert len(ready) == 2, "two webhook pods Running and Ready"


def test_deleting_a_webhook_pod_loses_no_update(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    victim = webhook_pods(plane)[0]["metadata"]["name"]
    with UpdateLoad(plane, namespace, target) as load:
        time.sleep(2)
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "delete", "pod", victim, timeout=90)
        wait_for_rollout(plane)
        time.sleep(3)
    load.report(f"graceful deletion of {victim}")
    assert load.sent > 20
    assert load.failures == [], load.failures[:5]


def test_rolling_restart_loses_no_update(plane: ControlPlane, target: str, namespace: str) -> None:
    with UpdateLoad(plane, namespace, target) as load:
        time.sleep(2)
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "rollout", "restart", DEPLOYMENT)
        wait_for_rollout(plane)
        time.sleep(3)
    load.report("kubectl rollout restart")
    assert load.sent > 20
    assert load.failures == [], load.failures[:5]


def test_five_rolling_restarts_and_a_scale_down_and_up_lose_no_update(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    """At least 10 label updates a second over several connections throughout."""
    with UpdateLoad(plane, namespace, target, threads=3, interval=0.1) as load:
        time.sleep(2)
        for _ in range(5):
            plane.kubectl("-n", WEBHOOK_NAMESPACE, "rollout", "restart", DEPLOYMENT)
            wait_for_rollout(plane)
        for replicas in (1, 2):
            plane.kubectl("-n", WEBHOOK_NAMESPACE, "scale", DEPLOYMENT, f"--replicas={replicas}")
            wait_for_rollout(plane)
        elapsed = time.monotonic() - load.started
        time.sleep(2)
    load.report(f"5 x rollout restart, scale 2->1->2 ({load.sent / elapsed:.1f} updates/s)")
    assert load.sent / elapsed >= 10, "the load kept up at least 10 updates a second"
    assert load.failures == [], load.failures[:5]


def test_deleting_a_webhook_pod_without_grace_fails_only_what_it_held(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    """--grace-period=0: the pod is killed at once, so requests in flight on it may
    fail (the API server does not retry a POST it has started); counted, and bounded by
    the number of clients, each having at most one update in flight."""
    victim = webhook_pods(plane)[0]["metadata"]["name"]
    with UpdateLoad(plane, namespace, target, threads=3, interval=0.1) as load:
        time.sleep(2)
        plane.kubectl(
            "-n", WEBHOOK_NAMESPACE, "delete", "pod", victim, "--grace-period=0", "--force",
            timeout=90,
        )  # fmt: skip
        wait_for_rollout(plane)
        time.sleep(3)
    load.report(f"deletion of {victim} with --grace-period=0")
    assert load.sent > 50
    assert len(load.failures) <= load.threads, load.failures


def test_drain_of_a_webhook_pods_node(plane: ControlPlane, target: str, namespace: str) -> None:
    """Evictions respect the PodDisruptionBudget; the webhook keeps judging throughout.

    Only the webhook's pods are evicted (--pod-selector), so the bare pods other tests
    leave on the node do not stop the drain."""
    nodes = json.loads(plane.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) >= 2, "the kind cluster has a control plane and a worker"
    node = webhook_pods(plane)[0]["spec"]["nodeName"]
    try:
        with UpdateLoad(plane, namespace, target) as load:
            time.sleep(2)
            plane.kubectl(
                "drain", node, "--pod-selector", SELECTOR, "--ignore-daemonsets",
                "--delete-emptydir-data", "--timeout=180s", timeout=200,
            )  # fmt: skip
            wait_for_rollout(plane)
            on_node = [p for p in webhook_pods(plane) if p["spec"].get("nodeName") == node]
            time.sleep(3)
        load.report(f"kubectl drain {node}")
    finally:
        plane.kubectl("uncordon", node)
    assert on_node == [], "no webhook pod left on the drained node"
    assert load.sent > 20
    assert load.failures == [], load.failures[:5]


def test_scaled_to_zero_refuses_then_recovers(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    plane.kubectl("-n", WEBHOOK_NAMESPACE, "scale", DEPLOYMENT, "--replicas=0")
    plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "wait", "--for=delete", "pod", "-l", SELECTOR,
        "--timeout=90s", timeout=100,
    )  # fmt: skip
    result = plane.kubectl("-n", namespace, "label", "pod", target, "down=yes", check=False)
    assert result.returncode != 0
    assert "failed calling webhook" in result.stderr, result.stderr
    plane.kubectl("-n", WEBHOOK_NAMESPACE, "scale", DEPLOYMENT, "--replicas=2")
    wait_for_rollout(plane)
    wait_for_enforcement(plane)
    plane.kubectl("-n", namespace, "label", "pod", target, "down=no")


def _node_containers(plane: ControlPlane) -> list[str]:
    """kind's nodes are Docker containers named like the nodes."""
    assert shutil.which("docker"), "freezing the webhook's processes needs kind (docker)"
    names = plane.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout
    return names.split()


def _signal_webhook_processes(plane: ControlPlane, signal: str) -> None:
    # From the node, the pods' processes are visible: stop or continue every process of
    # the webhook (gunicorn's arbiter and its workers), as a hung node would.
    for node in _node_containers(plane):
        subprocess.run(
            ["docker", "exec", node, "pkill", f"-{signal}", "-f", "pod-replace-guard serve"],
            capture_output=True,
            timeout=30,
            check=False,
        )


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_frozen_webhook_pods_are_bounded_by_timeout_seconds(
    plane: ControlPlane, webhook: Webhook, target: str, namespace: str, policy: str
) -> None:
    config = webhook.configuration()
    timeout_seconds = config["webhooks"][0]["timeoutSeconds"]
    webhook.failure_policy = policy
    webhook.install()
    time.sleep(2)
    _signal_webhook_processes(plane, "STOP")
    try:
        started = time.monotonic()
        result = plane.kubectl(
            "-n", namespace, "label", "pod", target, f"frozen={policy.lower()}", check=False
        )
        elapsed = time.monotonic() - started
    finally:
        _signal_webhook_processes(plane, "CONT")
        webhook.failure_policy = "Fail"
        webhook.install()
    print(f"\nfrozen webhook pods, failurePolicy {policy}: answered after {elapsed:.2f}s")
    assert timeout_seconds - 0.5 <= elapsed < timeout_seconds + 5
    if policy == "Fail":
        assert result.returncode != 0
        assert "failed calling webhook" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr
    wait_for_enforcement(plane)


def test_short_keepalive_idle_connections_are_not_reused(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    """PRG_KEEPALIVE=3: updates 0.5 s apart reuse pooled connections, 6 s apart meet
    connections the webhook pods closed; the API server dials anew, nothing fails and
    every update is judged."""
    env = "PRG_KEEPALIVE=3"
    plane.kubectl("-n", WEBHOOK_NAMESPACE, "set", "env", DEPLOYMENT, env)
    try:
        wait_for_rollout(plane)
        wait_for_enforcement(plane)
        before = decisions_for(plane, namespace, target)
        failures = []
        gaps = [0.5, 6, 0.5, 6, 0.5, 6]
        for index, gap in enumerate(gaps):
            time.sleep(gap)
            result = plane.kubectl(
                "-n", namespace, "label", "pod", target, "--overwrite", f"idle={index}",
                check=False,
            )  # fmt: skip
            if result.returncode != 0:
                failures.append(result.stderr)
        judged = decisions_for(plane, namespace, target) - before
    finally:
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "set", "env", DEPLOYMENT, "PRG_KEEPALIVE-")
        wait_for_rollout(plane)
    print(f"\nkeep-alive 3 s in the pods: {len(gaps)} updates, {len(failures)} failed")
    assert failures == []
    assert judged == len(gaps), f"{judged} of {len(gaps)} updates judged"


def test_finalizer_still_refused_after_the_disruptions(
    plane: ControlPlane, target: str, namespace: str
) -> None:
    patch = '{"metadata":{"finalizers":["' + FINALIZER + '"]}}'
    result = plane.kubectl(
        "-n", namespace, "patch", "pod", target, "--type=merge", "-p", patch, check=False
    )
    assert result.returncode != 0
    assert "metadata.finalizers" in result.stderr, result.stderr
