# The templates below are Markdown: table rows cannot be wrapped, and ratios use the docs' multiplication sign.
# ruff: noqa: E501, RUF001
"""The benchmark figures in the docs, written from one source: benchmarks/results.json.

python -m benchmarks.render_docs            # rewrite the marked blocks in place
python -m benchmarks.render_docs --check    # exit 1 if a committed doc differs

A doc holds a figure block as

    <!-- figures:NAME -->
    ...generated text...
    <!-- /figures:NAME -->

(or inline, ``<!-- figures:NAME -->text<!-- /figures:NAME -->`` within a line), and
this module holds, for every NAME, the text between the markers. In a template
each figure is a placeholder naming one key of results.json by its dotted path and a
format: ``{apiserver.added_p50_ms:.1f}`` is ``results["apiserver"]["added_p50_ms"]``
with one decimal. Tables come from benchmarks/report.py. A number written out in a
template is never a measurement of the run in results.json: it is dated (a historical
note) or it is not a figure (a target, a size). tests/docs/test_figures.py fails when
a committed doc differs from what this module writes.
"""

from __future__ import annotations

import json
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.common import REPO, RESULTS_FILE

# Every file that may hold figure blocks (relative to the repository).
DOCS: tuple[str, ...] = ("README.md", "docs/benchmarks.md", "docs/operations.md")

BLOCK = re.compile(
    r"(?P<open><!-- figures:(?P<name>[a-z0-9-]+) -->\n?)(?P<body>.*?)(?P<close><!-- /figures:(?P=name) -->)",
    re.DOTALL,
)


class MissingFigure(KeyError):
    """A template names a key that results.json does not have."""


def lookup(results: Mapping[str, Any], path: str) -> Any:
    """``results`` at the dotted ``path`` (``http.cpu_ms_per_request.webhook``)."""
    value: Any = results
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            raise MissingFigure(f"results.json has no {path}")
    return value


class _Figures(string.Formatter):
    def __init__(self, results: Mapping[str, Any]) -> None:
        self.results = results
        self.used: list[str] = []

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        self.used.append(field_name)
        return lookup(self.results, field_name), field_name


def fill(template: str, results: Mapping[str, Any]) -> str:
    """``template`` with each ``{dotted.key:format}`` replaced by that figure."""
    return _Figures(results).format(template)


def keys_of(template: str) -> list[str]:
    """The results.json keys a template quotes, in order."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def _tables(lines: list[str]) -> list[list[str]]:
    """report.py's output split at its blank lines (one list per table)."""
    out: list[list[str]] = [[]]
    for line in lines:
        if line:
            out[-1].append(line)
        else:
            out.append([])
    return [table for table in out if table]


# --- the blocks -------------------------------------------------------------------

README_PERFORMANCE = """\
From `make bench` (the run of {date:.10}, `benchmarks/results.json`, on a shared
{machine.cores}-core VM; [docs/benchmarks.md](docs/benchmarks.md) has the method, every figure
and the targets that hold and that do not). The key of each figure is in parentheses:

- a decision on a realistic ~20 KB review costs **{decision.realistic_us:.0f} µs** of CPU in
  process (`decision.realistic_us`), {decision.ratio_vs_json_floor:.2f}× a plain `json.loads` of the
  same body (`decision.ratio_vs_json_floor`), and grows linearly with the pod's size (per-KB
  cost within {decision.per_kb_growth:.2f}× from 1 KB to 1 MB, `decision.per_kb_growth`);
- over TLS the server answers **{http.rps:,.0f} reviews/s** with two workers at saturation
  (`http.rps`), at **{http.cpu_ms_per_request.webhook:.2f} ms** of CPU per review against
  {http.cpu_ms_per_request.go_floor:.2f} ms for a minimal Go webhook measured beside it
  (`http.cpu_ms_per_request`), with **no new TLS handshakes** after the first connections
  ({http.handshakes_per_request:.5f} per request, `http.handshakes_per_request`; the `sync`
  worker pays one per request and serves {http.ratio_vs_sync:.1f}× fewer, `http.ratio_vs_sync`);
  one replica keeps p99 under 10 ms up to at least **{http.sizing.rps_at_p99_limit:,.0f}
  reviews/s**, the highest load tried (`http.sizing.rps_at_p99_limit`);
- through a real kube-apiserver a pod update costs **+{apiserver.added_p50_ms:.1f} ms p50** with
  the webhook (`apiserver.added_p50_ms`), against +{apiserver.floor_added_p50_ms:.1f} ms with the
  minimal Go webhook (`apiserver.floor_added_p50_ms`; ours is {apiserver.ratio_vs_floor_p50:.2f}×
  that, `apiserver.ratio_vs_floor_p50`) and +{apiserver.vap_added_p50_ms:.1f} ms with the generated
  ValidatingAdmissionPolicy (CEL, `apiserver.vap_added_p50_ms`);
- memory stays flat from 1k to 100k requests: {memory.growth_ratio:.3f}× (`memory.growth_ratio`),
  {http.rss_mib_per_worker:.1f} MiB RSS per worker (`http.rss_mib_per_worker`).
"""

