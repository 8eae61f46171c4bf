"""``make bench``: every benchmark, then benchmarks/results.json and a summary.

    python -m benchmarks.run                  # everything (12-15 minutes)
    BENCH_QUICK=1 python -m benchmarks.run    # the short run (under 2 minutes)
    python -m benchmarks.run decision http    # some sections only

Sections: decision (in process), http and memory (gunicorn over TLS on loopback, in a
private network namespace when one can be made), apiserver (a real kube-apiserver).
Environment: BENCH_QUICK=1 for the short run, BENCH_OUT=FILE to write elsewhere,
BENCH_KEEP=1 to keep the working directory (server logs) for inspection,
BENCH_NO_NETNS=1 to share the machine's loopback instead of a private namespace.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_FILE, log, machine_info, now_iso, quick

SECTIONS = ("decision", "http", "memory", "apiserver")

# (result path, comparison, limit, what it says)
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("http.ratio_vs_allow_all", ">=", 0.85, "judging costs little next to the framework"),
    ("http.ratio_vs_sync", ">=", 4.0, "gthread + keep-alive vs the sync worker"),
    ("http.p99_ms", "<=", 10.0, "p99 of the ~20 KB review, production workers, ~1/3 load"),
    ("apiserver.added_p50_ms", "<=", 2.0, "p50 a pod UPDATE pays for the webhook"),
    ("apiserver.ratio_vs_floor_p50", "<=", 1.25, "added p50 of ours / of the Go floor"),
    ("apiserver.ratio_vs_floor_p99", "<=", 1.5, "added p99 of ours / of the Go floor"),
    ("decision.per_kb_growth", "<=", 2.0, "per-KB decision cost constant within 2x, 1 KB-1 MB"),
    ("memory.growth_ratio", "<=", 1.1, "no memory growth over the long run"),
)


def lookup(results: dict[str, Any], path: str) -> Any:
    value: Any = results
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def evaluate_targets(results: dict[str, Any]) -> dict[str, Any]:
    verdicts: dict[str, Any] = {}
    for path, comparison, limit, meaning in TARGETS:
        value = lookup(results, path)
        holds: bool | None = None
        if isinstance(value, int | float) and not math.isnan(value):
            holds = value >= limit if comparison == ">=" else value <= limit
        verdicts[path] = {
            "target": f"{comparison} {limit:g}",
            "value": value,
            "holds": holds,
            "meaning": meaning,
        }
    return verdicts


def _run_sections(names: Sequence[str], work_dir: Path) -> dict[str, Any]:
    from benchmarks import apiserver, decision, isolated, request_path

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(name: str, function: Callable[[], dict[str, Any]]) -> None:
        started = time.monotonic()
        try:
            got = function()
        except Exception as error:  # one failed section must not hide the rest
            traceback.print_exc()
            errors[name] = f"{type(error).__name__}: {error}"
            return
        for key, value in got.items():
            if isinstance(value, dict):
                value.setdefault("seconds", round(time.monotonic() - started, 1))
            results[key] = value

    if "decision" in names:
        attempt(
            "decision",
            lambda: {"decision": {**decision.run(), "request_path": request_path.run(work_dir)}},
        )
    loopback = [name for name in ("http", "memory") if name in names]
    if loopback:
        budget = 600.0 if quick() else 2400.0
        attempt("+".join(loopback), lambda: isolated.run_sections(loopback, work_dir, budget))
    if "apiserver" in names:
        section_dir = work_dir / "apiserver"
        section_dir.mkdir(parents=True, exist_ok=True)
        attempt("apiserver", lambda: {"apiserver": apiserver.run(section_dir)})
    if errors:
        results["errors"] = errors
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    def show(path: str, unit: str = "") -> str:
        value = lookup(results, path)
        if value is None:
            return f"  {path:38s} -"
        return f"  {path:38s} {value}{unit}"

    lines = [
        f"pod-replace-guard benchmarks ({results['mode']}, {results['date']})",
        show("decision.us_per_kb", " us/KB"),
        show("decision.realistic_us", " us"),
        show("decision.ratio_vs_json_floor"),
        show("decision.ratio_vs_orjson_floor"),
        show("decision.per_kb_growth"),
        show("decision.request_path.allow_all_us", " us"),
        show("decision.request_path.webhook_us", " us"),
        show("decision.request_path.decision_log_us", " us"),
        show("http.rps", " req/s"),
        show("http.p99_ms", " ms"),
        show("http.p99_ms_at_100rps", " ms"),
        show("http.saturated_p99_ms", " ms"),
        show("http.ratio_vs_allow_all"),
        show("http.ratio_vs_go_floor"),
        show("http.allow_all_ratio_vs_go_floor"),
        show("http.cpu_ms_per_request.webhook", " ms"),
        show("http.cpu_ms_per_request.allow_all", " ms"),
        show("http.cpu_ms_per_request.go_floor", " ms"),
        show("http.sizing.rps_at_p99_limit", " req/s"),
        show("http.cpu_ratio_vs_allow_all"),
        show("http.ratio_vs_sync"),
        show("http.handshakes_per_request"),
        show("http.lopsided_runs"),
        show("http.server_cpu_ms_per_request", " ms"),
        show("http.rss_mib_per_worker", " MiB"),
        show("apiserver.added_p50_ms", " ms"),
        show("apiserver.added_p99_ms", " ms"),
        show("apiserver.floor_added_p50_ms", " ms"),
        show("apiserver.floor_added_p99_ms", " ms"),
        show("apiserver.ratio_vs_floor_p50"),
        show("apiserver.ratio_vs_floor_p99"),
        show("apiserver.ratio_vs_vap"),
        show("apiserver.vap_added_p50_ms", " ms"),
        show("apiserver.vap_minimal_added_p50_ms", " ms"),
        show("memory.growth_ratio"),
        "targets:",
    ]
    for path, verdict in results.get("targets", {}).items():
        state = {True: "holds", False: "MISSED", None: "not measured"}[verdict["holds"]]
        lines.append(f"  {path:38s} {verdict['value']} {verdict['target']}: {state}")
    for name, error in results.get("errors", {}).items():
        lines.append(f"  ERROR in {name}: {error}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    out = Path(os.environ.get("BENCH_OUT") or RESULTS_FILE)
    keep = os.environ.get("BENCH_KEEP", "") not in ("", "0")
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": now_iso(),
        "mode": "quick" if quick() else "full",
        "sections": names,
        "machine": machine_info(),
    }
    log(f"benchmarks ({results['mode']}): {', '.join(names)}")
    work = tempfile.mkdtemp(prefix="prg-bench-")
    try:
        results.update(_run_sections(names, Path(work)))
    finally:
        if keep:
            log(f"working directory kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    results["targets"] = evaluate_targets(results)
    results["seconds"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(summary_lines(results)))
    log(f"wrote {out} in {results['seconds']:.0f}s")
    return 1 if "errors" in results else 0


if __name__ == "__main__":
    raise SystemExit(main())
