"""The command line through a real subprocess: ``python -m webhook check|certs|serve``.

Exit codes: 0 allowed, 1 denied, 2 bad input with exactly one line on stderr and never
a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.reviews import EXAMPLE_POD_FILE, example_pod
from webhook.cli import LIVE_ATTEMPTS, OFFLINE_CAVEAT, UsageError, _read_and_dry_run
from webhook.live import DryRun, PodChanged

PROG = "pod-replace-guard"
SECRET = "s3cr3t-DO-NOT-PRINT-cli-93ab"


def clean_env() -> dict[str, str]:
    """The environment without PRG_* settings (``make fuzz`` exports one)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PRG_")}


def run(
    *args: str,
    stdin: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        timeout=60,
        check=False,
    )


def assert_bad_input(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stderr.endswith("\n")
    line = lines[0]
    assert line.startswith(PROG + ": error: ")
    for fragment in fragments:
        assert fragment in line
    return line


def write_json(path: Path, pod: Any) -> str:
    path.write_text(json.dumps(pod), encoding="utf-8")
    return str(path)


@pytest.fixture
def old_file(tmp_path: Path) -> str:
    return write_json(tmp_path / "old.json", example_pod())


def changed(tmp_path: Path, name: str = "new.json", **edits: Any) -> str:
    pod = example_pod()
    if "image" in edits:
        pod["spec"]["containers"][0]["image"] = edits["image"]
    if "node" in edits:
        pod["spec"]["nodeName"] = edits["node"]
    if "env" in edits:
        pod["spec"]["containers"][0]["env"][0]["value"] = edits["env"]
    if "labels" in edits:
        pod["metadata"]["labels"] = edits["labels"]
    return write_json(tmp_path / name, pod)


# --- check: verdicts and exit codes -----------------------------------------------------------


def test_unchanged_pod_is_allowed(old_file: str) -> None:
    result = run("check", "--old", old_file, "--new", old_file)
    assert result.returncode == 0
    assert result.stdout == (
        "allowed: the update changes only fields that may be updated\n" + OFFLINE_CAVEAT + "\n"
    )
    assert result.stderr == ""


def test_image_and_label_change_is_allowed(tmp_path: Path, old_file: str) -> None:
    new = changed(tmp_path, image="beego:v2", labels={"name": "other"})
    result = run("check", "--old", old_file, "--new", new)
    assert result.returncode == 0
    assert result.stdout.startswith("allowed:")


def test_frozen_change_is_denied_with_exit_1(tmp_path: Path, old_file: str) -> None:
    new = changed(tmp_path, node="node-2", env=SECRET)
    result = run("check", "--old", old_file, "--new", new)
    assert result.returncode == 1, result.stdout
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "denied: these fields may not be changed:"
    assert lines[1:3] == ["  spec.containers[0].env[0].value", "  spec.nodeName"]
    assert lines[3].startswith("Only these fields may be updated: metadata.selfLink")
    assert lines[4] == OFFLINE_CAVEAT
    assert SECRET not in result.stdout


def test_fields_the_manifest_omits_make_the_offline_verdict_unknown(
    tmp_path: Path, old_file: str
) -> None:
    """A hand-written manifest leaves out what the API server defaults: offline, the
    check says it cannot tell (exit 3) rather than claiming a denial."""
    pod = json.loads(Path(old_file).read_text())
    pod["spec"]["containers"][0]["image"] = "beego:v2"
    pod["spec"].pop("dnsPolicy", None)
    pod["spec"]["dnsPolicy"] = None
    pod["spec"]["containers"][0].pop("imagePullPolicy", None)
    old = json.loads(Path(old_file).read_text())
    old["spec"]["dnsPolicy"] = "ClusterFirst"
    old["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    result = run(
        "check", "--old", write_json(tmp_path / "live.json", old),
        "--new", write_json(tmp_path / "manifest.json", pod), "-o", "json",
    )  # fmt: skip
    assert result.returncode == 3, result.stdout
    verdict = json.loads(result.stdout)
    assert verdict["verdict"] == "unknown"
    assert verdict["allowed"] is None  # neither allowed nor denied
    assert verdict["message"].startswith("cannot tell offline")
    assert "may not change" not in result.stdout
    assert verdict["violations"] == [
        {"path": "spec.containers[0].imagePullPolicy", "omitted": True},
        {"path": "spec.dnsPolicy", "omitted": True},
    ]


def test_an_omitted_field_beside_a_real_change_is_still_denied(
    tmp_path: Path, old_file: str
) -> None:
    old = json.loads(Path(old_file).read_text())
    old["spec"]["dnsPolicy"] = "ClusterFirst"
    new = json.loads(Path(old_file).read_text())
    new["spec"].pop("dnsPolicy", None)
    new["spec"]["nodeName"] = "node-2"
    result = run(
        "check", "--old", write_json(tmp_path / "live.json", old),
        "--new", write_json(tmp_path / "manifest.json", new),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "  spec.dnsPolicy (omitted in the manifest: the API server may default it)" in (
        result.stdout.splitlines()
    )


def test_json_output_when_allowed(tmp_path: Path, old_file: str) -> None:
    result = run("check", "--old", old_file, "--new", changed(tmp_path, image="x"), "-o", "json")
    assert result.returncode == 0
    assert result.stdout.count("\n") == 1
    assert json.loads(result.stdout) == {
        "allowed": True,
        "verdict": "allowed",
        "checked": "offline",
        "violations": [],
        "message": "pod update allowed",
        "caveat": OFFLINE_CAVEAT,
    }


def test_json_output_when_denied(tmp_path: Path, old_file: str) -> None:
    new = changed(tmp_path, node="node-2", env=SECRET, image="beego:v2")
    result = run("check", "--old", old_file, "--new", new, "--output", "json")
    assert result.returncode == 1, result.stdout
    assert result.stdout.count("\n") == 1
    verdict = json.loads(result.stdout)
    assert set(verdict) == {"allowed", "verdict", "checked", "violations", "message", "caveat"}
    assert verdict["verdict"] == "denied"
    assert verdict["allowed"] is False
    assert verdict["violations"] == [
        {"path": "spec.containers[0].env[0].value"},
        {"path": "spec.nodeName"},
    ]
    assert isinstance(verdict["message"], str)
    assert "spec.nodeName" in verdict["message"]
    assert "spec.containers[*].image" in verdict["message"]
    assert SECRET not in result.stdout


def test_check_judges_pods_of_any_namespace_like_enforce_mode(tmp_path: Path) -> None:
    # check ignores the webhook's exemptions: a pod in kube-system is judged too.
    old = example_pod()
    old["metadata"]["namespace"] = "kube-system"
    new = example_pod()
    new["metadata"]["namespace"] = "kube-system"
    new["spec"]["restartPolicy"] = "Never"
    result = run(
        "check",
        "--old",
        write_json(tmp_path / "o.json", old),
        "--new",
        write_json(tmp_path / "n.json", new),
        "-o",
        "json",
    )
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["violations"] == [{"path": "spec.restartPolicy"}]


def test_deleting_pod_may_drop_finalizers(tmp_path: Path) -> None:
    old = example_pod()
    old["metadata"]["deletionTimestamp"] = "2016-08-08T08:00:00Z"
    old["metadata"]["finalizers"] = ["example.com/a"]
    new = json.loads(json.dumps(old))
    new["metadata"]["finalizers"] = []
    result = run(
        "check",
        "--old",
        write_json(tmp_path / "o.json", old),
        "--new",
        write_json(tmp_path / "n.json", new),
    )
    assert result.returncode == 0, result.stdout
    # and a live pod may not
    live = example_pod()
    live["metadata"]["finalizers"] = ["example.com/a"]
    result = run(
        "check",
        "--old",
        write_json(tmp_path / "live.json", live),
        "--new",
        str(EXAMPLE_POD_FILE),
        "-o",
        "json",
    )
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["violations"] == [{"path": "metadata.finalizers"}]


# --- check: YAML and stdin ---------------------------------------------------------------------


def _yaml_with_bare_timestamp(pod: dict[str, Any]) -> str:
    text = yaml.safe_dump(pod, sort_keys=False)
    # PyYAML quotes strings that look like timestamps; kubectl-style manifests don't.
    text = text.replace("'2016-08-08T07:41:29Z'", "2016-08-08T07:41:29Z")
    assert "creationTimestamp: 2016-08-08T07:41:29Z\n" in text
    return text


def test_yaml_new_with_bare_timestamp_against_json_old(tmp_path: Path, old_file: str) -> None:
    pod = example_pod()
    pod["spec"]["containers"][0]["image"] = "beego:v2"
    new = tmp_path / "new.yaml"
    new.write_text(_yaml_with_bare_timestamp(pod), encoding="utf-8")
    result = run("check", "--old", old_file, "--new", str(new), "-o", "json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["violations"] == []


def test_yaml_timestamps_stay_strings_so_a_real_change_is_the_only_violation(
    tmp_path: Path, old_file: str
) -> None:
    pod = example_pod()
    pod["spec"]["dnsPolicy"] = "Default"
    new = tmp_path / "new.yaml"
    new.write_text(_yaml_with_bare_timestamp(pod), encoding="utf-8")
    result = run("check", "--old", old_file, "--new", str(new), "-o", "json")
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["violations"] == [{"path": "spec.dnsPolicy"}]


def test_yaml_on_both_sides(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(_yaml_with_bare_timestamp(example_pod()), encoding="utf-8")
    pod = example_pod()
    pod["spec"]["containers"][0]["command"] = ["sleep", "1"]
    new = tmp_path / "new.yml"
    new.write_text(yaml.safe_dump(pod), encoding="utf-8")
    result = run("check", "--old", str(old), "--new", str(new), "-o", "json")
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["violations"] == [{"path": "spec.containers[0].command"}]


def test_yaml_document_marker_and_trailing_empty_document(tmp_path: Path, old_file: str) -> None:
    new = tmp_path / "new.yaml"
    new.write_text("---\n" + yaml.safe_dump(example_pod()) + "---\n", encoding="utf-8")
    result = run("check", "--old", old_file, "--new", str(new))
    assert result.returncode == 0, result.stderr


def test_new_from_stdin(tmp_path: Path, old_file: str) -> None:
    pod = example_pod()
    pod["spec"]["nodeName"] = "node-2"
    result = run("check", "--old", old_file, "--new", "-", "-o", "json", stdin=json.dumps(pod))
    assert result.returncode == 1, result.stdout
    assert json.loads(result.stdout)["violations"] == [{"path": "spec.nodeName"}]


def test_old_from_stdin_as_yaml(tmp_path: Path) -> None:
    new = changed(tmp_path, image="beego:v3")
    stdin = _yaml_with_bare_timestamp(example_pod())
    result = run("check", "--old", "-", "--new", new, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("allowed:")


# --- check: bad input ---------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, old_file: str) -> None:
    missing = str(tmp_path / "absent.json")
    result = run("check", "--old", old_file, "--new", missing)
    assert_bad_input(result, "cannot read", missing, "No such file")


def test_directory_instead_of_a_file(tmp_path: Path, old_file: str) -> None:
    assert_bad_input(run("check", "--old", str(tmp_path), "--new", old_file), "cannot read")


def test_not_utf8(tmp_path: Path, old_file: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"kind": "Pod", "x": "\xff\xfe"}')
    assert_bad_input(run("check", "--old", old_file, "--new", str(bad)), "not UTF-8")


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ('{"kind": "Service", "apiVersion": "v1"}', ("holds a Service, not a Pod",)),
        ("kind: Deployment\napiVersion: apps/v1\n", ("holds a Deployment, not a Pod",)),
        ("[1, 2, 3]\n", ("must hold a Pod object, not a list",)),
        ('"just a string"\n', ("must hold a Pod object, not a str",)),
        ("42\n", ("must hold a Pod object, not a int",)),
        ("", ("must hold exactly one object, found 0",)),
        ("---\n---\n", ("must hold exactly one object, found 0",)),
        ("{not: [valid\n", ("is neither JSON nor YAML",)),
        ("a: b\n  c: d\n", ("is neither JSON nor YAML",)),
        ("kind: Pod\n---\nkind: Pod\n", ("must hold exactly one object, found 2",)),
    ],
    ids=[
        "service",
        "deployment",
        "list",
        "string",
        "number",
        "empty",
        "only separators",
        "broken flow",
        "broken indentation",
        "multi-document",
    ],
)
def test_not_a_single_pod(
    tmp_path: Path, old_file: str, content: str, fragments: tuple[str, ...]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content, encoding="utf-8")
    line = assert_bad_input(run("check", "--old", old_file, "--new", str(bad)), *fragments)
    assert str(bad) in line


def test_bad_stdin_is_named_stdin(old_file: str) -> None:
    result = run("check", "--old", old_file, "--new", "-", stdin="[1]")
    assert_bad_input(result, "stdin must hold a Pod object")


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda pod: pod.pop("kind"), ("has no kind",)),
        (lambda pod: pod.update(kind={"a": SECRET}), ("holds another kind, not a Pod",)),
        (lambda pod: pod.pop("apiVersion"), ("has no apiVersion",)),
        (lambda pod: pod.update(apiVersion="v2"), ("apiVersion is not v1",)),
        (lambda pod: pod.pop("metadata"), ("has no metadata",)),
        (lambda pod: pod.update(metadata=[SECRET]), ("has no metadata",)),
        (lambda pod: pod["metadata"].pop("name"), ("has no metadata.name",)),
        (lambda pod: pod["metadata"].update(name=""), ("has no metadata.name",)),
        (lambda pod: pod["metadata"].update(name=[SECRET]), ("metadata.name is not a string",)),
        (lambda pod: pod["metadata"].update(namespace=7), ("metadata.namespace is not a string",)),
    ],
    ids=[
        "no kind",
        "kind not a string",
        "no apiVersion",
        "apiVersion v2",
        "no metadata",
        "metadata a list",
        "no name",
        "empty name",
        "name a list",
        "namespace a number",
    ],
)
def test_a_manifest_kubectl_replace_would_refuse_is_bad_input(
    tmp_path: Path, old_file: str, edit: Any, fragments: tuple[str, ...]
) -> None:
    """kubectl replace needs kind, apiVersion and metadata.name; a check without them
    answers no verdict (it used to call a manifest without kind "denied: kind")."""
    pod = example_pod()
    edit(pod)
    new = write_json(tmp_path / "n.json", pod)
    line = assert_bad_input(run("check", "--old", old_file, "--new", new), new, *fragments)
    assert SECRET not in line
    # the same on the --old side
    line = assert_bad_input(run("check", "--old", new, "--new", old_file), new, *fragments)


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", "other-pod"), ("namespace", "other-namespace"), ("uid", "other-uid")],
)
def test_old_and_new_must_be_the_same_pod(
    tmp_path: Path, old_file: str, key: str, value: str
) -> None:
    pod = example_pod()
    pod["metadata"][key] = value
    new = write_json(tmp_path / "n.json", pod)
    line = assert_bad_input(
        run("check", "--old", old_file, "--new", new), f"different pods (their metadata.{key}"
    )
    assert value not in line  # names the path, not the value


