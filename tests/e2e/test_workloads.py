"""The cluster's own machinery beside the webhook, on a real cluster.

Real kube-controller-manager (with --use-service-account-credentials, as kubeadm runs
it), scheduler and kubelets. Each scenario runs with the webhook's configuration in
place and again with it removed, and must reach the same end state within the same
time bound both times; afterwards no decision in the webhook's logs denied a built-in
controller or a node. This is what the exempt identities are for: the garbage
collector, the job controller and the workload controllers change pods' ownerReferences
and finalizers, which the replace rules freeze for users.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane
from tests.e2e.conftest import (
    WEBHOOK_NAMESPACE,
    Webhook,
    ensure_namespace,
    wait_for_enforcement,
    webhook_decisions,
)

pytestmark = pytest.mark.real_cluster

PAUSE = "registry.k8s.io/pause:3.10"
PAUSE_NEXT = "registry.k8s.io/pause:3.10.1"
BUSYBOX = "prg.local/busybox:1"  # baked into the kind node image (hack/kind)
CONTROLLERS = (
    "system:serviceaccount:kube-system:",
    "system:kube-controller-manager",
    "system:node:",
)

Scenario = Callable[[ControlPlane, str], None]


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(1)


def get(plane: ControlPlane, namespace: str, *what: str) -> Any:
    return json.loads(plane.kubectl("-n", namespace, "get", *what, "-o", "json").stdout)


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(plane, namespace, "pods", "-l", selector)["items"]
    return items


def live(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def apply(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> None:
    manifest.setdefault("metadata", {})["namespace"] = namespace
    plane.apply(manifest)


def pod_template(labels: dict[str, str], image: str = PAUSE, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}],
            **spec,
        },
    }


def deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": pod_template(labels)},
    }  # fmt: skip


def rollout(plane: ControlPlane, namespace: str, what: str) -> None:
    plane.kubectl("-n", namespace, "rollout", "status", what, "--timeout=120s", timeout=130)


# --- the scenarios --------------------------------------------------------------------------


def deployment_lifecycle(plane: ControlPlane, ns: str) -> None:
    apply(plane, ns, deployment("web"))
    rollout(plane, ns, "deployment/web")
    plane.kubectl("-n", ns, "scale", "deployment/web", "--replicas=3")
    rollout(plane, ns, "deployment/web")
    plane.kubectl("-n", ns, "scale", "deployment/web", "--replicas=1")
    rollout(plane, ns, "deployment/web")
    plane.kubectl("-n", ns, "set", "image", "deployment/web", f"main={PAUSE_NEXT}")
    rollout(plane, ns, "deployment/web")
    plane.kubectl("-n", ns, "rollout", "restart", "deployment/web")
    rollout(plane, ns, "deployment/web")
    plane.kubectl("-n", ns, "rollout", "undo", "deployment/web")
    rollout(plane, ns, "deployment/web")
    wait_until("one pod of the rolled-back Deployment", lambda: [
        p["spec"]["containers"][0]["image"] for p in live(pods(plane, ns, "app=web"))
    ] == [PAUSE_NEXT])  # fmt: skip


def replicaset_orphan_adopt_release(plane: ControlPlane, ns: str) -> None:
    labels = {"app": "rs"}
    replica_set = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "first"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": pod_template(labels)},
    }  # fmt: skip
    apply(plane, ns, replica_set)
    wait_until("two pods", lambda: len(live(pods(plane, ns, "app=rs"))) == 2)
    names = sorted(p["metadata"]["name"] for p in live(pods(plane, ns, "app=rs")))
    plane.kubectl("-n", ns, "delete", "replicaset", "first", "--cascade=orphan", timeout=90)
    wait_until("the garbage collector removes the ownerReferences", lambda: all(
        not p["metadata"].get("ownerReferences") for p in live(pods(plane, ns, "app=rs"))
    ))  # fmt: skip
    replica_set["metadata"] = {"name": "second"}
    apply(plane, ns, replica_set)
    second_uid = get(plane, ns, "replicaset", "second")["metadata"]["uid"]

    def owned_by_second() -> bool:
        current = live(pods(plane, ns, "app=rs"))
        return sorted(p["metadata"]["name"] for p in current) == names and all(
            [o["uid"] for o in p["metadata"].get("ownerReferences", [])] == [second_uid]
            for p in current
        )

    wait_until("the new ReplicaSet adopts the orphans", owned_by_second)
    # Relabelled out of the selector: released (ownerReference removed) and replaced.
    plane.kubectl("-n", ns, "label", "pod", names[0], "app=out", "--overwrite")
    wait_until("released and replaced", lambda: (
        not get(plane, ns, "pod", names[0])["metadata"].get("ownerReferences")
        and len(live(pods(plane, ns, "app=rs"))) == 2
    ))  # fmt: skip
    # And back: adopted again, one pod too many deleted.
    plane.kubectl("-n", ns, "label", "pod", names[0], "app=rs", "--overwrite")
    wait_until("back to two pods", lambda: len(live(pods(plane, ns, "app=rs"))) == 2)


def jobs(plane: ControlPlane, ns: str) -> None:
    def job(name: str, command: str, **spec: Any) -> dict[str, Any]:
        template = pod_template({"job": name}, image=BUSYBOX, restartPolicy="Never")
        template["spec"]["containers"][0]["command"] = ["sh", "-c", command]
        return {
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": template, **spec},
        }  # fmt: skip

    apply(plane, ns, job("ok", "true"))
    apply(plane, ns, job("indexed", "test -n \"$JOB_COMPLETION_INDEX\"",
                         completions=2, parallelism=2, completionMode="Indexed"))  # fmt: skip
    apply(plane, ns, job("fails", "exit 42", backoffLimit=3, podFailurePolicy={
        "rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}],
    }))  # fmt: skip

    def condition(name: str, kind: str) -> bool:
        conditions = get(plane, ns, "job", name).get("status", {}).get("conditions") or []
        return any(c["type"] == kind and c["status"] == "True" for c in conditions)

    wait_until("job ok Complete", lambda: condition("ok", "Complete"))
    wait_until("indexed job Complete", lambda: condition("indexed", "Complete"))
    wait_until("job fails Failed by its podFailurePolicy", lambda: condition("fails", "Failed"))
    # The job controller removed its tracking finalizer from every pod it finished.
    tracking = "batch.kubernetes.io/job-tracking"
    wait_until("job-tracking finalizers removed", lambda: not [
        p for p in get(plane, ns, "pods")["items"]
        if tracking in (p["metadata"].get("finalizers") or [])
    ])  # fmt: skip


def cronjob(plane: ControlPlane, ns: str) -> None:
    template = pod_template({"cron": "tick"}, image=BUSYBOX, restartPolicy="Never")
    template["spec"]["containers"][0]["command"] = ["true"]
    apply(plane, ns, {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
    })  # fmt: skip
    wait_until("the CronJob fired and its Job completed", lambda: any(
        (j.get("status") or {}).get("succeeded") for j in get(plane, ns, "jobs")["items"]
    ), timeout=150)  # fmt: skip


def statefulset_and_daemonset(plane: ControlPlane, ns: str) -> None:
    labels = {"app": "db"}
    apply(plane, ns, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": labels},
                 "template": pod_template(labels)},
    })  # fmt: skip
    rollout(plane, ns, "statefulset/db")
    plane.kubectl("-n", ns, "set", "image", "statefulset/db", f"main={PAUSE_NEXT}")
    rollout(plane, ns, "statefulset/db")
    plane.kubectl("-n", ns, "scale", "statefulset/db", "--replicas=1")
    wait_until("scaled down to db-0", lambda: [
        p["metadata"]["name"] for p in live(pods(plane, ns, "app=db"))
    ] == ["db-0"])  # fmt: skip
    labels = {"app": "agent"}
    apply(plane, ns, {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": labels}, "template": pod_template(labels)},
    })  # fmt: skip
    rollout(plane, ns, "daemonset/agent")
    plane.kubectl("-n", ns, "set", "image", "daemonset/agent", f"main={PAUSE_NEXT}")
    rollout(plane, ns, "daemonset/agent")


def no_pods(plane: ControlPlane, ns: str, selector: str) -> Callable[[], bool]:
    return lambda: not pods(plane, ns, selector)


def cascading_deletes(plane: ControlPlane, ns: str) -> None:
    for name, propagation in (("fg", "foreground"), ("bg", "background")):
        apply(plane, ns, deployment(name))
        rollout(plane, ns, f"deployment/{name}")
        plane.kubectl("-n", ns, "delete", "deployment", name, f"--cascade={propagation}",
                      timeout=120)  # fmt: skip
        wait_until(f"{propagation} deletion leaves no pod", no_pods(plane, ns, f"app={name}"))


def drain_with_a_budget(plane: ControlPlane, ns: str) -> None:
    labels = {"app": "guarded"}
    apply(plane, ns, deployment("guarded"))
    apply(plane, ns, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
    })  # fmt: skip
    rollout(plane, ns, "deployment/guarded")
    node = live(pods(plane, ns, "app=guarded"))[0]["spec"]["nodeName"]
    try:
        plane.kubectl(
            "drain", node, "--pod-selector=app=guarded", "--ignore-daemonsets",
            "--delete-emptydir-data", "--timeout=120s", timeout=130,
        )  # fmt: skip
        rollout(plane, ns, "deployment/guarded")
        assert not [p for p in live(pods(plane, ns, "app=guarded"))
                    if p["spec"]["nodeName"] == node]  # fmt: skip
    finally:
        plane.kubectl("uncordon", node)


def bare_pods(plane: ControlPlane, ns: str) -> None:
    # A user's finalizer: the pod waits for it after deletion, then goes.
    apply(plane, ns, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kept", "finalizers": ["e2e.pod-replace-guard.io/keep"]},
        **{"spec": pod_template({})["spec"]},
    })  # fmt: skip
    plane.kubectl("-n", ns, "delete", "pod", "kept", "--wait=false")
    wait_until(
        "deletion pending on the finalizer",
        lambda: bool(get(plane, ns, "pod", "kept")["metadata"].get("deletionTimestamp")),
    )
    plane.kubectl("-n", ns, "patch", "pod", "kept", "--type=json",
                  "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')  # fmt: skip
    wait_until("the pod is gone", lambda: plane.kubectl(
        "-n", ns, "get", "pod", "kept", check=False).returncode != 0)  # fmt: skip
    # kubectl set image on a bare pod: the kubelet restarts the container with it;
    # kubectl debug adds an ephemeral container; pods/resize changes resources.
    spec = pod_template({})["spec"]
    spec["containers"][0]["resources"] = {
        "requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"},
    }  # fmt: skip
    apply(plane, ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
                      "spec": spec})  # fmt: skip
    plane.kubectl("-n", ns, "wait", "pod/bare", "--for=condition=Ready", "--timeout=120s",
                  timeout=130)  # fmt: skip
    plane.kubectl("-n", ns, "set", "image", "pod/bare", f"main={PAUSE_NEXT}")

    def restarted_with_new_image() -> bool:
        status = get(plane, ns, "pod", "bare")["status"].get("containerStatuses") or [{}]
        return bool(status[0].get("restartCount", 0) >= 1 and status[0].get("ready", False))

    wait_until("the kubelet restarted the container", restarted_with_new_image)
    plane.kubectl("-n", ns, "debug", "pod/bare", f"--image={BUSYBOX}", "-c", "debugger",
                  "--", "sleep", "30")  # fmt: skip
    wait_until("the ephemeral container runs", lambda: any(
        s.get("name") == "debugger"
        for s in get(plane, ns, "pod", "bare")["status"].get("ephemeralContainerStatuses") or []
    ))  # fmt: skip
    resize = {"spec": {"containers": [{"name": "main", "resources": {
        "requests": {"cpu": "20m"}, "limits": {"cpu": "100m"}}}]}}  # fmt: skip
    plane.kubectl("-n", ns, "patch", "pod", "bare", "--subresource=resize",
                  "-p", json.dumps(resize))  # fmt: skip
    requests = get(plane, ns, "pod", "bare")["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "20m"


SCENARIOS: dict[str, Scenario] = {
    "deployment": deployment_lifecycle,
    "replicaset": replicaset_orphan_adopt_release,
    "jobs": jobs,
    "cronjob": cronjob,
    "statefulset-daemonset": statefulset_and_daemonset,
    "cascading-deletes": cascading_deletes,
    "drain": drain_with_a_budget,
    "bare-pods": bare_pods,
}
TIME_BOUND = {"cronjob": 180.0}


@pytest.fixture
def without_webhook(plane: ControlPlane, webhook: Webhook) -> Iterator[Callable[[], None]]:
    """Removes the ValidatingWebhookConfiguration on request; puts it back afterwards."""
    saved = webhook.configuration()
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    removed = []

    def remove() -> None:
        plane.kubectl("delete", "validatingwebhookconfiguration", "pod-replace-guard")
        removed.append(True)
        time.sleep(2)  # the API server's informer drops it

    yield remove
    if removed:
        plane.apply(saved)
        wait_for_enforcement(plane)


def controller_denials(plane: ControlPlane) -> list[dict[str, Any]]:
    return [
        entry
        for entry in webhook_decisions(plane)
        if entry.get("allowed") is False and str(entry.get("user", "")).startswith(CONTROLLERS)
    ]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_workload_reaches_the_same_end_with_and_without_the_webhook(
    plane: ControlPlane, webhook: Webhook, without_webhook: Callable[[], None], name: str
) -> None:
    bound = TIME_BOUND.get(name, 150.0)
    timings = {}
    for with_webhook in (True, False):
        if not with_webhook:
            without_webhook()
        namespace = f"wl-{name}-{uuid.uuid4().hex[:5]}"
        ensure_namespace(plane, namespace)
        started = time.monotonic()
        SCENARIOS[name](plane, namespace)
        timings["with" if with_webhook else "without"] = time.monotonic() - started
        plane.kubectl("delete", "namespace", namespace, "--wait=false")
    print(f"\nworkload {name}: with the webhook {timings['with']:.1f} s,"
          f" without {timings['without']:.1f} s")  # fmt: skip
    assert timings["with"] < bound, timings
    assert timings["without"] < bound, timings
    assert controller_denials(plane) == []


QUEUE_CONTROLLER = "system:serviceaccount:queue-system:queue-controller"


def _gated_pod(plane: ControlPlane, namespace: str, name: str) -> None:
    spec = pod_template({})["spec"]
    spec["schedulingGates"] = [{"name": "example.com/queue"}]
    apply(plane, namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                             "spec": spec})  # fmt: skip


def _ungate_as_queue_controller(plane: ControlPlane, namespace: str, name: str) -> Any:
    return plane.kubectl(
        "-n", namespace, "patch", "pod", name, "--type=json",
        "-p", '[{"op":"remove","path":"/spec/schedulingGates"}]',
        f"--as={QUEUE_CONTROLLER}", "--as-group=system:serviceaccounts",
        "--as-group=system:authenticated", check=False,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_exempting_a_third_party_queueing_controller(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """deploy/README.md's worked example: a queueing controller that removes scheduling
    gates is refused until its service account is exempt in both places (the
    matchConditions and PRG_EXEMPT_USERS); then its updates pass, a user's still not."""
    plane.apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "queue", "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["get", "patch", "update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "queue", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "queue"},
         "subjects": [{"kind": "ServiceAccount", "name": "queue-controller",
                       "namespace": "queue-system"}]},
    ])  # fmt: skip
    _gated_pod(plane, namespace, "before")
    refused = _ungate_as_queue_controller(plane, namespace, "before")
    assert refused.returncode != 0
    assert "spec.schedulingGates" in refused.stderr, refused.stderr

    config = webhook.configuration()
    condition = config["webhooks"][0]["matchConditions"][0]
    original_expression = condition["expression"]
    users = original_expression.split("'")[1::2]
    env = plane.kubectl(
        "-n", WEBHOOK_NAMESPACE, "get", "deployment/pod-replace-guard", "-o",
        "jsonpath={.spec.template.spec.containers[0].env}",
    ).stdout  # fmt: skip
    assert "PRG_EXEMPT_USERS" not in env
    exempt = ",".join([*users, QUEUE_CONTROLLER])
    first = "'system:kube-controller-manager'"
    widened = original_expression.replace(first, f"{first}, '{QUEUE_CONTROLLER}'")
    patch = [
        {"op": "replace", "path": "/webhooks/0/matchConditions/0/expression", "value": widened}
    ]
    try:
        plane.kubectl("patch", "validatingwebhookconfiguration", "pod-replace-guard",
                      "--type=json", "-p", json.dumps(patch))  # fmt: skip
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "set", "env", "deployment/pod-replace-guard",
                      f"PRG_EXEMPT_USERS={exempt}")  # fmt: skip
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "rollout", "status",
                      "deployment/pod-replace-guard", "--timeout=180s", timeout=200)  # fmt: skip
        time.sleep(2)  # the API server's informer sees the new matchConditions
        _gated_pod(plane, namespace, "after")
        allowed = _ungate_as_queue_controller(plane, namespace, "after")
        assert allowed.returncode == 0, allowed.stderr
        _gated_pod(plane, namespace, "by-user")
        by_user = plane.kubectl(
            "-n", namespace, "patch", "pod", "by-user", "--type=json",
            "-p", '[{"op":"remove","path":"/spec/schedulingGates"}]', check=False,
        )  # fmt: skip
        assert by_user.returncode != 0, "a user may still not remove the gate"
    finally:
        restore = [{"op": "replace", "path": "/webhooks/0/matchConditions/0/expression",
                    "value": original_expression}]  # fmt: skip
        plane.kubectl("patch", "validatingwebhookconfiguration", "pod-replace-guard",
                      "--type=json", "-p", json.dumps(restore))  # fmt: skip
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "set", "env", "deployment/pod-replace-guard",
                      "PRG_EXEMPT_USERS-")  # fmt: skip
        plane.kubectl("-n", WEBHOOK_NAMESPACE, "rollout", "status",
                      "deployment/pod-replace-guard", "--timeout=180s", timeout=200)  # fmt: skip
        wait_for_enforcement(plane)
