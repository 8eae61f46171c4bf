"""Every name the docs give exists: repository paths, make targets, CLI flags, PRG_*.

The docs are README.md, docs/*.md and deploy/README.md. What counts as a name:

- a path: a code span, fenced-block word or link whose first segment is a directory the
  repository tracks (``webhook/worker.py``, ``deploy/components/client-auth``); in
  deploy/README.md also ``base/``, ``components/``, ``overlays/``, ``monitoring/``
  (relative to deploy/); a bare file name (``review.py``) must be some tracked file's
  name; a dotted module (``webhook.policy.answer_review``, ``benchmarks.render_docs``) must
  be a module of the tree;
- a make target: the word after ``make`` in a code span or block, against the Makefile;
- a flag: in a ``python -m webhook SUB`` (or ``pod-replace-guard SUB``) command, an
  option of SUB in the parser webhook.cli builds; any other ``--flag`` must be an
  option of some subcommand or one of the other tools' flags listed below;
- a ``PRG_*`` variable: a setting of webhook/settings.py (or PRG_CONFIG), or a knob the
  test suite reads.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from webhook.cli import build_parser
from webhook.settings import ENV_PREFIX, describe

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted(
    ["README.md", "deploy/README.md", *(str(p.relative_to(REPO)) for p in REPO.glob("docs/*.md"))]
)

# Flags of other programs that the docs show (kubectl, helm, curl, docker, pip, kind,
# kube-apiserver, kube-controller-manager, unshare, kustomize). A flag of ours that is
# renamed is not here, so it fails.
OTHER_TOOLS_FLAGS = frozenset(
    {
        "--admission-control-config-file",  # kube-apiserver
        "--use-service-account-credentials",  # kube-controller-manager
        "--build-arg",  # docker build
        "--privileged",  # docker run
        "--format",  # docker image inspect
        "--cacert",  # curl
        "--dry-run",  # kubectl
        "--server-side",  # kubectl apply
        "--bisect",  # benchmarks/policy_cost.py
        "--minimal",  # benchmarks/policy_cost.py
        "--force",  # kubectl delete
        "--grace-period",  # kubectl delete
        "--type",  # kubectl patch
        "--wait",  # helm
        "--set",  # helm
        "--reuse-values",  # helm
        "--render",  # helm template (chart README)
        "--strict",  # helm lint
        "--net",  # unshare
        "--no-index",  # pip
        "--no-unpack",  # kind / skopeo
        "--owner",  # gh attestation verify
        "--atomic",  # helm install (Helm 3)
        "--rollback-on-failure",  # helm install (Helm 4)
        "--procs",  # ginkgo (docs/kind.md, make conformance)
        "--label-filter",  # ginkgo
        "--focus",  # ginkgo
        "--provider",  # e2e.test of k8s.io/kubernetes
    }
)

# File names the docs use for the reader's own files (examples), not the repository's.
EXAMPLE_FILES = frozenset(
    {
        "pod.yaml",
        "pod.json",
        "live.yaml",
        "live.json",
        "OLD.json",
        "NEW.json",
        "admission.yaml",
        "webhook-kubeconfig.yaml",
        "my-overlay/kustomization.yaml",
        "results.json",  # BENCH_OUT=FILE's default name, benchmarks/results.json
        "deploy/pod-replace-guard",  # kubectl's resource/name, not a path
    }
)
# Directories whose files are generated (make run, make deploy), not tracked.
GENERATED_DIRS = ("certs/", ".venv/")

# ``python -m webhook SUB`` anywhere; the console script only where a command starts (the
# name is also the namespace's, the release's, the Deployment's).
WEBHOOK_COMMAND = re.compile(
    r"(?:(?:python3?|\.venv/bin/python|\$\(PY\)) -m webhook"
    r"|(?:^|(?<=\n)|(?<=[|;&]) ?)pod-replace-guard)"
    r"\s+(?P<sub>[a-z-]+)(?P<rest>[^\n|#`]*)"
)


@cache
def tracked() -> frozenset[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return frozenset(out.split())


@cache
def tracked_dirs() -> frozenset[str]:
    dirs: set[str] = set()
    for path in tracked():
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(dirs)


def exists(path: str) -> bool:
    path = path.rstrip("/")
    return path in tracked() or path in tracked_dirs()


def top_dirs() -> frozenset[str]:
    return frozenset(d for d in tracked_dirs() if "/" not in d)


def code_of(text: str) -> list[str]:
    """Fenced blocks and code spans, and link targets."""
    fenced = re.findall(r"```.*?```", text, re.DOTALL)
    rest = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    spans = [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", rest)]
    links = re.findall(r"\]\(([^)#\s]+)", rest)
    return fenced + spans + links


def doc_text(doc: str) -> str:
    return (REPO / doc).read_text(encoding="utf-8")


# --- paths -----------------------------------------------------------------------

PATH_WORD = re.compile(
    r"(?<![\w./~-])(\.?[\w][\w.-]*(?:/[\w.-]*)+|[\w-]+\.(?:py|ya?ml|sh|json|md|env))"
)
DEPLOY_RELATIVE = ("base", "components", "overlays", "monitoring")


def path_problems(doc: str, text: str) -> list[str]:
    problems = []
    for code in code_of(text):
        for found in PATH_WORD.findall(code):
            word = found.rstrip(".,;:")
            if (
                word in EXAMPLE_FILES
                or word.startswith(("http", "//", *GENERATED_DIRS))
                or "..." in word
            ):
                continue
            first = word.split("/", 1)[0]
            if "/" in word:
                if first in top_dirs():
                    ok = exists(word)
                elif doc == "deploy/README.md" and first in DEPLOY_RELATIVE:
                    ok = exists(f"deploy/{word}")
                else:
                    continue  # an API group, an image, a URL path, a host path
            else:
                ok = word in {Path(p).name for p in tracked()}
            if not ok:
                problems.append(f"{doc}: {word}")
    return problems


MODULE_WORD = re.compile(
    r"(?<![\w./-])((?:webhook|benchmarks|tests)(?:\.[a-z_][a-z0-9_]*)+)(?![A-Za-z0-9_])"
)


def module_problems(doc: str, text: str) -> list[str]:
    problems = []
    for code in code_of(text):
        for dotted in MODULE_WORD.findall(code):
            parts = dotted.split(".")
            # the longest prefix that is a module or package; at least one level down
            found = any(
                exists("/".join(parts[:i]) + ".py") or exists("/".join(parts[:i]))
                for i in range(2, len(parts) + 1)
            )
            if not found:
                problems.append(f"{doc}: {dotted}")
    return problems


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_the_docs_name_exists(doc: str) -> None:
    assert path_problems(doc, doc_text(doc)) == []


@pytest.mark.parametrize("doc", DOCS)
def test_every_module_the_docs_name_exists(doc: str) -> None:
    assert module_problems(doc, doc_text(doc)) == []


def test_a_renamed_file_is_caught() -> None:
    text = "The worker (`webhook/serving/worker.py`, `review.py`), `deploy/components/client-auth`."
    assert path_problems("README.md", text) == []
    renamed = text.replace("worker.py", "workers.py").replace("review.py", "reviewer.py")
    renamed = renamed.replace("client-auth", "client-authn")
    assert path_problems("README.md", renamed) == [
        "README.md: webhook/serving/workers.py",
        "README.md: reviewer.py",
        "README.md: deploy/components/client-authn",
    ]
    assert path_problems("deploy/README.md", "`components/network-policy/`") == []
    assert path_problems("deploy/README.md", "`components/net-policy/`") != []
    assert module_problems("README.md", "`webhook.policies.answer_review`") != []


# --- make targets ------------------------------------------------------------------


@cache
def make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^([a-z0-9][a-z0-9-]*):", text, re.MULTILINE))


def make_problems(doc: str, text: str) -> list[str]:
    problems = []
    for code in code_of(text):
        for line in code.splitlines():
            for match in re.finditer(r"(?:^|[\s;&(`])make\s+((?:[a-z0-9-]+\s*)+)", line):
                for target in match[1].split():
                    if target not in make_targets():
                        problems.append(f"{doc}: make {target}")
    return problems


@pytest.mark.parametrize("doc", DOCS)
def test_every_make_target_the_docs_name_exists(doc: str) -> None:
    assert make_problems(doc, doc_text(doc)) == []


def test_a_renamed_target_is_caught() -> None:
    assert make_problems("README.md", "`make kind-up image kind-load deploy`") == []
    assert make_problems("README.md", "```\nmake kind-start\n```") == ["README.md: make kind-start"]


# --- CLI flags ---------------------------------------------------------------------


@cache
def options() -> dict[str, frozenset[str]]:
    """Each subcommand's option strings, from the parser webhook.cli builds."""
    out: dict[str, frozenset[str]] = {}
    parser = build_parser()
    # The top-level options (--help, --version) as a command of their own, named "".
    out[""] = frozenset(o for a in parser._actions for o in a.option_strings)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = frozenset(o for a in sub._actions for o in a.option_strings)
    return out


