"""The kubectl that renders deploy/ (``kubectl kustomize``), for every test here."""

from __future__ import annotations

import os

import pytest

from tests.deploy.test_manifests import find_kubectl


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = find_kubectl()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is required to render deploy/ in CI (not on PATH, no $KUBECTL)")
        pytest.skip("kubectl not found (not on PATH, no $KUBECTL): cannot render deploy/")
    return path
