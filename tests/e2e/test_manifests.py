"""Every manifest in deploy/ (base and overlays) is accepted by the real API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import REPO, ControlPlane, rendered_manifests
from tests.e2e.conftest import WEBHOOK_NAMESPACE, ensure_namespace
from webhook.admission_policy import VARIANT_TWO_VARIABLE, VARIANTS

OLDEST_TWO_VARIABLE = VARIANTS[VARIANT_TWO_VARIABLE]

OVERLAYS = [
    "deploy",
    *sorted(
        str(p.relative_to(REPO)) for p in (REPO / "deploy" / "overlays").iterdir() if p.is_dir()
    ),
]

# cert-manager's CRDs are not available offline; these stand-ins accept any spec, so
# the dry run checks the rest of the overlay (names, namespaces, references, the
# webhook configuration's annotation) while cert-manager's own schema is not checked.
CERT_MANAGER_KINDS = {
    "Issuer": "issuers",
    "Certificate": "certificates",
    "ClusterIssuer": "clusterissuers",
}


def _stand_in_crd(kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.cert-manager.io"},
        "spec": {
            "group": "cert-manager.io",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "scope": "Cluster" if kind == "ClusterIssuer" else "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize("directory", OVERLAYS)
def test_manifests_accepted_by_dry_run_server(
    plane: ControlPlane, directory: str, tmp_path: Path
) -> None:
    documents = rendered_manifests(plane, directory)
    assert documents, f"{directory} renders nothing"
    kinds = {doc["kind"] for doc in documents}
    needed = [
        _stand_in_crd(kind, plural) for kind, plural in CERT_MANAGER_KINDS.items() if kind in kinds
    ]
    missing = [
        crd
        for crd in needed
        if plane.local
        or plane.kubectl("get", "crd", crd["metadata"]["name"], check=False).returncode != 0
    ]
    if missing:  # on kind, only where cert-manager itself is not installed
        plane.apply(missing)
        names = [f"crd/{crd['metadata']['name']}" for crd in missing]
        plane.kubectl("wait", "--for=condition=Established", *names)
    # Namespaced objects can only be dry-run into a namespace that exists.
    ensure_namespace(plane, WEBHOOK_NAMESPACE)
    path = tmp_path / "rendered.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    result = plane.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    if "ValidatingAdmissionPolicy" in kinds and plane.server_release() < OLDEST_TWO_VARIABLE:
        # The committed policy is the variant for 1.33 and later (transformList); an
        # older API server must refuse it, and the README says to generate the v1.30+
        # variant there (pod-replace-guard policy --live).
        print(f"\n{directory} on {plane.server_version()}: refused, as it must be")
        assert result.returncode != 0, result.stdout
        assert "transformList" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result.stderr
    for doc in documents:
        assert (
            f"{doc['kind'].lower()}" in result.stdout.lower()
            or doc["metadata"]["name"] in result.stdout
        )
