"""hack/kind/conformance/report.py: the counts of an upstream e2e run from ginkgo's JSON
report, and the comparison of the runs with and without the webhook."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "kind" / "conformance" / "report.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance_report", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


report = _module()


def _spec(text: str, state: str, message: str = "", kind: str = "It") -> dict[str, Any]:
    return {
        "ContainerHierarchyTexts": ["[sig-apps] Job"],
        "LeafNodeText": text,
        "LeafNodeType": kind,
        "State": state,
        "RunTime": 2_000_000_000,
        "Failure": {"Message": message} if message else {},
    }


def _report(*specs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"RunTime": 125_000_000_000, "SpecReports": list(specs)}]


def test_counts_leave_out_specs_the_filter_did_not_select() -> None:
    counts = report.count(
        _report(
            _spec("a", "passed"),
            _spec("b", "failed", "boom\nstack"),
            _spec("c", "skipped", "needs a provider"),
            _spec("d", "skipped"),  # filtered out: no message
            _spec("e", "pending"),
            _spec("f", "timedout", "too slow"),
            _spec("", "passed", kind="SynchronizedBeforeSuite"),
        )
    )
    assert counts.run == 4
    assert [s.name for s in counts.passed] == ["[sig-apps] Job a"]
    assert [s.name for s in counts.failed] == ["[sig-apps] Job b", "[sig-apps] Job f"]
    assert [s.name for s in counts.skipped] == ["[sig-apps] Job c"]
    assert counts.line() == "run 4, passed 1, failed 2, skipped 1, time 2m05s"


def test_summary_names_each_failure_by_its_first_line() -> None:
    counts = report.count(_report(_spec("b", "failed", "boom\nstack")))
    text = report.summary_text(counts, "t")
    assert "FAILED [sig-apps] Job b\n    boom" in text
    assert "stack" not in text


def test_compare_lists_differences_and_fails_only_on_a_regression() -> None:
    with_ = report.count(_report(_spec("a", "passed"), _spec("b", "failed", "denied")))
    without = report.count(_report(_spec("a", "passed"), _spec("b", "passed")))
    assert report.differences(with_, without) == [("[sig-apps] Job b", "failed", "passed")]
    assert report.regressions(with_, without) == ["[sig-apps] Job b"]
    assert report.regressions(without, with_) == []
    text = report.compare_text(with_, without)
    assert "specs whose outcome differs: 1" in text
    assert "[sig-apps] Job b: failed with the webhook, passed without" in text


@pytest.mark.parametrize(
    ("states", "code"),
    [(["passed"], 0), (["passed", "failed"], 1), (["skipped"], 0), ([""], 1)],
)
def test_summary_exit_code(tmp_path: Path, states: list[str], code: int) -> None:
    path = tmp_path / "report.json"
    # "" stands for a spec the filter left out (skipped, no message): nothing ran.
    specs = [_spec(s, s or "skipped", "" if s in {"passed", ""} else s) for s in states]
    path.write_text(json.dumps(_report(*specs)))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "summary", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.startswith("conformance: run ")


def test_compare_command(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report(_spec("x", "passed"))))
    b.write_text(json.dumps(_report(_spec("x", "passed"))))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "specs whose outcome differs: 0" in result.stdout


DENIED = (
    'failed to update pod "adopt-release-x": admission webhook "pods.pod-replace-guard.io" '
    "denied the request: pod updates may not change these fields: {fields}. Only these "
    "fields may be updated: metadata.labels, metadata.annotations"
)
REFUSALS = {"[sig-apps] Job adopt": "metadata.ownerReferences"}


def test_a_refusal_counts_only_on_the_denial_of_its_field() -> None:
    refused = report.Spec(
        "[sig-apps] Job adopt", "failed", DENIED.format(fields="metadata.ownerReferences"), 1
    )
    assert report.is_refusal(refused, REFUSALS)
    other_field = report.Spec(
        refused.name, "failed", DENIED.format(fields="metadata.finalizers"), 1
    )
    more_fields = report.Spec(
        refused.name,
        "failed",
        DENIED.format(fields="metadata.ownerReferences, spec.nodeName"),
        1,
    )
    timed_out = report.Spec(refused.name, "failed", "timed out waiting for the condition", 1)
    unlisted = report.Spec("[sig-apps] Job other", "failed", refused.message, 1)
    for spec in (other_field, more_fields, timed_out, unlisted):
        assert not report.is_refusal(spec, REFUSALS), spec


def test_compare_explains_a_listed_refusal_and_fails_when_it_does_not_happen() -> None:
    message = DENIED.format(fields="metadata.ownerReferences")
    job = {"ContainerHierarchyTexts": ["[sig-apps] Job"], "LeafNodeText": "adopt"}
    with_ = report.count(_report({**_spec("", "failed", message), **job}))
    without = report.count(_report({**_spec("", "passed"), **job}))
    assert report.regressions(with_, without, REFUSALS) == []
    assert report.unexpected_failures(with_, REFUSALS) == []
    text = report.compare_text(with_, without, REFUSALS)
    assert "(deliberate refusal of metadata.ownerReferences)" in text
    assert "NOT EXPLAINED" not in text
    # Passing with the webhook, a listed refusal means the webhook did not refuse it.
    assert report.regressions(without, without, REFUSALS) == ["[sig-apps] Job adopt"]


def test_refusals_file(tmp_path: Path) -> None:
    path = tmp_path / "refusals.txt"
    path.write_text("# comment\n\nmetadata.ownerReferences\t[sig-apps] Job adopt\n")
    assert report.load_refusals(path) == REFUSALS
    assert report.load_refusals(tmp_path / "missing.txt") == {}
    listed = report.load_refusals(report.REFUSALS)
    assert listed == {
        "[sig-apps] Job should adopt matching orphans and release non-matching pods "
        "[Conformance]": "metadata.ownerReferences"
    }


def test_a_suite_level_failure_fails_the_count() -> None:
    before = _spec("", "failed", "cluster not ready", kind="SynchronizedBeforeSuite")
    after = _spec("", "passed", kind="SynchronizedAfterSuite")
    counts = report.count(_report(before, after, _spec("a", "skipped")))
    assert [(s.name, s.message) for s in counts.failed] == [
        ("[SynchronizedBeforeSuite]", "cluster not ready")
    ]
    assert report.unexpected_failures(counts, REFUSALS) == ["[SynchronizedBeforeSuite]"]
