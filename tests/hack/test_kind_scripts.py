"""hack/kind: the host-preparation pieces that can be checked without a Docker engine.

The scripts themselves run for real in `make kind-test` (CI); here: every script
parses, the runc shim removes exactly CAP_SYS_RESOURCE and passes runc its arguments,
and daemon.json keeps what an operator had in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HACK = REPO / "hack"
SCRIPTS = sorted(p for p in HACK.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_parse_and_are_executable(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    shell = script.read_text(encoding="utf-8").splitlines()[0]
    if "bash" in shell or shell.endswith("/sh"):
        result = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def _capabilities() -> dict[str, list[str]]:
    caps = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"]
    return {kind: list(caps) for kind in ("bounding", "effective", "permitted")}


def test_runc_shim_drops_only_cap_sys_resource(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps({"ociVersion": "1.0.2", "process": {"capabilities": _capabilities()}})
    )
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps({"capabilities": _capabilities(), "args": ["sh"]}))
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    runc = fake_bin / "runc"  # records how the shim called runc
    runc.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RUNC_ARGS"\n')
    runc.chmod(0o755)
    args_file = tmp_path / "args"
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "RUNC_ARGS": str(args_file)}
    shim = HACK / "kind" / "host" / "runc-drop-sys-resource"
    for argv in (
        ["--root", "/run/x", "create", "--bundle", str(bundle), "id1"],
        ["exec", "--process", str(process_file), "id1"],
    ):
        result = subprocess.run(
            [str(shim), *argv], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert args_file.read_text().split("\n")[:-1] == argv, "runc gets the same arguments"
    config = json.loads((bundle / "config.json").read_text())
    process = json.loads(process_file.read_text())
    for caps in (config["process"]["capabilities"], process["capabilities"]):
        for kind, names in caps.items():
            assert names == ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"], kind
    assert config["ociVersion"] == "1.0.2"
    assert process["args"] == ["sh"]


def test_daemon_json_keeps_other_settings(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-driver": "local", "runtimes": {"other": {"path": "/x"}}}))
    script = HACK / "kind" / "host" / "daemon-json.py"
    subprocess.run([sys.executable, str(script), str(path)], check=True)
    config = json.loads(path.read_text())
    assert config["log-driver"] == "local"
    assert config["runtimes"]["other"] == {"path": "/x"}
    assert config["default-runtime"] == "runc-drop-sys-resource"
    assert config["runtimes"]["runc-drop-sys-resource"]["path"].endswith("runc-drop-sys-resource")


@pytest.mark.parametrize(
    ("cluster", "kubeconfig", "expected"),
    [
        ("pod-replace-guard", "", ""),  # the default cluster: kind's own default file
        ("prg-conf", "", "{cache}/kind/kubeconfig-prg-conf"),  # a second one: its own
        ("prg-conf", "/x/config", "/x/config"),  # KUBECONFIG set: left alone
    ],
)
def test_a_second_cluster_gets_its_own_kubeconfig(
    tmp_path: Path, cluster: str, kubeconfig: str, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(XDG_CACHE_HOME=str(tmp_path), CLUSTER=cluster)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    result = subprocess.run(
        ["bash", "-c", f'source {HACK}/kind/lib.sh && echo "${{KUBECONFIG:-}}"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == expected.format(cache=tmp_path / "pod-replace-guard")
