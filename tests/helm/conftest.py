"""The chart on a real cluster (kind): run by `make helm-kind` (HELM_E2E=1), which
hack/kind/test.sh runs after the kustomize suite. It replaces the kustomize install, so
it is deselected (not skipped) anywhere else, with the reason printed.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("HELM_E2E") == "1":
        return
    ours = [item for item in items if "tests/helm/" in str(item.fspath)]
    if ours:
        print(f"\n{len(ours)} Helm real-cluster tests deselected: they run with `make helm-kind`")
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if item not in ours]
