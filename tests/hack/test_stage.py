"""hack/stage.sh: the table of stages .ci/run prints at the end of every run.

Through the script itself (bash), as .ci/run and the Makefile call it: a stage's exit
status passes through unchanged, passed and failed stages are both recorded, and the
report names each with its time and the run's total.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "hack" / "stage.sh"


def stage(stages: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI_STAGES"}
    if stages is not None:
        env["CI_STAGES"] = str(stages)
    return subprocess.run(
        [str(STAGE), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_stages_pass_their_status_through_and_are_all_reported(tmp_path: Path) -> None:
    stages = tmp_path / "stages"
    assert stage(stages, "lint", "true").returncode == 0
    failed = stage(stages, "suite: local v1", "bash", "-c", "sleep 1; echo out; exit 3")
    assert failed.returncode == 3
    assert failed.stdout == "out\n"
    report = stage(stages, "--report", "2", "61")
    assert report.returncode == 0
    rows = [line.split() for line in report.stdout.splitlines()[1:]]
    assert rows[0] == ["lint", "ok", "0"]
    assert rows[1][:3] == ["suite:", "local", "v1"]
    assert rows[1][3] == "FAILED"
    assert int(rows[1][4]) >= 1
    assert rows[2] == ["total", "FAILED", "61"]


def test_without_ci_stages_a_stage_only_runs(tmp_path: Path) -> None:
    result = stage(None, "lint", "bash", "-c", "exit 4")
    assert result.returncode == 4
    assert not list(tmp_path.iterdir())


def test_a_run_that_failed_before_any_stage_still_reports_its_total(tmp_path: Path) -> None:
    report = stage(tmp_path / "never-written", "--report", "2", "5")
    assert report.stdout.splitlines()[1:] == [f"  {'total':<48} {'FAILED':<6} {5:>6}"]


PREBUILD = REPO / "hack" / "prebuild.sh"


def prebuild(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run(
        [str(PREBUILD), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def test_waiting_for_background_builds_never_started_is_an_error(tmp_path: Path) -> None:
    result = prebuild(tmp_path, "wait")
    assert result.returncode == 2
    assert "nothing was started" in result.stderr


def test_waiting_reports_the_background_builds_status_and_log(tmp_path: Path) -> None:
    state = tmp_path / "pod-replace-guard" / "prebuild"
    state.mkdir(parents=True)
    (state / "pid").write_text("999999999\n")  # gone: its status file decides
    (state / "log").write_text("go: compile error in k8s.io/kubernetes/cmd/kubelet\n")
    (state / "rc").write_text("0\n")
    assert prebuild(tmp_path, "wait").returncode == 0
    (state / "rc").write_text("3\n")
    failed = prebuild(tmp_path, "wait")
    assert failed.returncode == 3
    assert "compile error in k8s.io/kubernetes/cmd/kubelet" in failed.stderr
    (state / "rc").unlink()  # died without a status: a failure, not a hang
    assert prebuild(tmp_path, "wait").returncode == 1