def test_a_manifest_without_namespace_or_uid_is_the_same_pod(tmp_path: Path, old_file: str) -> None:
    pod = example_pod()
    pod["metadata"].pop("namespace", None)
    pod["metadata"].pop("uid", None)
    result = run("check", "--old", old_file, "--new", write_json(tmp_path / "n.json", pod))
    assert result.returncode == 0, result.stdout + result.stderr


def test_absurd_nesting_is_bad_input(tmp_path: Path) -> None:
    depth = 300
    old = tmp_path / "old.json"
    new = tmp_path / "new.json"
    head = '{"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": '
    old.write_text(head + '{"a":' * depth + "1" + "}" * (depth + 1))
    new.write_text(head + '{"a":' * depth + "2" + "}" * (depth + 1))
    assert_bad_input(run("check", "--old", str(old), "--new", str(new)), "deeper")


def test_yaml_nesting_beyond_the_parser_is_bad_input(tmp_path: Path, old_file: str) -> None:
    bad = tmp_path / "deep.yaml"
    bad.write_text("[" * 50_000 + "]" * 50_000)
    assert_bad_input(run("check", "--old", old_file, "--new", str(bad)), "nests too deeply")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["check", "--new", "x.json"], ("--old is required",)),
        (["check", "--old", "-", "--new", "-"], ("only one of --old and --new can be stdin",)),
        (["check", "--old", "a", "--new", "b", "--live"], ("do not also pass --old",)),
        (["check", "--old", "a"], ("--new",)),
        (["check", "--old", "a", "--new", "b", "--bogus"], ("unrecognized arguments: --bogus",)),
        (["check", "--old", "a", "--new", "b", "-o", "xml"], ("invalid choice: 'xml'",)),
        (["--bogus"], ()),
        ([], ("command",)),
        (["frobnicate"], ("invalid choice",)),
        (["certs", "--out", "x"], ("--service", "--namespace")),
        (["certs", "--out", "x", "--service", "s", "--namespace", "n", "--days", "x"], ("days",)),
    ],
    ids=[
        "no --old",
        "two stdins",
        "--live with --old",
        "no --new",
        "unknown flag",
        "bad --output",
        "unknown global flag",
        "no command",
        "unknown command",
        "certs without required flags",
        "certs --days not a number",
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], fragments: tuple[str, ...]) -> None:
    assert_bad_input(run(*args), *fragments)