README_POLICY_LATENCY = """\
Latency (the `apiserver` section of `make bench`, run of {date:.10}: a local
{apiserver.kubernetes} control plane, the configurations side by side in their own
namespaces, calls taking turns: {apiserver.rounds} rounds of {apiserver.sequential_per_round}
sequential label patches of a ~13 KB pod plus {apiserver.concurrent_threads} threads x
{apiserver.concurrent_per_thread}; 2 cores): added to an update's p50 by **the webhook
{apiserver.added_p50_ms:.1f} ms** (`apiserver.added_p50_ms`), by **the generated policy
{apiserver.vap_added_p50_ms:.1f} ms** (`apiserver.vap_added_p50_ms`; `apiserver.ratio_vs_vap`
{apiserver.ratio_vs_vap:.2f}), by a one-expression policy {apiserver.vap_minimal_added_p50_ms:.1f} ms
(`apiserver.vap_minimal_added_p50_ms`) and by a Go allow-all webhook
{apiserver.floor_added_p50_ms:.1f} ms (`apiserver.floor_added_p50_ms`); with
{apiserver.concurrent_threads} concurrent clients the webhook added
{apiserver.concurrent_added_p50_ms:.1f} ms (`apiserver.concurrent_added_p50_ms`) and the policy
{apiserver.concurrent_vap_added_p50_ms:.1f} ms (`apiserver.concurrent_vap_added_p50_ms`).
"""

README_POLICY_COST = (
    "~{decision.realistic_us:.0f} µs CPU per decision (~20 KB review), any pod size"
)

OPERATIONS_SIZING = """\
From `docs/benchmarks.md` (shared {machine.cores}-core VM, run of {date:.10},
`benchmarks/results.json`; orders of magnitude):

| figure | value | key in results.json |
|---|---|---|
| server CPU per ~20 KB review, saturated | {http.cpu_ms_per_request.webhook:.2f} ms | `http.cpu_ms_per_request.webhook` |
| server CPU per review at 100 req/s | {http.under_load.100rps.server_cpu_ms_per_request:.2f} ms | `http.under_load.100rps.server_cpu_ms_per_request` |
| one replica (2 workers) at p99 <= 10 ms | at least {http.sizing.rps_at_p99_limit:,.0f} reviews/s (the highest load tried) | `http.sizing.rps_at_p99_limit` |
| latency at ~a third of saturation ({http.p99_ms_load_rps:,.0f} reviews/s) | p50 {http.p50_ms:.2f} ms, p99 {http.p99_ms:.1f} ms | `http.p50_ms`, `http.p99_ms` |
| added to a pod update through kube-apiserver, p50 | +{apiserver.added_p50_ms:.1f} ms (a minimal Go webhook +{apiserver.floor_added_p50_ms:.1f} ms) | `apiserver.added_p50_ms`, `apiserver.floor_added_p50_ms` |
| memory per worker | {http.rss_mib_per_worker:.1f} MiB RSS ({http.table.webhook.large.worker_rss_mib:.1f} MiB after ~1 MB reviews) | `http.rss_mib_per_worker`, `http.table.webhook.large.worker_rss_mib` |
"""

BENCHMARKS_RUN = """\
Full run of {date:.16} UTC (`make bench`, `benchmarks/results.json`, `"mode":
"{mode}"`) on a {machine.cores}-core **{machine.cpu_model}** VM (Python {machine.python},
gunicorn {machine.packages.gunicorn}, Flask {machine.packages.flask}, orjson
{machine.packages.orjson}, {machine.openssl}, kube-apiserver {apiserver.kubernetes}), load
average {machine.load_average_at_start.0} at the start. Each figure is the median of
{http.rounds} rounds (HTTP, API server) or of {decision.rounds} interleaved turns (decision).
"""

