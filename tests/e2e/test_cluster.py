"""The cluster is the release it was built from, client and server alike: the local
control plane (tests/e2e/controlplane/go.mod, the oldest supported release, or
K8S_VERSION), and the kind node image assembled by hack/kind (hack/kind/k8s/go.mod)."""

from __future__ import annotations

import json
import os

from tests.e2e.cluster import BUILD_SCRIPT, REPO, ControlPlane


def test_kubectl_and_apiserver_are_one_release(plane: ControlPlane) -> None:
    versions = json.loads(plane.kubectl("version", "-o", "json").stdout)
    client, server = (
        versions["clientVersion"]["gitVersion"],
        versions["serverVersion"]["gitVersion"],
    )
    print(f"\nKubernetes: kube-apiserver {server}, kubectl {client}")
    assert client == server
    wanted = os.environ.get("K8S_VERSION")
    if not wanted:  # the version pinned in the Go module
        pinned = BUILD_SCRIPT.parent if plane.local else REPO / "hack" / "kind" / "k8s"
        go_mod = (pinned / "go.mod").read_text()
        wanted = next(
            line.split()[-1] for line in go_mod.splitlines() if "k8s.io/kubernetes v" in line
        )
    assert server == "v" + wanted.removeprefix("v")