def flag_problems(doc: str, text: str) -> list[str]:
    problems = []
    subcommands = options()
    every = frozenset().union(*subcommands.values())
    for code in code_of(text):
        for command in WEBHOOK_COMMAND.finditer(code):
            sub = command["sub"]
            if sub.startswith("-"):  # a top-level option: python -m webhook --version
                if sub not in subcommands[""]:
                    problems.append(f"{doc}: {sub}")
                continue
            if sub not in subcommands:
                problems.append(f"{doc}: no subcommand {sub!r}")
                continue
            for flag in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", command["rest"]):
                if flag not in subcommands[sub]:
                    problems.append(f"{doc}: {sub} {flag}")
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
        if flag not in every and flag not in OTHER_TOOLS_FLAGS:
            problems.append(f"{doc}: {flag}")
    return problems


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_the_docs_name_exists(doc: str) -> None:
    assert flag_problems(doc, doc_text(doc)) == []


def test_a_renamed_flag_is_caught() -> None:
    good = "`python -m webhook check --live --new pod.yaml -o json`"
    assert flag_problems("README.md", good) == []
    assert flag_problems("README.md", good.replace("--new ", "--manifest ")) == [
        "README.md: check --manifest",
        "README.md: --manifest",
    ]
    # a flag of another subcommand is not one of this one's
    assert flag_problems("README.md", "`python -m webhook check --new-ca`") == [
        "README.md: check --new-ca"
    ]
    assert flag_problems("README.md", "`python -m webhook chek --old a`") == [
        "README.md: no subcommand 'chek'"
    ]
    # the top-level options, in place of a subcommand
    assert flag_problems("README.md", "`python -m webhook --version`") == []
    assert flag_problems("README.md", "`python -m webhook --versions`") == [
        "README.md: --versions",
        "README.md: --versions",
    ]


