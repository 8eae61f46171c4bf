"""Pods shared by the policy's differential suite and its cost benchmark."""

from __future__ import annotations

from typing import Any

Pod = dict[str, Any]


def big_pod(
    containers: int,
    *,
    namespace: str = "n",
    name: str = "big",
    uid: str = "",
    annotation_bytes: int = 0,
) -> Pod:
    """A pod of ``containers`` realistic containers (args, env, ports, mounts, probes,
    resources, securityContext) and ``annotation_bytes`` of annotations, in 1 KB values
    (the API server stores at most 256 KiB of annotations in all)."""

    def container(index: int) -> Pod:
        probe = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10}
        return {
            "name": f"c{index}",
            "image": "registry.k8s.io/pause:3.10",
            "args": [f"--flag-{n}=value" for n in range(5)],
            "env": [{"name": f"E{n}", "value": f"v{n}"} for n in range(10)],
            "ports": [{"containerPort": 8000 + index}],
            "volumeMounts": [{"name": f"v{index % 10}", "mountPath": "/data"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            "livenessProbe": probe,
            "readinessProbe": probe,
            "securityContext": {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        }

    metadata: Pod = {"name": name, "namespace": namespace, "labels": {"app": "big"}}
    if uid:
        metadata["uid"] = uid
    if annotation_bytes:
        metadata["annotations"] = {f"note-{n}": "x" * 1000 for n in range(annotation_bytes // 1000)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [container(index) for index in range(containers)],
            "volumes": [{"name": f"v{n}", "emptyDir": {}} for n in range(10)],
            "terminationGracePeriodSeconds": 0,
        },
    }
