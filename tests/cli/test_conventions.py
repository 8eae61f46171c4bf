"""The command line's conventions (README.md, "The command line"), through real
subprocesses: the exit-code table held to what each command does, one error line and
exit 2 for everything that is not a verdict (a cluster that is down, forbids or hangs),
flags checked where they enter, --version, -o, a closed pipe, Ctrl-C. (The README's
sample AdmissionReview is tests/docs/test_review_sample.py's.)
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_cli import PROG, assert_bad_input, clean_env, run, write_json
from tests.cli.test_policy_command import installed_policy
from tests.support.reviews import EXAMPLE_POD_FILE, example_pod

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


# --- the README's table of exit codes ------------------------------------------------------------


def exit_table() -> set[tuple[str, int]]:
    """(command, exit code) for each row of README.md's "Exit codes" table."""
    section = README.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    table = set()
    for row in rows:
        command, code = (cell.strip() for cell in row.strip("|").split("|")[:2])
        table.add((command.strip("`"), int(code)))
    return table


def documented_codes(command: str) -> set[int]:
    """The codes README.md documents for a command (``policy`` includes ``policy --check``)."""
    return {
        code
        for name, code in exit_table()
        if name in ("any", command) or name.startswith(command + " ")
    }


def _installed_policy(tmp_path: Path, drop: str | None = None) -> str:
    return str(installed_policy(tmp_path, drop))


def _pair(tmp_path: Path, edit: Callable[[dict[str, Any]], object]) -> list[str]:
    new = example_pod()
    edit(new)
    return ["--old", str(EXAMPLE_POD_FILE), "--new", write_json(tmp_path / "new.json", new)]


def _omit_defaults(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0].pop("imagePullPolicy", None)
    pod["spec"]["dnsPolicy"] = None


# How each documented (command, code) is produced here.
SCENARIOS: dict[tuple[str, int], Callable[[Path], list[list[str]]]] = {
    ("check", 0): lambda tmp: [
        ["check", "--old", str(EXAMPLE_POD_FILE), "--new", str(EXAMPLE_POD_FILE)]
    ],
    ("check", 1): lambda tmp: [["check", *_pair(tmp, lambda p: p["spec"].update(nodeName="n2"))]],
    ("check", 3): lambda tmp: [["check", *_pair(tmp, _omit_defaults)]],
    ("policy", 0): lambda tmp: [["policy"], ["policy", "-o", "json"]],
    ("policy --check", 0): lambda tmp: [["policy", "--check", "--policy", _installed_policy(tmp)]],
    ("policy --check", 1): lambda tmp: [
        [
            "policy",
            "--check",
            "--policy",
            _installed_policy(tmp, drop="io.k8s.api.core.v1.Container.workingDir"),
        ]
    ],
    ("certs", 0): lambda tmp: [
        ["certs", "--out", str(tmp / "c"), "--service", "s", "--namespace", "n"]
    ],
    ("client-cert", 0): lambda tmp: [["client-cert", "--out", str(tmp / "cc")]],
    ("any", 0): lambda tmp: [
        ["--version"],
        ["--help"],
        *([command, "--help"] for command in ("serve", "check", "certs", "client-cert", "policy")),
    ],
    ("any", 2): lambda tmp: [
        ["check", "--old", str(EXAMPLE_POD_FILE), "--new", str(tmp / "absent.json")],
        ["policy", "--check"],
        ["certs", "--out", str(tmp), "--service", "s", "--namespace", "n", "--days", "0"],
        ["client-cert", "--out", str(tmp), "--days", "-1"],
        ["serve", "--workers", "0", "--cert-dir", str(tmp / "certs")],
        ["frobnicate"],
    ],
}
# Produced elsewhere, by tests that start a server or interrupt a command.
ELSEWHERE = {
    ("serve", 0): "tests/process/test_worker.py",
    ("any", 130): "tests/cli/test_conventions.py",
}