# --- PRG_* variables ---------------------------------------------------------------


@cache
def prg_names() -> frozenset[str]:
    settings = {env for env, _, _, _ in describe()} | {ENV_PREFIX + "CONFIG"}
    # and the knobs the test suite reads from its environment (make fuzz, make soak)
    read = subprocess.run(
        ["git", "grep", "-ohE", r"environ(\.get\(|\[)\"PRG_[A-Z_]+\"", "--", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    knobs = set(re.findall(r"PRG_[A-Z_]+", read))
    return frozenset(settings | knobs)


def env_problems(doc: str, text: str) -> list[str]:
    return [
        f"{doc}: {name}"
        for name in re.findall(r"\bPRG_[A-Z][A-Z_]*[A-Z]\b(?!_?\*)", text)
        if name not in prg_names()
    ]


@pytest.mark.parametrize("doc", DOCS)
def test_every_prg_variable_the_docs_name_exists(doc: str) -> None:
    assert env_problems(doc, doc_text(doc)) == []


def test_a_renamed_variable_is_caught() -> None:
    assert env_problems("README.md", "`PRG_MAX_BODY_BYTES`, `PRG_EXEMPT_*`") == []
    assert env_problems("README.md", "`PRG_MAX_BODY_SIZE`") == ["README.md: PRG_MAX_BODY_SIZE"]
