"""Building pods and AdmissionReviews for tests (no HTTP, no I/O beyond the example)."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

EXAMPLE_POD_FILE = Path(__file__).with_name("example_pod.json")
_EXAMPLE: dict[str, Any] = json.loads(EXAMPLE_POD_FILE.read_text())


def example_pod() -> dict[str, Any]:
    """The pod of the "Replacing a Specified Pod" document (a fresh copy)."""
    return copy.deepcopy(_EXAMPLE)


def make_review(
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    *,
    operation: str = "UPDATE",
    uid: str | None = None,
    namespace: str = "default",
    name: str = "hello-world",
    user: str = "alice",
    groups: list[str] | None = None,
    resource: str = "pods",
    group: str = "",
    sub_resource: str = "",
    api_version: str = "admission.k8s.io/v1",
    dry_run: bool = False,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": "v1", "kind": "Pod"},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "requestKind": {"group": group, "version": "v1", "kind": "Pod"},
        "requestResource": {"group": group, "version": "v1", "resource": resource},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user, "uid": "1", "groups": groups or ["system:authenticated"]},
        "object": new,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def update_review(change: Any = None, **kwargs: Any) -> dict[str, Any]:
    """A review of the example pod changed by ``change(pod)`` (in place)."""
    old = example_pod()
    new = example_pod()
    if change is not None:
        change(new)
    return make_review(old, new, **kwargs)