def test_the_readme_table_documents_exactly_the_codes_tested() -> None:
    assert exit_table() == set(SCENARIOS) | set(ELSEWHERE)
    assert "server.process.wait(15) == 0" in (REPO / ELSEWHERE["serve", 0]).read_text()
    assert "== 130" in Path(__file__).read_text()


@pytest.mark.parametrize(("command", "code"), sorted(SCENARIOS))
def test_each_documented_exit_code_is_the_one_produced(
    tmp_path: Path, command: str, code: int
) -> None:
    for args in SCENARIOS[command, code](tmp_path):
        result = run(*args)
        assert result.returncode == code, (args, result.stdout[-300:], result.stderr)
        assert "Traceback" not in result.stderr
        if code == 2:
            assert_bad_input(result)
        else:
            assert result.stderr == ""


# --- the cluster does not answer -----------------------------------------------------------------


def kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0k3n"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


LIVE_COMMANDS = [
    ["check", "--live", "--new", str(EXAMPLE_POD_FILE)],
    ["policy", "--live"],
    ["policy", "--check", "--live"],
]


@pytest.mark.parametrize("args", LIVE_COMMANDS, ids=lambda args: " ".join(args[:3]))
def test_a_cluster_that_is_down_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    """It was an 80-line traceback and exit 1 ("denied", "misses a field")."""
    server = f"https://127.0.0.1:{closed_port()}"
    result = run(*args, "--kubeconfig", kubeconfig(tmp_path, server))
    assert_bad_input(result, f"cannot reach the API server at {server}: connection refused")


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 403
    body = b""

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[Callable[[int, bytes], str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(status: int, body: bytes) -> str:
        handler = type("Handler", (_Answer,), {"status": status, "body": body})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


FORBIDDEN = json.dumps(
    {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403}
).encode()


@pytest.mark.parametrize("args", LIVE_COMMANDS, ids=lambda args: " ".join(args[:3]))
def test_a_forbidden_answer_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], api_server: Callable[[int, bytes], str]
) -> None:
    config = kubeconfig(tmp_path, api_server(403, FORBIDDEN))
    assert_bad_input(run(*args, "--kubeconfig", config), "403 Forbidden")


@pytest.mark.parametrize("args", LIVE_COMMANDS, ids=lambda args: " ".join(args[:3]))
def test_an_answer_that_is_not_json_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], api_server: Callable[[int, bytes], str]
) -> None:
    config = kubeconfig(tmp_path, api_server(200, b"<html>a proxy's login page</html>"))
    assert_bad_input(run(*args, "--kubeconfig", config), "answered no JSON")


def test_a_timeout_names_itself() -> None:
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    from webhook.live import unreachable

    timeout = ReadTimeoutError(None, "/api/v1/namespaces/d/pods/p", "Read timed out.")  # type: ignore[arg-type]
    error = MaxRetryError(None, "/api/v1/namespaces/d/pods/p", timeout)  # type: ignore[arg-type]
    assert str(unreachable(error, "https://k:6443")) == (
        "cannot reach the API server at https://k:6443: timed out"
    )


def test_ctrl_c_while_waiting_for_the_cluster_exits_130(tmp_path: Path) -> None:
    """A server that accepts and never answers: Ctrl-C is one line and exit 130."""
    listener = socket.create_server(("127.0.0.1", 0))
    connected = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        connection, _ = listener.accept()
        held.append(connection)
        connected.set()

    threading.Thread(target=accept, daemon=True).start()
    config = kubeconfig(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}")
    # As from a terminal: a shell's background job (a CI script run with `&`) ignores
    # SIGINT, and a child started so keeps ignoring it; this one gets the default.
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "policy", "--live", "--kubeconfig", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert connected.wait(60), "the command never connected"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        for connection in held:
            connection.close()
        listener.close()
    assert process.returncode == 130
    assert stderr == f"{PROG}: error: interrupted\n"
    assert stdout == ""


# --- flags are checked where they enter ----------------------------------------------------------