def test_help_exits_0() -> None:
    result = run("check", "--help")
    assert result.returncode == 0
    assert "--old" in result.stdout
    assert "--live" in result.stdout


def test_live_without_a_cluster_is_bad_input(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not: a kubeconfig\n")
    env = clean_env()
    env["KUBECONFIG"] = str(kubeconfig)
    result = run(
        "check",
        "--live",
        "--new",
        str(EXAMPLE_POD_FILE),
        "--kubeconfig",
        str(kubeconfig),
        env=env,
    )
    assert_bad_input(result, "kubeconfig")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connections to it are refused


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--live", "--new", str(EXAMPLE_POD_FILE)],
        ["policy", "--live"],
        ["policy", "--check", "--live"],
    ],
    ids=["check --live", "policy --live", "policy --check --live"],
)
def test_an_unreachable_cluster_is_an_error_not_a_verdict(tmp_path: Path, args: list[str]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{closed_port()}"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    result = run(*args, "--kubeconfig", str(kubeconfig))
    assert_bad_input(result, "cannot reach the API server at", server)


def test_live_needs_a_name(tmp_path: Path) -> None:
    pod = example_pod()
    del pod["metadata"]["name"]
    result = run("check", "--live", "--new", write_json(tmp_path / "n.json", pod))
    assert_bad_input(result, "has no metadata.name")


class ScriptedCluster:
    """Answers check --live's reads and dry runs as the API server does, from a script of
    resourceVersions: the pod's version at each read, and the version it has reached by
    each dry run (a dry run naming another version is a Conflict, as is one whose
    manifest names another uid)."""

    def __init__(self, read_versions: list[str], dry_run_versions: list[str]) -> None:
        self.reads = iter(read_versions)
        self.current = iter(dry_run_versions)
        self.sent: list[str] = []
        self.uid = "uid-1"

    def read_pod(self, name: str, namespace: str) -> dict[str, Any]:
        version = next(self.reads)
        return {"metadata": {"name": name, "resourceVersion": version, "uid": self.uid}}

    def dry_run_replace(self, manifest: dict[str, Any], name: str, namespace: str) -> DryRun:
        sent = manifest["metadata"]["resourceVersion"]
        self.sent.append(sent)
        uid = manifest["metadata"].get("uid")
        if int(sent) != int(next(self.current)) or (uid and uid != self.uid):
            raise PodChanged(f"pod {name} has changed")
        return DryRun(manifest)


def manifest_at(version: str | None, **metadata: str) -> dict[str, Any]:
    named = {"resourceVersion": version} if version is not None else {}
    return {"kind": "Pod", "metadata": {"name": "p", **named, **metadata}}


def test_live_pins_an_unversioned_manifest_to_the_version_it_read() -> None:
    cluster = ScriptedCluster(["7"], ["7"])
    live, answer = _read_and_dry_run(cluster, manifest_at(None), "p", "ns")
    assert cluster.sent == ["7"]
    assert live["metadata"]["resourceVersion"] == answer.stored["metadata"]["resourceVersion"]


@pytest.mark.parametrize("version", ["", "0", "00"])
def test_live_takes_an_empty_or_zero_version_as_unversioned_as_the_api_server_does(
    version: str,
) -> None:
    cluster = ScriptedCluster(["7"], ["7"])
    _read_and_dry_run(cluster, manifest_at(version), "p", "ns")
    assert cluster.sent == ["7"]


def test_live_reads_again_when_the_pod_changes_before_the_dry_run() -> None:
    # The kubelet writes status between the read and the dry run, twice.
    cluster = ScriptedCluster(["7", "8", "9"], ["8", "9", "9"])
    live, _ = _read_and_dry_run(cluster, manifest_at(None), "p", "ns")
    assert cluster.sent == ["7", "8", "9"]
    assert live["metadata"]["resourceVersion"] == "9"


def test_live_gives_up_on_a_pod_that_changes_on_every_try() -> None:
    versions = [str(v) for v in range(1, LIVE_ATTEMPTS + 2)]
    cluster = ScriptedCluster(versions[:-1], versions[1:])
    with pytest.raises(UsageError, match=f"each of {LIVE_ATTEMPTS} tries"):
        _read_and_dry_run(cluster, manifest_at(None), "p", "ns")
    assert len(cluster.sent) == LIVE_ATTEMPTS


def test_live_calls_an_older_version_stale_without_a_dry_run() -> None:
    cluster = ScriptedCluster(["9"], [])
    with pytest.raises(UsageError, match="has changed since the manifest was read"):
        _read_and_dry_run(cluster, manifest_at("7"), "p", "ns")
    assert cluster.sent == []


def test_live_calls_a_manifest_stale_when_the_pod_moves_on_before_the_dry_run() -> None:
    cluster = ScriptedCluster(["7"], ["8"])
    with pytest.raises(UsageError, match="has changed since the manifest was read"):
        _read_and_dry_run(cluster, manifest_at("7"), "p", "ns")
    assert cluster.sent == ["7"]


def test_live_replaces_a_current_versioned_manifest_as_written() -> None:
    cluster = ScriptedCluster(["007"], ["7"])
    _read_and_dry_run(cluster, manifest_at("7"), "p", "ns")
    assert cluster.sent == ["7"]


def test_live_reads_again_when_the_manifest_is_newer_than_its_read() -> None:
    # Read at 7, the manifest was read at 8 by someone else: judged against version 8.
    cluster = ScriptedCluster(["7", "8"], ["8", "8"])
    live, _ = _read_and_dry_run(cluster, manifest_at("8"), "p", "ns")
    assert live["metadata"]["resourceVersion"] == "8"
    assert cluster.sent == ["8", "8"]


def test_live_names_a_pod_created_again_and_does_not_retry() -> None:
    cluster = ScriptedCluster(["7"], [])
    with pytest.raises(UsageError, match="uid differs"):
        _read_and_dry_run(cluster, manifest_at(None, uid="uid-0"), "p", "ns")
    assert cluster.sent == []


@pytest.mark.parametrize("version", ["abc", "-1", " 7", "+7", "1_0", "1" * 21])
def test_live_refuses_a_version_the_api_server_cannot_parse(version: str) -> None:
    with pytest.raises(UsageError, match="resourceVersion must be a string of digits"):
        _read_and_dry_run(ScriptedCluster(["7"], ["7"]), manifest_at(version), "p", "ns")


@pytest.mark.parametrize("version", [7, True, [], {}])
def test_live_refuses_a_version_that_is_not_a_string(version: object) -> None:
    manifest: dict[str, Any] = {"metadata": {"name": "p", "resourceVersion": version}}
    with pytest.raises(UsageError, match="resourceVersion must be a string"):
        _read_and_dry_run(ScriptedCluster(["7"], ["7"]), manifest, "p", "ns")


# --- certs ----------------------------------------------------------------------------------------


def test_certs_writes_files_and_prints_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    args = ["certs", "--out", str(out), "--service", "prg", "--namespace", "ns"]
    result = run(*args, "--host", "prg.example.com", "--ip", "10.1.2.3")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert sorted(path.name for path in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    bundle = result.stdout.strip()
    assert result.stdout == bundle + "\n"
    assert base64.b64decode(bundle, validate=True) == (out / "ca.crt").read_bytes()
    assert (out / "tls.key").stat().st_mode & 0o777 == 0o600
    assert (out / "ca.key").stat().st_mode & 0o777 == 0o600
    # a second run keeps the CA, so the bundle is the same
    again = run(*args)
    assert again.returncode == 0
    assert again.stdout == result.stdout
    renewed = run(*args, "--new-ca")
    assert renewed.returncode == 0
    assert renewed.stdout != result.stdout


def test_certs_bad_ip_is_bad_input(tmp_path: Path) -> None:
    result = run(
        "certs", "--out", str(tmp_path), "--service", "s", "--namespace", "n", "--ip", "nope"
    )
    assert_bad_input(result, "--ip", "'nope' is not an IP address")


def test_certs_unwritable_directory_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("certs", "--out", str(blocker / "sub"), "--service", "s", "--namespace", "n")
    assert_bad_input(result, "cannot write to")


def test_certs_corrupt_ca_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("junk")
    (tmp_path / "ca.key").write_text("junk")
    result = run("certs", "--out", str(tmp_path), "--service", "s", "--namespace", "n")
    assert_bad_input(result, "not a PEM certificate/key")


def test_client_cert_writes_an_api_server_identity(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    out = tmp_path / "client"
    result = run("client-cert", "--out", str(out), "--name", "kube-apiserver")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out / 'client-ca.crt'}\n"
    names = sorted(path.name for path in out.iterdir())
    assert names == ["client-ca.crt", "client-ca.key", "client.crt", "client.key"]
    for key in ("client.key", "client-ca.key"):
        assert (out / key).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((out / "client-ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "client.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    again = run("client-cert", "--out", str(out))
    assert again.returncode == 0
    reused = x509.load_pem_x509_certificate((out / "client-ca.crt").read_bytes())
    assert reused.serial_number == ca.serial_number, "the client CA is reused"


def test_client_cert_corrupt_ca_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "client-ca.crt").write_text("junk")
    (tmp_path / "client-ca.key").write_text("junk")
    result = run("client-cert", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


# --- serve: configuration errors stop start-up ----------------------------------------------------


def test_serve_with_a_bad_prg_mode_exits_2_naming_it(tmp_path: Path) -> None:
    env = clean_env()
    env["PRG_MODE"] = "block-everything"
    result = run("serve", "--cert-dir", str(tmp_path / "certs"), "--bind", "127.0.0.1:0", env=env)
    line = assert_bad_input(result, "PRG_MODE")
    assert line.startswith(PROG + ": error: PRG_MODE: ")
    assert not (tmp_path / "certs").exists()  # stopped before generating certificates


def test_serve_with_an_unknown_prg_variable_exits_2(tmp_path: Path) -> None:
    env = clean_env()
    env["PRG_MOOD"] = "enforce"
    result = run("serve", "--cert-dir", str(tmp_path / "certs"), env=env)
    assert_bad_input(result, "PRG_MOOD: unknown setting")


def test_serve_with_a_bad_flag_value_exits_2(tmp_path: Path) -> None:
    result = run("serve", "--cert-dir", str(tmp_path / "certs"), "--workers", "0")
    assert_bad_input(result, "--workers: ")


def test_serve_with_a_bad_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mode: sometimes\n")
    result = run("serve", "--cert-dir", str(tmp_path / "certs"), "--config", str(config))
    assert_bad_input(result, "mode: must be one of")


def _unreachable_kubeconfig(tmp_path: Path) -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": SECRET}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return str(path)


def test_controller_once_without_an_api_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """urllib3 logged three 'Retrying ...' warnings per attempt (a second apart) before
    the one line: the init container's log was mostly noise."""
    env = {**clean_env(), "PRG_CERT_SECRET": "certs", "PRG_CERT_DIR": str(tmp_path / "certs")}
    kubeconfig = _unreachable_kubeconfig(tmp_path)
    result = run("controller", "--once", "--timeout", "2", "--kubeconfig", kubeconfig, env=env)
    line = assert_bad_input(result, "certificates not ready after 2 s")
    assert SECRET not in line


@pytest.mark.parametrize("timeout", ["nan", "-1", "0", "inf", "ten"])
def test_controller_once_timeout_must_be_a_positive_number(timeout: str) -> None:
    """--timeout nan never gave up (no time is >= nan)."""
    assert_bad_input(run("controller", "--once", "--timeout", timeout), "--timeout")