BENCHMARKS_FLOOR = """\
Against the floor (same run, interleaved): the Go floor answers the ~20 KB review with
**{http.cpu_ms_per_request.go_floor:.2f} ms** of server CPU, the Flask allow-all with
{http.cpu_ms_per_request.allow_all:.2f} ms and pod-replace-guard with
**{http.cpu_ms_per_request.webhook:.2f} ms** (`http.cpu_ms_per_request`); at saturation we serve
{http.ratio_vs_go_floor:.2f}× the floor's requests/s (`http.ratio_vs_go_floor`; the Flask
allow-all {http.allow_all_ratio_vs_go_floor:.2f}×, `http.allow_all_ratio_vs_go_floor`), and
{http.ratio_vs_go_floor_large:.2f}× on the ~1 MB review (`http.ratio_vs_go_floor_large`; Go's
`encoding/json` is the slower there). Through kube-apiserver the floor adds
{apiserver.floor_added_p50_ms:.2f} ms to a pod update's p50 (`apiserver.floor_added_p50_ms`) and
we add {apiserver.added_p50_ms:.2f} ms (`apiserver.added_p50_ms`;
`apiserver.ratio_vs_floor_p50` {apiserver.ratio_vs_floor_p50:.2f}); at p99
{apiserver.ratio_vs_floor_p99:.2f} (`apiserver.ratio_vs_floor_p99`). Both workers take an even
share of the connections in every run (`http.lopsided_runs` {http.lopsided_runs}). One replica
sustains **{http.sizing.rps_at_p99_limit:,.0f} updates/s at p99 <= 10 ms**
(`http.sizing.rps_at_p99_limit`, the highest step tried).
"""

BENCHMARKS_HTTP_MEANING = """\
- **Keep-alive works**: {http.handshakes_per_request:.5f} new connections per request for the
  webhook (`http.handshakes_per_request`, wrk's 16 first ones aside); the `sync` worker pays
  one TLS handshake per request ({http.handshakes_per_request_sync:.2f},
  `http.handshakes_per_request_sync`).
- **Against the floor.** The Go floor uses {http.cpu_ms_per_request.go_floor:.2f} ms of CPU per
  ~20 KB review, the Flask allow-all {http.cpu_ms_per_request.allow_all:.2f} ms and
  pod-replace-guard {http.cpu_ms_per_request.webhook:.2f} ms (`http.cpu_ms_per_request`; the floor
  uses {http.cpu_ratio_vs_go_floor:.2f}× our CPU, `http.cpu_ratio_vs_go_floor`), and we serve
  {http.ratio_vs_go_floor:.2f}× its requests/s (`http.ratio_vs_go_floor`). The difference is the
  app's work: parsing the review, judging it, the decision log line and the metrics ("Where
  the time goes"). On the ~1 MB review we use {http.table.webhook.large.server_cpu_ms_per_request:.1f}
  ms of CPU against the floor's {http.table.go_floor.large.server_cpu_ms_per_request:.1f} ms.
- **Judging next to the framework**: {http.ratio_vs_allow_all:.3f}× the allow-all's requests/s
  (`http.ratio_vs_allow_all`), {http.cpu_ratio_vs_allow_all:.2f}× in CPU per request
  (`http.cpu_ratio_vs_allow_all`). The 0.85 target cannot be met by tuning the server (see
  below): the allow-all costs about the floor's CPU, so what is left is the app's own work.
- **gthread + keep-alive vs sync**: {http.ratio_vs_sync:.1f}× the requests/s on the ~20 KB review
  (`http.ratio_vs_sync`).
- **Latency.** At saturation a closed loop's latency is its queue (16 connections at
  {http.rps:,.0f} req/s), so the saturated p99 ({http.saturated_p99_ms:.1f} ms,
  `http.saturated_p99_ms`) says little. Paced at 100 req/s p50 is {http.p50_ms_at_100rps:.2f} ms
  and p99 {http.p99_ms_at_100rps:.1f} ms (`http.p50_ms_at_100rps`, `http.p99_ms_at_100rps`); at a
  third of saturation ({http.p99_ms_load_rps:,.0f} req/s) p99 is {http.p99_ms:.1f} ms
  (`http.p99_ms`).
- **Connections spread over the workers in every run** (`http.lopsided_runs`
  {http.lopsided_runs}): each worker publishes how many connections it holds and the one
  holding more leaves a new connection to the other (`webhook/balance.py`).
- CPU per request is higher at low load ({http.under_load.100rps.server_cpu_ms_per_request:.2f} ms
  at 100 req/s, `http.under_load.100rps.server_cpu_ms_per_request`, against
  {http.cpu_ms_per_request.webhook:.2f} ms at saturation): each request finds an idle process
  with cold caches.
- Memory: {http.rss_mib_per_worker:.1f} MiB RSS per worker (`http.rss_mib_per_worker`);
  {http.table.webhook.large.worker_rss_mib:.1f} MiB after ~1 MB reviews (the allocator keeps what
  the large parses took). The Go floor: {http.table.go_floor.realistic.worker_rss_mib:.1f} MiB.
"""

