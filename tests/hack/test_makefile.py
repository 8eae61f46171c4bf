"""The Makefile's help: every target listed, every variable its descriptions name expanded."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_help(*overrides: str) -> str:
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "help", *overrides],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return result.stdout


def test_help_lists_every_target_with_values_not_variable_names() -> None:
    output = make_help()
    documented = re.findall(r"^([a-z0-9-]+):.*## ", (REPO / "Makefile").read_text(), re.M)
    listed = [line.split()[0] for line in output.splitlines()]
    assert listed == documented
    assert "$(" not in output, output
    assert "serve the webhook on https://127.0.0.1:8443 with dev certificates in certs/" in output
    assert "build the webhook image pod-replace-guard:dev " in output


def test_help_shows_overrides() -> None:
    output = make_help("BIND=0.0.0.0:9443", "IMAGE=registry.example/prg:1", "CLUSTER=c2")
    assert "https://0.0.0.0:9443 " in output
    assert "build the webhook image registry.example/prg:1 " in output
    assert "create the kind cluster c2 " in output
    assert "$(" not in output, output