CERTS = ["certs", "--service", "s", "--namespace", "n"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([*CERTS, "--days", "-5"], ("--days", "at least a minute")),
        ([*CERTS, "--days", "0"], ("--days", "at least a minute")),
        ([*CERTS, "--days", "nan"], ("--days",)),
        ([*CERTS, "--days", "inf"], ("--days",)),
        ([*CERTS, "--days", "1e9"], ("--days", "at most 3650")),
        ([*CERTS, "--days", "soon"], ("--days", "not a number of days")),
        ([*CERTS, "--days", "1e-300"], ("--days", "at least a minute")),
        ([*CERTS, "--days", "5_0"], ("--days", "not a number of days")),
        ([*CERTS, "--days", " 5 "], ("--days", "not a number of days")),
        (["client-cert", "--days", "-1"], ("--days", "at least a minute")),
        (["client-cert", "--days", "0"], ("--days", "at least a minute")),
        (["client-cert", "--name", ""], ("--name", "common name")),
        (["certs", "--service", "Bad_Name!", "--namespace", "n"], ("--service", "DNS-1123")),
        (["certs", "--service", "s", "--namespace", "Prod"], ("--namespace", "DNS-1123")),
        (["certs", "--service", "s" * 64, "--namespace", "n"], ("--service", "DNS-1123")),
        ([*CERTS, "--host", "bad host"], ("--host", "not a DNS name")),
        ([*CERTS, "--ip", "nope"], ("--ip", "not an IP address")),
    ],
)
def test_certificate_flags_are_checked_before_anything_is_written(
    tmp_path: Path, args: list[str], fragments: tuple[str, ...]
) -> None:
    out = tmp_path / "out"
    assert_bad_input(run(*args, "--out", str(out)), *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_a_fraction_of_a_day_and_wildcard_host_are_fine(tmp_path: Path) -> None:
    from cryptography import x509

    result = run(*CERTS, "--out", str(tmp_path), "--days", "0.5", "--host", "*.prg.example.com")
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 12 * 3600 <= lifetime.total_seconds() <= 12 * 3600 + 600
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "*.prg.example.com" in names.get_values_for_type(x509.DNSName)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["check", "--old", "a.json", "--new", "b.json", "--context", "prod"], "--context"),
        (["check", "--old", "a.json", "--new", "b.json", "--kubeconfig", "k"], "--kubeconfig"),
        (["policy", "--context", "prod"], "--context"),
        (["policy", "--kubeconfig", "k"], "--kubeconfig"),
        (["policy", "--policy", "p.yaml"], "--policy"),
        (["policy", "--check", "--policy", "p.yaml", "--mode", "warn"], "--mode"),
        (["policy", "--check", "--policy", "p.yaml", "--config", "c.yaml"], "--config"),
        (["policy", "--check", "--policy", "p.yaml", "--settings-env", "e"], "--settings-env"),
        (["policy", "-o", "text"], "-o text"),
    ],
)
def test_a_flag_that_does_not_apply_is_refused(args: list[str], flag: str) -> None:
    line = assert_bad_input(run(*args))
    assert line.startswith(f"{PROG}: error: {flag} ")


# --- --version and -o ----------------------------------------------------------------------------


def test_version_is_the_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert result.stdout == f"{PROG} {pyproject['project']['version']}\n"


def test_version_falls_back_to_pyproject_in_a_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from webhook import cli_support

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert cli_support.version() == pyproject["project"]["version"]


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_every_command_that_prints_takes_json_and_yaml(tmp_path: Path, output: str) -> None:
    def parsed(*args: str, code: int = 0) -> Any:
        result = run(*args, "-o", output)
        assert result.returncode == code, result.stderr
        if output == "json":
            assert result.stdout.count("\n") == 1
            return json.loads(result.stdout)
        return yaml.safe_load(result.stdout)

    pair = _pair(tmp_path, lambda p: p["spec"].update(nodeName="n2"))
    assert parsed("check", *pair, code=1)["violations"] == [{"path": "spec.nodeName"}]
    installed = _installed_policy(tmp_path)
    assert parsed("policy", "--check", "--policy", installed)["covered"] is True
    certs = parsed(*CERTS, "--out", str(tmp_path / "c"))
    assert set(certs) == {"caBundle", "dir", "reusedCA"}
    assert parsed("client-cert", "--out", str(tmp_path / "cc")) == {
        "clientCA": str(tmp_path / "cc" / "client-ca.crt")
    }
    if output == "yaml":
        assert [doc["kind"] for doc in yaml.safe_load_all(run("policy", "-o", "yaml").stdout)] == [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]


