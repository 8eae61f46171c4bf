#!/usr/bin/env python3
"""Counts of an upstream e2e run, from ginkgo's JSON report (`--json-report`).

    report.py summary REPORT.json [--title TEXT] [--refusals FILE]
        specs run, passed, failed, skipped and the time; each failed spec with the first
        line of its failure. Exit 1 when a spec failed (other than a deliberate refusal)
        or none ran.
    report.py compare WITH.json WITHOUT.json [--refusals FILE]
        the two runs side by side (with and without the webhook) and every spec whose
        outcome differs. Exit 1 when a spec that passed without the webhook did not pass
        with it, unless it is a deliberate refusal; and when a listed refusal did not
        happen with the webhook.

A deliberate refusal (--refusals FILE, by default refusals.txt beside this script) is a
spec whose change the seed's rules refuse on purpose, listed with the field: it counts as
one only when it failed on the webhook's denial of exactly that field.

The report lists every spec of the binary: those the focus and label filter left out are
"skipped" with no message, and are not counted; a spec that ran and skipped itself (a
missing feature, a provider it needs) is "skipped" with its reason, and counts as skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASSED = "passed"
SKIPPED = "skipped"
PENDING = "pending"


@dataclass(frozen=True)
class Spec:
    name: str
    state: str
    message: str
    seconds: float


@dataclass
class Counts:
    passed: list[Spec] = field(default_factory=list)
    failed: list[Spec] = field(default_factory=list)
    skipped: list[Spec] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def run(self) -> int:
        return len(self.passed) + len(self.failed) + len(self.skipped)

    def outcomes(self) -> dict[str, str]:
        out = {s.name: "passed" for s in self.passed}
        out.update({s.name: "failed" for s in self.failed})
        out.update({s.name: "skipped" for s in self.skipped})
        return out

    def line(self) -> str:
        return (
            f"run {self.run}, passed {len(self.passed)}, failed {len(self.failed)}, "
            f"skipped {len(self.skipped)}, time {format_seconds(self.seconds)}"
        )


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def specs(reports: list[dict[str, Any]]) -> list[Spec]:
    """The It specs of ginkgo's JSON report (a list of suite reports)."""
    out = []
    for report in reports:
        for spec in report.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It":
                continue
            texts = [*(spec.get("ContainerHierarchyTexts") or []), spec.get("LeafNodeText", "")]
            failure = spec.get("Failure") or {}
            out.append(
                Spec(
                    name=" ".join(t for t in texts if t),
                    state=str(spec.get("State", "")),
                    message=str(failure.get("Message", "")).strip(),
                    seconds=float(spec.get("RunTime", 0)) / 1e9,
                )
            )
    return out


def suite_failures(reports: list[dict[str, Any]]) -> list[Spec]:
    """Failed nodes that are not specs (BeforeSuite, AfterSuite, ReportAfterSuite...):
    ginkgo then fails the run, and so does the count."""
    out = []
    for report in reports:
        for node in report.get("SpecReports") or []:
            kind = str(node.get("LeafNodeType", ""))
            if kind == "It" or node.get("State") in {PASSED, SKIPPED, PENDING, None}:
                continue
            failure = node.get("Failure") or {}
            message = str(failure.get("Message", "")).strip()
            out.append(Spec(f"[{kind}]", str(node["State"]), message, 0.0))
    return out


def count(reports: list[dict[str, Any]]) -> Counts:
    counts = Counts(seconds=sum(float(r.get("RunTime", 0)) / 1e9 for r in reports))
    counts.failed.extend(suite_failures(reports))
    for spec in specs(reports):
        if spec.state == PENDING or (spec.state == SKIPPED and not spec.message):
            continue  # not selected by the focus and label filter
        if spec.state == PASSED:
            counts.passed.append(spec)
        elif spec.state == SKIPPED:
            counts.skipped.append(spec)
        else:  # failed, panicked, timedout, interrupted, aborted
            counts.failed.append(spec)
    return counts


REFUSALS = Path(__file__).with_name("refusals.txt")
DENIAL = "denied the request: pod updates may not change these fields: "


def load_refusals(path: Path | None) -> dict[str, str]:
    """Spec name -> the field the webhook refuses it, from lines ``FIELD<TAB>SPEC``."""
    if path is None or not path.exists():
        return {}
    out = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        field_path, _, name = line.partition("\t")
        out[name.strip()] = field_path.strip()
    return out