BENCHMARKS_SCALE_MEANING = """\
- **Per core**, pod-replace-guard answers {http.scale.c1_a1k.webhook.rps_per_core:,.0f} small
  reviews/s (1 container), {http.scale.c10_a1k.webhook.rps_per_core:,.0f} at 10 containers,
  {http.scale.c100_a1k.webhook.rps_per_core:,.0f} at 100 containers
  (`http.scale.*.webhook.rps_per_core`); the floor's CPU per review is
  {http.scale.c1_a1k.cpu_ratio_vs_go_floor:.2f}×, {http.scale.c10_a1k.cpu_ratio_vs_go_floor:.2f}× and
  {http.scale.c100_a1k.cpu_ratio_vs_go_floor:.2f}× ours (`http.scale.*.cpu_ratio_vs_go_floor`).
  With 64 KiB of annotations the floor uses {http.scale.c3_a64k.cpu_ratio_vs_go_floor:.2f}× our CPU
  (we use less), with 1 MiB {http.scale.c3_a1m.cpu_ratio_vs_go_floor:.2f}×: unchanged annotations
  compare as one string each, TLS and parsing dominate both, and Go's `encoding/json` is
  slower than orjson.
- The 100-container pod is where we lose most: it is ~480 KB, over the 256 KiB that the
  loop answers itself, so it goes to a pool thread, and parsing and diffing a hundred
  containers' small objects is Python's worst case.
"""

BENCHMARKS_SIZING_MEANING = """\
So **one replica (2 workers, 2 shared cores) sustains at least
{http.sizing.rps_at_p99_limit:,.0f} pod updates/s at p99 <= {http.sizing.p99_limit_ms:.0f} ms**
(`http.sizing.rps_at_p99_limit`) on the ~20 KB review on this machine: the highest step
tried, where p99 was still well under the limit (the table's last row).
"""

