"""hack/tools/build.sh: the binaries it caches are the versions hack/tools/*/go.mod pin."""

from __future__ import annotations

import re

from tests.charts.tools import REPO, run


def pinned(tool: str, module: str) -> str:
    go_mod = (REPO / "hack" / "tools" / tool / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", go_mod, re.MULTILINE)
    assert found, f"{module} not required in hack/tools/{tool}/go.mod"
    return found.group(1)


def test_helm_is_the_pinned_release(helm: str) -> None:
    result = run([helm, "version", "--short"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("+")[0].strip() == pinned("helm", "helm.sh/helm/v3")
    # Built like upstream's Makefile: with no cluster, templates see the client-go
    # release as the Kubernetes version, not helm's fallback v1.20, which the chart's
    # kubeVersion (>=1.30) refuses.
    minor = pinned("helm", "k8s.io/client-go").split(".")[1]
    chart = str(REPO / "charts" / "pod-replace-guard")
    rendered = run([helm, "template", "x", chart, "--show-only", "templates/service.yaml"])
    assert rendered.returncode == 0, rendered.stderr
    old = run([helm, "template", "x", chart, "--kube-version", "1.20.0"])
    assert "incompatible with Kubernetes v1.20.0" in old.stderr
    assert int(minor) >= 30


def test_promtool_is_the_pinned_release(promtool: str) -> None:
    module = pinned("promtool", "github.com/prometheus/prometheus")
    # Prometheus v3.MINOR.PATCH is published as the Go module v0.(300+MINOR).PATCH.
    minor, patch = module.removeprefix("v0.").split(".")
    result = run([promtool, "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"promtool, version 3.{int(minor) - 300}.{patch} ")