def is_refusal(spec: Spec, refusals: dict[str, str]) -> bool:
    """Failed on the webhook's denial of exactly the field listed for it."""
    field_path = refusals.get(spec.name)
    if field_path is None or DENIAL not in spec.message:
        return False
    denied = spec.message.split(DENIAL, 1)[1].split(". Only these", 1)[0]
    return [f.strip() for f in denied.split(",")] == [field_path]


def first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def summary_text(counts: Counts, title: str, refusals: dict[str, str] | None = None) -> str:
    refusals = refusals or {}
    lines = [f"{title}: {counts.line()}"]
    for s in counts.failed:
        what = "refused (deliberate)" if is_refusal(s, refusals) else "FAILED"
        lines.append(f"  {what} {s.name}\n    {first_line(s.message)}")
    lines += [f"  skipped {s.name}: {first_line(s.message, 160)}" for s in counts.skipped]
    return "\n".join(lines)


def differences(with_: Counts, without: Counts) -> list[tuple[str, str, str]]:
    """(spec, outcome with the webhook, outcome without) for every spec that differs."""
    a, b = with_.outcomes(), without.outcomes()
    return [
        (name, a.get(name, "not run"), b.get(name, "not run"))
        for name in sorted(set(a) | set(b))
        if a.get(name) != b.get(name)
    ]


def compare_text(with_: Counts, without: Counts, refusals: dict[str, str] | None = None) -> str:
    refusals = refusals or {}
    rows = [
        ("", "with the webhook", "without"),
        ("run", str(with_.run), str(without.run)),
        ("passed", str(len(with_.passed)), str(len(without.passed))),
        ("failed", str(len(with_.failed)), str(len(without.failed))),
        ("skipped", str(len(with_.skipped)), str(len(without.skipped))),
        ("time", format_seconds(with_.seconds), format_seconds(without.seconds)),
    ]
    lines = [f"  {a:<8} {b:>16} {c:>8}" for a, b, c in rows]
    diff = differences(with_, without)
    lines.append(f"  specs whose outcome differs: {len(diff)}")
    refused = {s.name for s in with_.failed if is_refusal(s, refusals)}
    for name, a, b in diff:
        why = f" (deliberate refusal of {refusals[name]})" if name in refused else ""
        lines.append(f"    {name}: {a} with the webhook, {b} without{why}")
    for name in regressions(with_, without, refusals):
        lines.append(f"  NOT EXPLAINED: {name}")
    return "\n".join(lines)


def unexpected_failures(counts: Counts, refusals: dict[str, str]) -> list[str]:
    return [s.name for s in counts.failed if not is_refusal(s, refusals)]


def regressions(
    with_: Counts, without: Counts, refusals: dict[str, str] | None = None
) -> list[str]:
    """Specs that passed without the webhook and did not pass with it, other than the
    deliberate refusals; and listed refusals that did not happen with the webhook."""
    refusals = refusals or {}
    a = with_.outcomes()
    refused = {s.name for s in with_.failed if is_refusal(s, refusals)}
    out = [s.name for s in without.passed if a.get(s.name) != "passed" and s.name not in refused]
    out += [name for name in refusals if name in a and name not in refused]
    return out


def load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else [data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary")
    summary.add_argument("report", type=Path)
    summary.add_argument("--title", default="conformance")
    summary.add_argument("--refusals", type=Path, default=REFUSALS)
    compare = sub.add_parser("compare")
    compare.add_argument("with_webhook", type=Path)
    compare.add_argument("without_webhook", type=Path)
    compare.add_argument("--refusals", type=Path, default=REFUSALS)
    args = parser.parse_args(argv)
    refusals = load_refusals(args.refusals)
    if args.command == "summary":
        counts = count(load(args.report))
        print(summary_text(counts, args.title, refusals))
        return 1 if unexpected_failures(counts, refusals) or counts.run == 0 else 0
    with_, without = count(load(args.with_webhook)), count(load(args.without_webhook))
    print(compare_text(with_, without, refusals))
    return 1 if regressions(with_, without, refusals) else 0


if __name__ == "__main__":
    sys.exit(main())
