"""helm and promtool for the chart and monitoring tests, as hack/tools/build.sh caches them.

`make test` builds both first (outside pytest's per-test timeout). In CI a missing tool
fails the test; elsewhere the test skips with the reason printed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pod-replace-guard"
MONITORING = REPO / "deploy" / "monitoring"


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
