"""pyproject.toml: `make install` (an editable install) and a wheel build print no
setuptools warnings, and the wheel ships the pod schema (webhook/schemas/, data only).

Both build in a copy of the package (no build/ or *.egg-info in the checkout) with
pip's isolated build environment, which needs setuptools from the package index or
pip's cache: without either the tests skip (fail in CI), as `make install` would fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def copy_package(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "webhook", source / "webhook", ignore=shutil.ignore_patterns("__pycache__")
    )
    return source


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True, text=True, check=False, timeout=240, env=env,
    )  # fmt: skip
    if (
        result.returncode != 0
        and "setuptools" in result.stdout + result.stderr
        and (
            "No matching distribution" in result.stdout + result.stderr
            or "Could not find a version" in result.stdout + result.stderr
        )
    ):
        reason = "no setuptools for the isolated build (no package index, nothing cached)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(f"\nSKIPPING: {reason}")
        pytest.skip(reason)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_no_warnings(output: str) -> None:
    for word in ("Warning", "webhook.schemas", "!!"):
        assert word not in output, output


def test_editable_install_prints_no_warnings(tmp_path: Path) -> None:
    """What `make install` runs (pip install -e), into an empty venv of its own."""
    source = copy_package(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    result = pip(
        "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-e", str(source)
    )
    assert_no_warnings(result.stdout + result.stderr)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.resources as r; print(*(r.files('webhook') / 'schemas').iterdir())"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == str(source / "webhook" / "schemas" / "pod-v1.34.4.json")


def test_wheel_ships_the_schema_without_warnings(tmp_path: Path) -> None:
    source = copy_package(tmp_path)
    dist = tmp_path / "dist"
    result = pip("wheel", "--no-deps", "-w", str(dist), str(source))
    assert_no_warnings(result.stdout + result.stderr)
    (wheel,) = dist.glob("pod_replace_guard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "webhook").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)  # fmt: skip
    assert {"webhook/schemas/pod-v1.34.4.json", "webhook/py.typed", "webhook/cli.py"} <= names
    assert set(shipped) <= names, set(shipped) - names
