"""Markdown tables of a results file, for docs/benchmarks.md.

python -m benchmarks.report [benchmarks/results.json]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_FILE


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return lines


def decision_tables(decision: dict[str, Any]) -> list[str]:
    rows = [
        (
            case["name"],
            case["body_kb"],
            case["json_loads_us"],
            case["orjson_loads_us"],
            case["decision_us"],
            case["diff_us"],
            case["us_per_kb"],
            case["ratio_vs_json_floor"],
            case["ratio_vs_orjson_floor"],
        )
        for case in decision["cases"]
    ]
    lines = _table(
        (
            "review",
            "body KB",
            "json.loads µs",
            "orjson.loads µs",
            "decision µs",
            "diff only µs",
            "decision µs/KB",
            "÷ json.loads",
            "÷ orjson.loads",
        ),
        rows,
    )
    path = decision.get("request_path")
    if path:
        lines += [""]
        lines += _table(
            ("in-process WSGI call (~20 KB review)", "CPU µs"),
            [
                ("allow-all Flask app (framework only)", path["allow_all_us"]),
                ("pod-replace-guard app", path["webhook_us"]),
                ("… without the decision log line", path["webhook_no_decision_log_us"]),
                ("parse + judge + encode, no app", path["decision_us"]),
                ("decision log line", path["decision_log_us"]),
                ("metrics, log fields and other glue", path["metrics_and_glue_us"]),
            ],
        )
    return lines


def http_tables(http: dict[str, Any]) -> list[str]:
    rows = []
    for server, bodies in http["table"].items():
        for body, got in bodies.items():
            rows.append(
                (
                    server,
                    body,
                    got["rps"],
                    got["p50_ms"],
                    got["p99_ms"],
                    got["server_cpu_ms_per_request"],
                    got["handshakes_per_request"],
                    got["worker_rss_mib"],
                )
            )
    for name, got in (http.get("under_load") or {}).items():
        label = "100 req/s" if name == "100rps" else "~a third of saturation"
        rows.append(
            (
                f"webhook, paced at {label}",
                "realistic",
                got["rps"],
                got["p50_ms"],
                got["p99_ms"],
                got["server_cpu_ms_per_request"],
                None,
                None,
            )
        )
    return _table(
        (
            "server",
            "review",
            "req/s",
            "p50 ms",
            "p99 ms",
            "server CPU ms/req",
            "handshakes/req",
            "RSS MiB/worker",
        ),
        rows,
    )


def scale_tables(http: dict[str, Any]) -> list[str]:
    scale = http.get("scale") or {}
    rows = []
    for shape, servers in scale.items():
        for server in ("webhook", "go_floor"):
            got = servers.get(server)
            if got:
                rows.append(
                    (
                        shape,
                        server,
                        got["review_kb"],
                        got["rps"],
                        got["p50_ms"],
                        got["p99_ms"],
                        got["cpu_ms_per_request"],
                        got["rps_per_core"],
                    )
                )
    lines = _table(
        (
            "pod (containers, annotations)",
            "server",
            "review KB",
            "req/s",
            "p50 ms",
            "p99 ms",
            "CPU ms/req",
            "req/s per core",
        ),
        rows,
    )
    sizing = http.get("sizing")
    if sizing:
        lines += [""]
        lines += _table(
            ("paced load req/s", "p50 ms", "p99 ms", "server CPU cores", "worker CPU share"),
            [
                (
                    step["rps"],
                    step["p50_ms"],
                    step["p99_ms"],
                    step["server_cpu_cores"],
                    ", ".join(str(value) for value in step["worker_cpu_share"]),
                )
                for step in sizing["steps"]
            ],
        )
    return lines


def apiserver_table(api: dict[str, Any]) -> list[str]:
    rows = []
    cpu = api.get("cpu_ms_per_request", {})
    for config, kinds in api["table"].items():
        seq, conc = kinds["sequential"], kinds["concurrent"]
        alone = cpu.get(config, {})
        rows.append(
            (
                config,
                seq["p50_ms"],
                seq["p99_ms"],
                conc["p50_ms"],
                conc["p99_ms"],
                alone.get("control_plane"),
                alone.get("webhook"),
                alone.get("client"),
            )
        )
    threads = api.get("concurrent_threads")
    return _table(
        (
            "admission",
            "sequential p50 ms",
            "sequential p99 ms",
            f"{threads} threads p50 ms",
            f"{threads} threads p99 ms",
            "etcd+apiserver CPU ms/req (alone)",
            "webhook CPU ms/req (alone)",
            "client CPU ms/req (alone)",
        ),
        rows,
    )


def memory_table(memory: dict[str, Any]) -> list[str]:
    return _table(
        ("after requests", "RSS MiB per worker", "PSS MiB per worker"),
        [
            (
                memory["after_1k"]["requests"],
                ", ".join(str(v) for v in memory["after_1k"]["worker_rss_mib"]),
                ", ".join(str(v) for v in memory["after_1k"]["worker_pss_mib"]),
            ),
            (
                memory["after_total"]["requests"],
                ", ".join(str(v) for v in memory["after_total"]["worker_rss_mib"]),
                ", ".join(str(v) for v in memory["after_total"]["worker_pss_mib"]),
            ),
        ],
    )


def targets_table(results: dict[str, Any]) -> list[str]:
    rows = [
        (
            f"`{path}`",
            verdict["target"],
            verdict["value"],
            {True: "holds", False: "**missed**", None: "not measured"}[verdict["holds"]],
        )
        for path, verdict in results.get("targets", {}).items()
    ]
    return _table(("figure", "target", "measured", "verdict"), rows)


def render(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    lines = [
        f"Run: {results.get('date')} ({results.get('mode')} mode), "
        f"{machine.get('cpu_model')} x {machine.get('cores')}, Python {machine.get('python')}, "
        + ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items()),
        "",
    ]
    sections = (
        ("Targets", "targets", lambda _: targets_table(results)),
        ("Decision cost (in process)", "decision", decision_tables),
        ("HTTP over TLS", "http", http_tables),
        ("Scale: review shape, webhook beside the Go floor", "http", scale_tables),
        ("API server", "apiserver", apiserver_table),
        ("Memory", "memory", memory_table),
    )
    for title, key, render_section in sections:
        data = results.get(key)
        if not data or (isinstance(data, dict) and "skipped" in data):
            continue
        lines += [f"### {title}", "", *render_section(data), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    path = Path(args[0]) if args else RESULTS_FILE
    print(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
