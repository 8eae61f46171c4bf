"""One version, pyproject.toml's [project] version, and the release workflow that
publishes it (.github/workflows/release.yml, docs/release.md).

Every other place that states the version must say the same: the chart's version and
appVersion (the default image tag), `python -m webhook --version`, webhook.__version__.
The workflow's version check is run here as the runner would run it (bash -eo pipefail),
on a matching tag and on mismatches; its names and build settings are checked against
the Makefile's and the chart's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import webhook
from tests.charts.tools import CHART, PUBLISHED_IMAGE, project_version, run, tool_path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
VERSION = project_version()
# Files that state the version, each checked by a test below.
STATE_THE_VERSION = {
    "pyproject.toml",  # the source
    "charts/pod-replace-guard/Chart.yaml",  # version and appVersion
    "webhook/__init__.py",  # __version__, cli_support.version()'s last fallback
    # An overlay's images: entry for one's own registry, in a kustomize example: not a
    # statement of this project's version.
    "deploy/README.md",
}
EXACT_VERSION = re.compile(r"(?<![\w.])v?{}(?![\w.])")


def chart() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return loaded


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def job(name: str) -> dict[str, Any]:
    found: dict[str, Any] = workflow()["jobs"][name]
    return found


def step(job_name: str, *, uses: str = "", step_id: str = "", name: str = "") -> dict[str, Any]:
    found = [
        s
        for s in job(job_name)["steps"]
        if (uses and s.get("uses", "").split("@")[0] == uses)
        or (step_id and s.get("id") == step_id)
        or (name and s.get("name") == name)
    ]
    assert len(found) == 1, (job_name, uses, step_id, name, found)
    one: dict[str, Any] = found[0]
    return one


def runs(job_name: str) -> str:
    return "\n".join(s.get("run", "") for s in job(job_name)["steps"])


def owner() -> str:
    """The GitHub owner of the project, from the chart's home."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/pod-replace-guard", chart()["home"])
    assert match, chart()["home"]
    return match.group(1)


# --- one version -----------------------------------------------------------------------


def test_the_version_is_a_release_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


def test_chart_version_and_app_version_are_the_project_version() -> None:
    meta = chart()
    assert meta["version"] == VERSION
    # Quoted in Chart.yaml: a string, as Helm's appVersion is.
    assert meta["appVersion"] == VERSION
    assert isinstance(meta["appVersion"], str)


def test_webhook_version_flag_prints_the_project_version(tmp_path: Path) -> None:
    """The installed package's version (the venv's python), run outside the checkout."""
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "--version"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pod-replace-guard {VERSION}\n"
    assert webhook.__version__ == VERSION