BENCHMARKS_APISERVER_MEANING = """\
**What it means.** Per-round medians: the webhook adds **{apiserver.added_p50_ms:.2f} ms** to the
p50 of a pod update (`apiserver.added_p50_ms`), the Go floor **{apiserver.floor_added_p50_ms:.2f}
ms** (`apiserver.floor_added_p50_ms`), the generated CEL policy {apiserver.vap_added_p50_ms:.1f} ms
(`apiserver.vap_added_p50_ms`) and the minimal one {apiserver.vap_minimal_added_p50_ms:.1f} ms
(`apiserver.vap_minimal_added_p50_ms`). So the least any webhook costs here is
{apiserver.floor_added_p50_ms:.2f} ms (kube-apiserver encoding both pods into an AdmissionReview,
TLS and HTTP on its side, decoding the answer), and pod-replace-guard costs
{apiserver.ratio_vs_floor_p50:.2f}× that (`apiserver.ratio_vs_floor_p50`); at p99
{apiserver.ratio_vs_floor_p99:.2f}× ({apiserver.added_p99_ms:.1f} against
{apiserver.floor_added_p99_ms:.1f} ms, `apiserver.added_p99_ms`, `apiserver.floor_added_p99_ms`).
One call at a time, every request finds the worker idle and costs
{apiserver.cpu_ms_per_request.webhook.webhook:.1f} ms of CPU (the webhook column above; the floor
{apiserver.cpu_ms_per_request.floor.webhook:.2f} ms), where the same request costs
{http.cpu_ms_per_request.webhook:.2f} ms when the worker is busy (`http.cpu_ms_per_request.webhook`).
The generated policy costs the API server {apiserver.cpu_ms_per_request.vap.control_plane:.1f} ms of
CPU per update against {apiserver.cpu_ms_per_request.none.control_plane:.1f} ms with no admission
and {apiserver.cpu_ms_per_request.webhook.control_plane:.1f} ms with the webhook
(`apiserver.cpu_ms_per_request.*.control_plane`).

**The generated policy** is the `vap` row (`benchmarks/vap.yaml`, the output of
`pod-replace-guard policy`): it adds {apiserver.vap_added_p50_ms:.1f} ms to an update's p50 where
the webhook adds {apiserver.added_p50_ms:.2f} ms (`apiserver.ratio_vs_vap`
{apiserver.ratio_vs_vap:.2f}), and {apiserver.concurrent_vap_added_p50_ms:.1f} ms with
{apiserver.concurrent_threads} concurrent clients (`apiserver.concurrent_vap_added_p50_ms`; the
webhook {apiserver.concurrent_added_p50_ms:.1f} ms, `apiserver.concurrent_added_p50_ms`).
It compares each frozen subtree whole, in one native equality, and descends only where an
updatable field lies beneath ("CEL cost of the generated policy", below).
"""

BENCHMARKS_MEMORY_MEANING = """\
Growth {memory.growth_ratio:.3f}× (`memory.growth_ratio`) over {memory.requests_total:,} requests
({memory.rps:,.0f} req/s, `memory.rps`; workers restarted: {memory.workers_restarted}).
"""

BENCHMARKS_REQUEST_PATH = """\
| in-process WSGI call (~20 KB review) | CPU µs (2026-11-24, dated) | CPU µs (2026-11-29, dated) | CPU µs (run of {date:.10}) |
|---|---|---|---|
| allow-all Flask app (framework only) | 54.5 | 47.8 | {decision.request_path.allow_all_us} |
| pod-replace-guard app | 270 | 178.4 | {decision.request_path.webhook_us} |
| … without the decision log line | 229 | 161.8 | {decision.request_path.webhook_no_decision_log_us} |
| parse + judge + encode, no app | 96.4 | 71.1 | {decision.request_path.decision_us} |
| decision log line | 41.4 | 16.6 | {decision.request_path.decision_log_us} |
| metrics, log fields and other glue (incl. freeing the parsed review) | 78.1 | 42.9 | {decision.request_path.metrics_and_glue_us} |
"""

BENCHMARKS_ALLOW_ALL_RATIO = """\
**`http.ratio_vs_allow_all` >= 0.85 cannot be reached by making the server faster,
nor by any webhook that reads the review.** With S the server's per-request cost,
shared by both apps, and the app's own work on top, the ratio is about
(S + {decision.request_path.allow_all_us:.0f} µs) / (S + {decision.request_path.webhook_us:.0f} µs) in
this run's in-process figures (`decision.request_path.allow_all_us`,
`decision.request_path.webhook_us`); it reaches 0.85 only when S is several hundred µs,
and falls as the server gets faster. It was 0.67 when the server was slow and 0.54 once
the allow-all cost what the Go floor costs (dated: issue 12's first rounds, 2026-11-24 and
2026-11-29), and is {http.ratio_vs_allow_all:.3f} in this run (`http.ratio_vs_allow_all`).
"""