def test_unknown_has_its_own_answer_in_text_too(tmp_path: Path) -> None:
    result = run("check", *_pair(tmp_path, _omit_defaults))
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert lines[0] == "unknown: only fields the manifest omits differ:"
    assert "may not change" not in result.stdout
    assert "Only these fields may be updated" not in result.stdout
    assert any(line.startswith("cannot tell offline") for line in lines)


# --- a closed pipe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["policy"],
        ["check", "--old", str(EXAMPLE_POD_FILE), "--new", str(EXAMPLE_POD_FILE), "-o", "json"],
        ["--help"],
        ["--version"],
    ],
    ids=lambda args: " ".join(args[:3]),
)
def test_a_reader_that_went_away_ends_the_command_quietly(args: list[str]) -> None:
    """stdout is a real pipe whose read end is closed before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "webhook", *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 2


def test_policy_into_head_through_a_shell_pipe() -> None:
    """`policy | head -n 1`: the policy is ~150 KB, far more than a pipe holds."""
    command = f"set -o pipefail; {sys.executable} -m webhook policy | head -n 1"
    result = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.stdout.startswith("# Generated by `pod-replace-guard policy`")
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""
    assert result.returncode == 2


# --- the import cycle is gone --------------------------------------------------------------------


def test_policy_command_does_not_import_the_cli() -> None:
    code = "import sys, webhook.policy_command; print('webhook.cli' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean_env()
    )
    assert result.stdout == "False\n"


def test_serve_that_cannot_bind_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    """gunicorn stops its master with sys.exit(1) (after retrying the bind for ~5 s):
    the command says so in its one line, exit 2, rather than exiting 1, which the
    table does not document for serve."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("serve", "--bind", f"127.0.0.1:{port}", "--cert-dir", str(tmp_path / "c"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"{PROG}: error: the server stopped: gunicorn exit status 1 (its log says why)"
    )


def test_a_read_that_timed_out_is_not_waited_out_again(tmp_path: Path) -> None:
    """urllib3 retries a read timeout three times by default: four timeouts (2 to 4
    minutes) before the error line. The live client tries a read once."""
    from webhook.live import kube_api_client

    api = kube_api_client(kubeconfig(tmp_path, "https://127.0.0.1:1"), None)
    assert api.configuration.retries.read == 0
    assert api.configuration.host == "https://127.0.0.1:1"


def test_a_yaml_alias_is_refused_before_it_can_expand() -> None:
    """A 600-byte "billion laughs" of nested aliases ran for hours past Ctrl-C."""
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 13)]
    pod = yaml.safe_dump(example_pod()) + "\n".join(laughs) + "\n"
    result = run("check", "--old", "-", "--new", str(EXAMPLE_POD_FILE), stdin=pod)
    assert_bad_input(result, "stdin uses a YAML alias")


def test_a_full_disk_is_an_input_output_error_not_a_bug() -> None:
    with open(os.devnull if not os.path.exists("/dev/full") else "/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "webhook", "policy"], stdout=full, stderr=subprocess.PIPE,
            text=True, env=clean_env(), timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"{PROG}: error: input/output error: No space left on device\n"


def test_a_settings_env_line_that_is_not_key_value_is_named_not_shown(tmp_path: Path) -> None:
    env = tmp_path / "settings.env"
    env.write_text("# a comment\nDB_PASSWORD s3cr3t-XYZ\n")
    result = run("policy", "--settings-env", str(env))
    assert "s3cr3t" not in result.stderr
    assert_bad_input(result, "line 2 is not KEY=VALUE")