def test_chart_default_image_is_the_published_one_at_app_version(helm_path: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    assert values["repository"] == PUBLISHED_IMAGE == f"ghcr.io/{owner()}/pod-replace-guard"
    assert values["tag"] == ""  # empty: appVersion
    assert values["digest"] == ""
    result = run([helm_path, "template", "pod-replace-guard", str(CHART), "-n", "prg"])
    assert result.returncode == 0, result.stderr
    deployment = next(
        doc for doc in yaml.safe_load_all(result.stdout) if doc and doc["kind"] == "Deployment"
    )
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{PUBLISHED_IMAGE}:{VERSION}"


def test_no_other_file_states_the_version() -> None:
    """A new place that states the version must be added above, with a check."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    pattern = re.compile(EXACT_VERSION.pattern.format(re.escape(VERSION)))
    stating = set()
    for name in files:
        # Go module files pin other modules' versions.
        if name.endswith(("go.mod", "go.sum")) or not (REPO / name).is_file():
            continue
        text = (REPO / name).read_bytes().decode("utf-8", errors="replace")
        if pattern.search(text):
            stating.add(name)
    assert stating <= STATE_THE_VERSION, sorted(stating - STATE_THE_VERSION)
    assert {"pyproject.toml", "charts/pod-replace-guard/Chart.yaml"} <= stating


def test_chart_packages_at_the_version(helm_path: str, tmp_path: Path) -> None:
    """What the chart job runs first: `helm package` names the archive by the version."""
    result = run([helm_path, "package", str(CHART), "--destination", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    archive = tmp_path / f"pod-replace-guard-{VERSION}.tgz"
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]
    with tarfile.open(archive) as tar:
        member = tar.extractfile("pod-replace-guard/Chart.yaml")
        assert member is not None
        packaged = yaml.safe_load(member.read())
    assert (packaged["version"], packaged["appVersion"]) == (VERSION, VERSION)


@pytest.fixture(scope="module")
def helm_path() -> str:
    return tool_path("helm")


# --- the release workflow ------------------------------------------------------------


def test_runs_on_version_tags_only() -> None:
    # PyYAML reads the key `on` as True (YAML 1.1).
    loaded: dict[object, Any] = yaml.safe_load(WORKFLOW.read_text())
    trigger = loaded[True]
    assert trigger == {"push": {"tags": ["v*"]}}


def run_version_check(
    tmp_path: Path, tag: str, files: dict[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    """The version job's check step in a copy of pyproject.toml and Chart.yaml, as the
    runner runs a `run:` (bash -eo pipefail) with python3 on PATH."""
    check = step("version", step_id="check")
    assert check["env"]["TAG"] == "${{ github.ref_name }}"
    assert check["env"]["OWNER"] == "${{ github.repository_owner }}"
    work = tmp_path / tag
    (work / "charts" / "pod-replace-guard").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
    shutil.copy(CHART / "Chart.yaml", work / "charts" / "pod-replace-guard" / "Chart.yaml")
    for name, text in (files or {}).items():
        (work / name).write_text(text)
    output = work / "github_output"
    output.touch()
    python_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{python_bin}:{os.environ['PATH']}",
        "TAG": tag,
        "OWNER": "Pod-Replace-Guard",
        "GITHUB_OUTPUT": str(output),
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", check["run"]],
        cwd=work, env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return result.returncode, result.stdout + result.stderr, outputs


def test_version_check_passes_on_the_project_version(tmp_path: Path) -> None:
    code, log, outputs = run_version_check(tmp_path, f"v{VERSION}")
    assert code == 0, log
    assert outputs == {"version": VERSION, "owner": "pod-replace-guard"}
    outputs_of_job = job("version")["outputs"]
    assert outputs_of_job["version"] == "${{ steps.check.outputs.version }}"


@pytest.mark.parametrize("tag", ["v9.9.9", VERSION, f"v{VERSION}.1", f"v{VERSION}-rc1"])
def test_version_check_fails_on_another_tag(tmp_path: Path, tag: str) -> None:
    code, log, outputs = run_version_check(tmp_path, tag)
    assert code != 0, log
    assert f"the tag {tag} is not v{VERSION}, the version of pyproject.toml" in log
    assert "version" not in outputs


@pytest.mark.parametrize("key", ["version", "appVersion"])
def test_version_check_fails_when_the_chart_disagrees(tmp_path: Path, key: str) -> None:
    chart_text = (CHART / "Chart.yaml").read_text()
    changed, count = re.subn(rf"(?m)^{key}: .*$", f'{key}: "9.9.9"', chart_text)
    assert count == 1
    code, log, outputs = run_version_check(
        tmp_path, f"v{VERSION}", {"charts/pod-replace-guard/Chart.yaml": changed}
    )
    assert code != 0, log
    assert f"says {key} 9.9.9" in log
    assert "version" not in outputs


def test_version_check_fails_when_pyproject_disagrees(tmp_path: Path) -> None:
    text = (
        (REPO / "pyproject.toml")
        .read_text()
        .replace(f'version = "{VERSION}"', 'version = "9.9.9"', 1)
    )
    assert tomllib.loads(text)["project"]["version"] == "9.9.9"
    code, log, _ = run_version_check(tmp_path, f"v{VERSION}", {"pyproject.toml": text})
    assert code != 0, log
    assert "is not v9.9.9" in log


def test_image_build() -> None:
    image = job("image")
    assert image["needs"] == "version"
    assert image["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
    }
    assert image["env"]["IMAGE"] == "ghcr.io/${{ needs.version.outputs.owner }}/pod-replace-guard"
    assert image["env"]["IMAGE"].replace("${{ needs.version.outputs.owner }}", owner()) == (
        PUBLISHED_IMAGE
    )
    for action in ("docker/setup-qemu-action", "docker/setup-buildx-action"):
        step("image", uses=action)
    login = step("image", uses="docker/login-action")["with"]
    assert login == {
        "registry": "ghcr.io",
        "username": "${{ github.actor }}",
        "password": "${{ secrets.GITHUB_TOKEN }}",
    }
    build = step("image", uses="docker/build-push-action")
    assert build["id"] == "build"
    settings = build["with"]
    assert settings["platforms"] == "linux/amd64,linux/arm64"
    assert settings["push"] is True
    assert settings["tags"] == "${{ env.IMAGE }}:${{ needs.version.outputs.version }}"
    assert settings["sbom"] is True
    assert settings["provenance"] == "mode=max"
    assert settings["context"] == "."
    # `make image`'s build arguments where a registry answers (not the offline ones).
    makefile = (REPO / "Makefile").read_text()
    python_image = re.search(r"(?m)^PYTHON_IMAGE \?= (\S+)$", makefile)
    assert python_image
    assert "docker build -t $(IMAGE) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) ." in makefile
    assert settings["build-args"].split() == [f"PYTHON_IMAGE={python_image.group(1)}"]
    attest = step("image", uses="actions/attest-build-provenance")["with"]
    assert attest == {
        "subject-name": "${{ env.IMAGE }}",
        "subject-digest": "${{ steps.build.outputs.digest }}",
        "push-to-registry": True,
    }


def test_chart_package_and_push() -> None:
    chart_job = job("chart")
    assert chart_job["needs"] == ["version", "image"]
    assert chart_job["permissions"]["packages"] == "write"
    assert chart_job["env"]["CHARTS"] == "ghcr.io/${{ needs.version.outputs.owner }}/charts"
    script = runs("chart")
    assert "hack/tools/build.sh helm" in script
    assert "helm package charts/pod-replace-guard --destination dist" in script
    assert 'test -f "dist/pod-replace-guard-$VERSION.tgz"' in script
    assert "helm registry login ghcr.io" in script
    assert "--password-stdin" in script
    assert 'helm push "dist/pod-replace-guard-$VERSION.tgz" "oci://$CHARTS"' in script
    # The order: package, log in, push.
    package, login, push = (
        script.index(s) for s in ("helm package", "helm registry login", "helm push")
    )
    assert package < login < push
    attest = step("chart", uses="actions/attest-build-provenance")["with"]
    assert attest["subject-digest"] == "${{ steps.push.outputs.digest }}"
    assert attest["subject-name"] == "${{ env.CHARTS }}/pod-replace-guard"


def test_helm_push_digest_line_is_what_helm_prints() -> None:
    """The push step reads `Digest: sha256:...` from helm push's output, as the pinned helm
    prints it (helm.sh/helm/v3 pkg/registry: "Pushed: %s", "Digest: %s")."""
    script = step("chart", step_id="push")["run"]
    assert "2>&1 | tee push.log" in script
    sample = "Pushed: ghcr.io/o/charts/pod-replace-guard:1.2.3\nDigest: sha256:" + "c" * 64
    result = subprocess.run(
        ["awk", "$1 == \"Digest:\" { print $2 }"],
        input=sample, capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    assert "awk '$1 == \"Digest:\" { print $2 }' push.log" in script
    assert result.stdout.strip() == "sha256:" + "c" * 64


def test_actions_pinned_by_major_version() -> None:
    for path in sorted((REPO / ".github" / "workflows").glob("*.yml")):
        jobs = yaml.safe_load(path.read_text())["jobs"]
        for name, body in jobs.items():
            for item in body["steps"]:
                if "uses" in item:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", item["uses"]), (
                        path.name,
                        name,
                        item["uses"],
                    )