def _template(text: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda results: fill(text, results)


def _report_table(
    render: Callable[[Any], list[str]], section: str, index: int
) -> Callable[[Mapping[str, Any]], str]:
    def block(results: Mapping[str, Any]) -> str:
        return "\n".join(_tables(render(lookup(results, section)))[index]) + "\n"

    return block


def _targets(results: Mapping[str, Any]) -> str:
    return "\n".join(report.targets_table(dict(results))) + "\n"


BLOCKS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "readme-performance": _template(README_PERFORMANCE),
    "readme-policy-latency": _template(README_POLICY_LATENCY),
    "readme-policy-cost": _template(README_POLICY_COST + "\n"),
    "operations-sizing": _template(OPERATIONS_SIZING),
    "benchmarks-run": _template(BENCHMARKS_RUN),
    "benchmarks-targets": _targets,
    "benchmarks-floor": _template(BENCHMARKS_FLOOR),
    "benchmarks-decision": _report_table(report.decision_tables, "decision", 0),
    "benchmarks-request-path": _template(BENCHMARKS_REQUEST_PATH),
    "benchmarks-allow-all-ratio": _template(BENCHMARKS_ALLOW_ALL_RATIO),
    "benchmarks-http": _report_table(report.http_tables, "http", 0),
    "benchmarks-http-meaning": _template(BENCHMARKS_HTTP_MEANING),
    "benchmarks-scale": _report_table(report.scale_tables, "http", 0),
    "benchmarks-scale-meaning": _template(BENCHMARKS_SCALE_MEANING),
    "benchmarks-sizing": _report_table(report.scale_tables, "http", 1),
    "benchmarks-sizing-meaning": _template(BENCHMARKS_SIZING_MEANING),
    "benchmarks-apiserver": _report_table(report.apiserver_table, "apiserver", 0),
    "benchmarks-apiserver-meaning": _template(BENCHMARKS_APISERVER_MEANING),
    "benchmarks-memory": _report_table(report.memory_table, "memory", 0),
    "benchmarks-memory-meaning": _template(BENCHMARKS_MEMORY_MEANING),
}

TEMPLATES: dict[str, str] = {
    "readme-performance": README_PERFORMANCE,
    "readme-policy-latency": README_POLICY_LATENCY,
    "readme-policy-cost": README_POLICY_COST,
    "operations-sizing": OPERATIONS_SIZING,
    "benchmarks-run": BENCHMARKS_RUN,
    "benchmarks-request-path": BENCHMARKS_REQUEST_PATH,
    "benchmarks-allow-all-ratio": BENCHMARKS_ALLOW_ALL_RATIO,
    "benchmarks-floor": BENCHMARKS_FLOOR,
    "benchmarks-http-meaning": BENCHMARKS_HTTP_MEANING,
    "benchmarks-scale-meaning": BENCHMARKS_SCALE_MEANING,
    "benchmarks-sizing-meaning": BENCHMARKS_SIZING_MEANING,
    "benchmarks-apiserver-meaning": BENCHMARKS_APISERVER_MEANING,
    "benchmarks-memory-meaning": BENCHMARKS_MEMORY_MEANING,
}


# --- rewriting the docs -----------------------------------------------------------


class RenderError(ValueError):
    """A doc names an unknown block, or a block is in no doc."""


def render_text(text: str, results: Mapping[str, Any], *, where: str = "") -> tuple[str, list[str]]:
    """``text`` with every figure block rewritten; also the names of the blocks found."""
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise RenderError(f"{where}: unknown figure block {name!r}")
        found.append(name)
        body = BLOCKS[name](results)
        if not match["open"].endswith("\n"):  # inline, in a line of text or a table cell
            body = body.rstrip("\n")
            if "\n" in body:
                raise RenderError(f"{where}: figure block {name!r} is inline but spans lines")
        return match["open"] + body + match["close"]

    return BLOCK.sub(replace, text), found


def render_all(
    results: Mapping[str, Any], repo: Path = REPO, docs: Sequence[str] = DOCS
) -> dict[str, str]:
    """Each doc's text as the renderer writes it; every block must appear exactly once."""
    out: dict[str, str] = {}
    seen: list[str] = []
    for doc in docs:
        text, found = render_text((repo / doc).read_text(encoding="utf-8"), results, where=doc)
        out[doc] = text
        seen += found
    missing = sorted(set(BLOCKS) - set(seen))
    twice = sorted({name for name in seen if seen.count(name) > 1})
    if missing or twice:
        raise RenderError(f"figure blocks in no doc: {missing}; in more than one place: {twice}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    results = json.loads(RESULTS_FILE.read_text(encoding="utf-8"))
    stale = []
    for doc, text in render_all(results).items():
        path = REPO / doc
        if path.read_text(encoding="utf-8") != text:
            stale.append(doc)
            if not check:
                path.write_text(text, encoding="utf-8")
    verb = "differ from benchmarks/results.json" if check else "rewritten"
    for doc in stale:
        print(f"{doc}: {verb}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
