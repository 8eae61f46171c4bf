"""hack/kind/lib.sh's choice between the registry (fast) path and the offline one, with a
fake docker client on PATH: no Docker engine, no registry, nothing pulled.

The fake answers `docker image inspect` (the image is local) and `docker manifest
inspect` (a registry serves it) as each case says, and records its calls; one case
hangs, as a registry behind a black-holing firewall does, to show the probe is cut.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHOOSE = REPO / "hack" / "kind" / "choose.sh"

FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1 $2" in
  "image inspect") [ -n "$FAKE_LOCAL" ] && [ "$3" = "$FAKE_LOCAL" ] && exit 0; exit 1 ;;
  "manifest inspect")
    [ -n "$FAKE_HANG" ] && exec sleep 60
    [ -n "$FAKE_REGISTRY" ] && exit 0
    echo "dial tcp: lookup registry-1.docker.io: no such host" >&2; exit 1 ;;
esac
exit 2
"""


def choose(
    tmp_path: Path, what: str, *, fake: bool = True, **env: str
) -> tuple[str, str, list[str]]:
    """(stdout, stderr, the fake docker's calls) of choose.sh; env adds variables."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    docker = fake_bin / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    log.touch()
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KIND_NODE_IMAGE", "IMAGE_OFFLINE", "PYTHON_IMAGE", "KIND_STOCK_NODE_IMAGE"}
    }
    path = f"{fake_bin}:{base['PATH']}" if fake else base["PATH"]
    full_env = {
        **base,
        "PATH": path,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "FAKE_DOCKER_LOG": str(log),
        "K8S_VERSION": "1.34.4",
        **env,
    }
    result = subprocess.run(
        [str(CHOOSE), what], env=full_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr, log.read_text().splitlines()


def test_node_offline_when_no_registry_answers(tmp_path: Path) -> None:
    out, err, calls = choose(tmp_path, "node")
    assert out == "offline"
    assert "node image: assembled offline (no registry served kindest/node:v1.34.4" in err
    assert calls == [
        "image inspect kindest/node:v1.34.4",
        "manifest inspect kindest/node:v1.34.4",
    ]


def test_node_stock_when_the_registry_serves_it(tmp_path: Path) -> None:
    out, err, _ = choose(tmp_path, "node", FAKE_REGISTRY="1")
    assert out == "kindest/node:v1.34.4"
    assert "fast path: the registry serves it" in err


def test_node_stock_already_local_needs_no_registry(tmp_path: Path) -> None:
    out, err, calls = choose(tmp_path, "node", FAKE_LOCAL="kindest/node:v1.34.4")
    assert out == "kindest/node:v1.34.4"
    assert "already in the local Docker" in err
    assert calls == ["image inspect kindest/node:v1.34.4"]


def test_node_stock_image_follows_the_version_and_its_override(tmp_path: Path) -> None:
    out, _, _ = choose(tmp_path, "node", FAKE_REGISTRY="1", K8S_VERSION="v1.35.1")
    assert out == "kindest/node:v1.35.1"
    pinned = "kindest/node:v1.34.3@sha256:" + "b" * 64
    out, _, _ = choose(tmp_path, "node", FAKE_REGISTRY="1", KIND_STOCK_NODE_IMAGE=pinned)
    assert out == pinned


def test_node_probe_is_cut_after_the_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    out, err, _ = choose(tmp_path, "node", FAKE_HANG="1", REGISTRY_PROBE_TIMEOUT="1")
    assert out == "offline"
    assert time.monotonic() - start < 10
    assert "within 1s" in err


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("offline", "offline"), ("kindest/node:v1.34.3", "kindest/node:v1.34.3")],
)
def test_node_explicit_setting_wins_without_a_probe(
    tmp_path: Path, setting: str, expected: str
) -> None:
    # The registry would answer: the setting still wins, and docker is never asked.
    out, err, calls = choose(tmp_path, "node", FAKE_REGISTRY="1", KIND_NODE_IMAGE=setting)
    assert out == expected
    assert "(KIND_NODE_IMAGE" in err
    assert calls == []


def test_python_base_offline_when_no_registry_answers(tmp_path: Path) -> None:
    out, err, calls = choose(tmp_path, "python-base")
    assert out == "offline"
    assert "no registry served python:3.11-slim" in err
    assert calls[-1] == "manifest inspect python:3.11-slim"


def test_python_base_registry_when_it_answers_or_is_local(tmp_path: Path) -> None:
    out, _, _ = choose(tmp_path, "python-base", FAKE_REGISTRY="1")
    assert out == "registry"
    local = "mirror/python:3.11"
    out, err, calls = choose(tmp_path, "python-base", PYTHON_IMAGE=local, FAKE_LOCAL=local)
    assert "already in the local Docker" in err
    assert calls[-1] == f"image inspect {local}"
    assert out == "registry"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("1", "offline"), ("yes", "offline"), ("0", "registry"), ("false", "registry")],
)
def test_python_base_explicit_setting_wins_without_a_probe(
    tmp_path: Path, setting: str, expected: str
) -> None:
    out, err, calls = choose(tmp_path, "python-base", FAKE_HANG="1", IMAGE_OFFLINE=setting)
    assert out == expected
    assert f"(IMAGE_OFFLINE={setting})" in err
    assert calls == []


def test_this_machine_is_bounded(tmp_path: Path) -> None:
    """The real docker client (if any) and network: a decision within the probe's bound.

    Where no registry answers, as on the CI machine, the offline path is chosen, as the
    kind flow did before the probe existed.
    """
    for what in ("node", "python-base"):
        start = time.monotonic()
        out, err, _ = choose(tmp_path, what, fake=False)
        elapsed = time.monotonic() - start
        assert elapsed < 2 * 6 + 5, f"{what}: {elapsed:.1f}s"
        assert "image: " in err, err
        assert out in {"offline", "registry"} or out.startswith("kindest/node:"), out
        print(f"{what}: {out} in {elapsed:.1f}s ({err.strip().splitlines()[-1]})")
        if os.environ.get("CI") == "true":
            assert out == "offline", err
