"""helm and promtool for the chart and monitoring tests, as hack/tools/build.sh caches them.

`make test` builds both first (outside pytest's per-test timeout). In CI a missing tool
fails the test; elsewhere the test skips with the reason printed.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pod-replace-guard"
MONITORING = REPO / "deploy" / "monitoring"
# The image the release workflow publishes (.github/workflows/release.yml), the chart's
# default repository; its default tag is the project's version (pyproject.toml).
PUBLISHED_IMAGE = "ghcr.io/pod-replace-guard/pod-replace-guard"


def project_version() -> str:
    """pyproject.toml's [project] version: the one version source (docs/release.md)."""
    with (REPO / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def tool_path(name: str) -> str:
    """$HELM / $PROMTOOL, or the binary hack/tools/build.sh cached; fails in CI, else skips."""
    explicit = os.environ.get(name.upper())
    if explicit:
        return explicit
    cache = Path(os.environ.get("TOOLS_CACHE_DIR") or "")
    if not os.environ.get("TOOLS_CACHE_DIR"):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache = base / "pod-replace-guard" / "tools"
    built = cache / "bin" / name
    if built.exists():
        return str(built)
    reason = f"{name} not built: run hack/tools/build.sh {name} (needs Go), or set ${name.upper()}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    print(f"\nSKIPPING: {reason}")
    pytest.skip(reason)


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)


def image_values(image: str) -> list[str]:
    """The --set flags that make the chart run `image` (name:tag or name@sha256:...).

    The chart's default repository is the published one (ghcr.io); the kind flow installs
    the image it built and loaded (make helm-kind passes $(IMAGE) as HELM_E2E_IMAGE).
    """
    if "@" in image:
        repository, digest = image.split("@", 1)
        return ["--set", f"image.repository={repository}", "--set", f"image.digest={digest}"]
    repository, tag = image, "latest"
    name = image.rsplit("/", 1)[-1]
    if ":" in name:
        repository, tag = image.rsplit(":", 1)
    return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
