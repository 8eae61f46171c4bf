"""AdmissionReviews of chosen sizes, shaped like what a real API server sends.

A pod made by a Deployment carries managedFields, ownerReferences, a status with
conditions and container statuses, and containers with env, probes, resources and
mounts; that is what makes a real review ~20 KB, not the spec alone. The change judged
in every review is the one the webhook exists to let through quickly: a label edit
plus an image change in the last container (an in-place rollout), which is allowed and
makes the diff walk both metadata and spec.containers.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support.reviews import make_review

NAMESPACE = "team-a"


def _filler(seed: str, length: int) -> str:
    """Deterministic, incompressible-looking text (no escapes) of ``length`` chars."""
    out: list[str] = []
    counter = 0
    while sum(len(part) for part in out) < length:
        out.append(hashlib.sha256(f"{seed}/{counter}".encode()).hexdigest())
        counter += 1
    return "".join(out)[:length]


def _container(index: int) -> dict[str, Any]:
    name = f"app-{index}"
    return {
        "name": name,
        "image": f"registry.example.com/team-a/{name}:1.4.{index}",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config=/etc/app/config.yaml", f"--port={8080 + index}", "--log-format=json"],
        "ports": [
            {"name": "http", "containerPort": 8080 + index, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9090 + index, "protocol": "TCP"},
        ],
        "env": [
            {"name": f"SETTING_{n}", "value": f"value-{index}-{n}-{_filler(name + str(n), 16)}"}
            for n in range(8)
        ]
        + [
            {
                "name": "POD_NAME",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
            },
            {
                "name": "POD_IP",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}},
            },
        ],
        "resources": {
            "limits": {"cpu": "1", "memory": "512Mi"},
            "requests": {"cpu": "100m", "memory": "128Mi"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            {
                "name": "kube-api-access-x7k2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": 8080 + index, "scheme": "HTTP"},
            "initialDelaySeconds": 10,
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": 8080 + index, "scheme": "HTTP"},
            "timeoutSeconds": 1,
            "periodSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _container_status(index: int) -> dict[str, Any]:
    name = f"app-{index}"
    return {
        "name": name,
        "state": {"running": {"startedAt": "2025-05-01T10:00:05Z"}},
        "lastState": {},
        "ready": True,
        "restartCount": 0,
        "image": f"registry.example.com/team-a/{name}:1.4.{index}",
        "imageID": "registry.example.com/team-a/" + name + "@sha256:" + _filler(name, 64),
        "containerID": "containerd://" + _filler(name + "-id", 64),
        "started": True,
    }


def _managed_fields(containers: int) -> list[dict[str, Any]]:
    spec_fields: dict[str, Any] = {
        f'k:{{"name":"app-{i}"}}': {
            ".": {},
            "f:args": {},
            "f:env": {},
            "f:image": {},
            "f:imagePullPolicy": {},
            "f:livenessProbe": {},
            "f:name": {},
            "f:ports": {},
            "f:readinessProbe": {},
            "f:resources": {},
            "f:securityContext": {},
            "f:volumeMounts": {},
        }
        for i in range(containers)
    }
    return [
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2025-05-01T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}},
                "f:spec": {"f:containers": spec_fields, "f:volumes": {}},
            },
        },
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2025-05-01T10:00:06Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}}},
            "subresource": "status",
        },
    ]


def pod(
    containers: int = 3, annotation_bytes: int = 1024, name: str = "web-7d9f8b6c5-x2x7k"
) -> dict[str, Any]:
    """A running Deployment pod with ``containers`` containers.

    ``annotation_bytes`` of annotations are spread over values of at most 1 KiB (as
    many annotations as needed), which is how large annotations usually arrive.
    """
    annotations: dict[str, str] = {}
    remaining = annotation_bytes
    index = 0
    while remaining > 0:
        key = f"example.com/annotation-{index}"
        size = min(1024, remaining)
        annotations[key] = _filler(key, size)
        remaining -= size
        index += 1
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "namespace": NAMESPACE,
            "uid": "0f6a2b8e-3c1d-4f5e-9a7b-6c8d9e0f1a2b",
            "resourceVersion": "482913",
            "creationTimestamp": "2025-05-01T10:00:00Z",
            "labels": {
                "app.kubernetes.io/name": "web",
                "app.kubernetes.io/instance": "web-prod",
                "pod-template-hash": "7d9f8b6c5",
                "tier": "frontend",
            },
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9f8b6c5",
                    "uid": "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": _managed_fields(containers),
        },
        "spec": {
            "volumes": [
                {"name": "config", "configMap": {"name": "web-config", "defaultMode": 420}},
                {
                    "name": "kube-api-access-x7k2p",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                        "defaultMode": 420,
                    },
                },
            ],
            "containers": [_container(i) for i in range(containers)],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "web",
            "serviceAccount": "web",
            "nodeName": "node-17",
            "securityContext": {"runAsUser": 10001, "fsGroup": 10001},
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }
                    ]
                }
            },
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": kind,
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": "2025-05-01T10:00:06Z",
                }
                for kind in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
            ],
            "hostIP": "10.0.3.17",
            "hostIPs": [{"ip": "10.0.3.17"}],
            "podIP": "10.244.17.23",
            "podIPs": [{"ip": "10.244.17.23"}],
            "startTime": "2025-05-01T10:00:00Z",
            "containerStatuses": [_container_status(i) for i in range(containers)],
            "qosClass": "Burstable",
        },
    }


def allowed_change(new: dict[str, Any]) -> None:
    """A label edit plus an image change in the last container (allowed)."""
    new["metadata"]["labels"]["rollout"] = "canary"
    new["metadata"]["resourceVersion"] = "482914"
    new["metadata"]["managedFields"][0]["time"] = "2025-05-01T11:00:00Z"
    last = new["spec"]["containers"][-1]
    last["image"] = last["image"].rsplit(":", 1)[0] + ":1.5.0"


def denied_change(new: dict[str, Any]) -> None:
    """Adding a finalizer and an owner: frozen fields the API server itself allows."""
    new["metadata"]["finalizers"] = ["example.com/keep"]
    new["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "hijack", "uid": "1-2-3"}
    )


def review(
    containers: int = 3,
    annotation_bytes: int = 1024,
    *,
    denied: bool = False,
    operation: str = "UPDATE",
) -> dict[str, Any]:
    old = pod(containers, annotation_bytes)
    new = copy.deepcopy(old)
    (denied_change if denied else allowed_change)(new)
    if operation == "CREATE":
        return make_review(None, new, operation="CREATE", uid="bench", namespace=NAMESPACE)
    return make_review(
        old, new, uid="bench-0000-0000", namespace=NAMESPACE, name=old["metadata"]["name"]
    )


def encoded(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


# The HTTP bodies: a realistic review (~20 KB) and a large one (~1 MB: a pod with
# half a megabyte of annotations, old and new).
@dataclass(frozen=True)
class Shape:
    containers: int
    annotation_bytes: int


REALISTIC = Shape(containers=3, annotation_bytes=256)
LARGE = Shape(containers=3, annotation_bytes=512 * 1024)


def realistic_review() -> bytes:
    return encoded(review(REALISTIC.containers, REALISTIC.annotation_bytes))


def large_review() -> bytes:
    return encoded(review(LARGE.containers, LARGE.annotation_bytes))
