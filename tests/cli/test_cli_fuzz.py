"""Fuzz the command line as a user meets it: random flags, values and files for every
subcommand, each run as a real subprocess. None may print a traceback, exit with a code
README.md's table does not document for it, or say more than one line when it fails.

Each example starts a Python process, so the budget is small by default (30 per
subcommand); ``PRG_FUZZ_EXAMPLES`` or ``FUZZ_EXAMPLES`` raises it (``make fuzz``), as
in tests/unit/fuzzing.py. ``serve`` is fuzzed only where it cannot start a server: an
unknown ``PRG_`` variable in its environment stops it before anything is served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.test_cli import PROG, SECRET, clean_env
from tests.cli.test_conventions import closed_port, documented_codes, kubeconfig
from tests.support.reviews import example_pod


def _budget() -> int:
    raw = os.environ.get("PRG_FUZZ_EXAMPLES") or os.environ.get("FUZZ_EXAMPLES") or "30"
    return max(1, int(raw))


CLI_FUZZ = settings(
    max_examples=_budget(),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _files(directory: Path) -> dict[str, str]:
    """Inputs a user might pass, good and bad, by name -> path."""
    pod = example_pod()
    pod["spec"]["containers"][0]["env"][0]["value"] = SECRET
    moved = json.loads(json.dumps(pod))
    moved["spec"]["nodeName"] = "node-2"
    other = json.loads(json.dumps(pod))
    other["metadata"]["name"] = "another-pod"
    kindless = json.loads(json.dumps(pod))
    del kindless["kind"]
    contents: dict[str, bytes] = {
        "pod.json": json.dumps(pod).encode(),
        "moved.yaml": yaml.safe_dump(moved).encode(),
        "other.json": json.dumps(other).encode(),
        "kindless.json": json.dumps(kindless).encode(),
        "service.yaml": b"kind: Service\napiVersion: v1\nmetadata: {name: s}\n",
        "list.json": b"[1, 2]",
        "scalar.yaml": b"just words\n",
        "empty.yaml": b"",
        "two.yaml": b"kind: Pod\n---\nkind: Pod\n",
        "broken.yaml": b"{a: [b\n",
        "binary.bin": b"\xff\xfe\x00\x01",
        "deep.yaml": b"[" * 20_000 + b"]" * 20_000,
        "nulls.json": json.dumps({"kind": "Pod", "apiVersion": "v1", "metadata": None}).encode(),
        "weird.json": json.dumps(
            {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}, "spec": [1, {"a": 2}]}
        ).encode(),
        "schema.json": b'{"components": {"schemas": {}}}',
        "vap.yaml": b"kind: ValidatingAdmissionPolicy\nmetadata: {name: x}\n",
        "settings.env": b"PRG_MODE=warn\n",
        "bad.env": b"no equals sign\n",
        "config.yaml": b"mode: sometimes\n",
        "kubeconfig-junk": b"not: a kubeconfig\n",
    }
    paths = {}
    for name, content in contents.items():
        path = directory / name
        path.write_bytes(content)
        paths[name] = str(path)
    paths["kubeconfig"] = kubeconfig(directory, f"https://127.0.0.1:{closed_port()}")
    paths["missing"] = str(directory / "absent.json")
    paths["directory"] = str(directory)
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _files(tmp_path_factory.mktemp("cli-fuzz"))


# Text a flag might get: never NUL (argv cannot hold it), never an absolute path or a
# way out of the scratch directory (certs --out writes there).
SAFE_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00/\\~"),
    max_size=20,
).filter(lambda text: ".." not in text)

LITERALS = [
    "", "-", "--", "0", "-1", "-5", "0.5", "1e9", "nan", "inf", "x", "Bad_Name!",
    "a" * 70, "json", "yaml", "text", "xml", "enforce", "warn", "audit", "block",
    "127.0.0.1:0", "1.2", "1.3", "::1", "not-an-ip", "prg.example.com", "*.example.com",
    "kube-system", "out-dir",
]  # fmt: skip

POD_FILES = [
    "@pod.json", "@moved.yaml", "@other.json", "@kindless.json", "@service.yaml", "@list.json",
    "@scalar.yaml", "@empty.yaml", "@two.yaml", "@broken.yaml", "@binary.bin", "@deep.yaml",
    "@nulls.json", "@weird.json", "@missing", "@directory", "-",
]  # fmt: skip
DAYS = ["365", "0.5", "0", "-1", "-5", "nan", "inf", "1e9", "3650", "3651", "x", ""]
OUTPUTS = ["text", "json", "yaml", "xml", ""]
NAMES = ["prg", "kube-system", "Bad_Name!", "a" * 70, "", "-x", "UPPER", "a.b"]
KUBECONFIGS = ["@kubeconfig", "@kubeconfig-junk", "@missing", "@pod.json"]

# Each command's flags: None for a switch, else the values a user would plausibly pass
# ("@name" is one of the files). True marks the flags the command requires.
SPEC: dict[str, dict[str, tuple[bool, list[str] | None]]] = {
    "check": {
        "--old": (True, POD_FILES),
        "--new": (True, POD_FILES),
        "--live": (False, None),
        "--kubeconfig": (False, KUBECONFIGS),
        "--context": (False, ["x", "absent"]),
        "-o": (False, OUTPUTS),
    },
    "certs": {
        "--out": (True, ["out", "out/sub", "@pod.json", ""]),
        "--service": (True, NAMES),
        "--namespace": (True, NAMES),
        "--host": (False, ["prg.example.com", "*.example.com", "bad host", "", "a" * 300]),
        "--ip": (False, ["10.0.0.1", "::1", "not-an-ip", ""]),
        "--new-ca": (False, None),
        "--days": (False, DAYS),
        "-o": (False, OUTPUTS),
    },
    "client-cert": {
        "--out": (True, ["out", "@pod.json", ""]),
        "--name": (False, ["kube-apiserver", "", "a" * 70, "\u00fc", "line\nbreak"]),
        "--days": (False, DAYS),
        "-o": (False, OUTPUTS),
    },
    "policy": {
        "--schema": (False, ["@schema.json", "@pod.json", "@missing", "@broken.yaml"]),
        "--live": (False, None),
        "--kubeconfig": (False, KUBECONFIGS),
        "--context": (False, ["x"]),
        "--config": (
            False,
            ["@config.yaml", "@missing", "@list.json", "@binary.bin", "@deep.yaml"],
        ),
        "--settings-env": (False, ["@settings.env", "@bad.env", "@missing", "@binary.bin"]),
        "--mode": (False, ["enforce", "warn", "audit", "block", ""]),
        "--name": (False, ["pod-replace-guard", "x", "Bad_Name!", "a/b", ""]),
        "--check": (False, None),
        "--policy": (False, ["@vap.yaml", "@pod.json", "@missing", "-", "@deep.yaml"]),
        "-o": (False, OUTPUTS),
    },
    "serve": {
        "--bind": (False, ["127.0.0.1:0", "nonsense", ""]),
        "--cert-dir": (False, ["certs", "@pod.json"]),
        "--client-ca": (False, ["@missing", "@pod.json"]),
        "--config": (False, ["@config.yaml", "@missing", "@binary.bin", "@deep.yaml"]),
        "--mode": (False, ["enforce", "block"]),
        "--workers": (False, ["1", "0", "x"]),
        "--threads": (False, ["1", "-1"]),
        "--tls-min-version": (False, ["1.2", "1.3", "1.0"]),
        "--help": (False, None),
    },
    "": {"--version": (False, None), "--help": (False, None), "-h": (False, None)},
}
ALL_FLAGS = sorted({flag for flags in SPEC.values() for flag in flags} | {"--bogus", "-x"})


def _chance(draw: st.DrawFn, percent: int) -> bool:
    return draw(st.sampled_from(range(100))) < percent


@st.composite
def invocations(draw: st.DrawFn, command: str, files: dict[str, str]) -> tuple[list[str], str]:
    """argv after ``python -m webhook`` and stdin's text: mostly well-formed (each flag
    with a value of its kind, good or bad), now and then a stray or unknown token."""
    anything = st.one_of(
        st.sampled_from(sorted(files.values())), st.sampled_from(LITERALS), SAFE_TEXT
    )
    groups: list[list[str]] = []
    for flag, (required, values) in SPEC[command].items():
        if not _chance(draw, 90 if required else 20):
            continue
        group = [flag]
        if values is not None:
            if _chance(draw, 85):
                value = draw(st.sampled_from(values))
                value = files[value[1:]] if value.startswith("@") else value
            else:
                value = draw(anything)
            group.append(value)
        groups.append(group)
    if _chance(draw, 10):
        groups.append([draw(anything)])
    if _chance(draw, 5):
        groups.append([draw(st.sampled_from(ALL_FLAGS))])
    argv = [command] if command else []
    for group in draw(st.permutations(groups)):
        argv.extend(group)
    stdin_choices = [Path(path) for path in files.values() if Path(path).is_file()]
    stdin_file = draw(st.sampled_from(stdin_choices))
    stdin = draw(
        st.one_of(
            st.just(stdin_file.read_bytes().decode("utf-8", "replace")),
            st.text(max_size=200),
        )
    )
    return argv, stdin


def run_fuzzed(
    argv: list[str], stdin: str, files: dict[str, str], extra_env: dict[str, str]
) -> None:
    env = {**clean_env(), "KUBECONFIG": files["kubeconfig"], **extra_env}
    with tempfile.TemporaryDirectory(prefix="cli-fuzz-") as scratch:
        env["HOME"] = scratch
        result = subprocess.run(
            [sys.executable, "-m", "webhook", *argv],
            input=stdin.encode("utf-8", "surrogatepass"),
            capture_output=True,
            cwd=scratch,
            env=env,
            timeout=60,
            check=False,
        )
    stdout = result.stdout.decode("utf-8", "replace")
    stderr = result.stderr.decode("utf-8", "replace")
    command = argv[0] if argv and argv[0] in SPEC else "any"
    context = f"argv={argv!r}\nexit={result.returncode}\nstderr={stderr[-2000:]}"
    assert "Traceback" not in stderr, context
    assert "unexpected" not in stderr, context  # main's last resort: a bug
    assert result.returncode in documented_codes(command), context
    if result.returncode == 2:
        assert stderr.endswith("\n"), context
        assert stderr.count("\n") == 1, context
        assert stderr.startswith(f"{PROG}: error: "), context
        assert stdout == "", context
    else:
        assert stderr == "", context
    assert SECRET not in stdout + stderr, context


@pytest.mark.parametrize("command", ["check", "certs", "client-cert", "policy"])
def test_fuzz_cli_never_crashes(command: str, files: dict[str, str]) -> None:
    @CLI_FUZZ
    @given(invocations(command, files))
    def fuzz(invocation: tuple[list[str], str]) -> None:
        run_fuzzed(*invocation, files, {})

    fuzz()


def test_fuzz_cli_serve_and_global_flags_never_crash(files: dict[str, str]) -> None:
    # PRG_FUZZ_GUARD is no setting: serve stops with exit 2 before it could serve.
    guard = {"PRG_FUZZ_GUARD": "1"}

    @CLI_FUZZ
    @given(st.sampled_from(["serve", ""]).flatmap(lambda command: invocations(command, files)))
    def fuzz(invocation: tuple[list[str], str]) -> None:
        run_fuzzed(*invocation, files, guard)

    fuzz()


def test_the_serve_guard_stops_serve_before_it_serves(files: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--bind", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env={**clean_env(), "PRG_FUZZ_GUARD": "1"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "PRG_FUZZ_GUARD: unknown setting" in result.stderr
