"""1. Decision cost in process, for reviews of growing size, next to the JSON floor.

For each review the raw request body is timed four ways, interleaved, in the same
process:

- ``json_loads``: ``json.loads(body)``, the floor named by the issue;
- ``orjson_loads``: ``orjson.loads(body)``, the parse the webhook actually does;
- ``decision``: what /validate does with the body, minus HTTP: ``orjson.loads``, then
  ``webhook.policy.answer_review`` (parsing, the gate and the diff), then
  ``orjson.dumps`` of the answer;
- ``diff``: ``webhook.policy.answer_review`` alone on an already parsed body.

Sizes: 1, 10 and 100 containers (1 KiB of annotations), and 1 KiB to 1 MiB of
annotations (1 container). Per-KB cost is time / request-body KB; linearity is judged
by how much the per-KB cost ever rises from a smaller review to a larger one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from benchmarks import payloads
from benchmarks.common import log, median, quick, ratio, rounded
from webhook.policy import answer_review
from webhook.settings import Settings

MEASURES = ("json_loads", "orjson_loads", "decision", "diff")


@dataclass(frozen=True)
class Case:
    name: str
    series: str
    containers: int
    annotation_bytes: int
    denied: bool = False


def cases(short: bool) -> list[Case]:
    annotation_kib = (1, 16, 256, 1024) if short else (1, 4, 16, 64, 256, 1024)
    shape = payloads.REALISTIC
    found = [
        Case("realistic", "realistic", shape.containers, shape.annotation_bytes),
        Case("realistic-denied", "realistic", shape.containers, shape.annotation_bytes, True),
    ]
    found += [Case(f"containers-{n}", "containers", n, 1024) for n in (1, 10, 100)]
    found += [Case(f"annotations-{k}KiB", "annotations", 1, k * 1024) for k in annotation_kib]
    return found


def _calls_per_chunk(function: Callable[[], object], chunk: float) -> int:
    """How many calls take about ``chunk`` seconds (at least one)."""
    calls = 1
    while True:
        started = time.thread_time()
        for _ in range(calls):
            function()
        elapsed = time.thread_time() - started
        if elapsed >= chunk / 4 or calls >= 1 << 16:
            return max(1, round(calls * chunk / max(elapsed, 1e-9)))
        calls *= 2


def _chunk(function: Callable[[], object], calls: int) -> float:
    """Microseconds per call over one chunk of ``calls`` calls."""
    started = time.thread_time()
    for _ in range(calls):
        function()
    return (time.thread_time() - started) / calls * 1e6


def _functions(raw: bytes, settings: Settings) -> dict[str, Callable[[], object]]:
    parsed = orjson.loads(raw)

    def decision() -> bytes:
        answer, _ = answer_review(orjson.loads(raw), settings)
        return orjson.dumps(answer)

    return {
        "json_loads": lambda: json.loads(raw),
        "orjson_loads": lambda: orjson.loads(raw),
        "decision": decision,
        "diff": lambda: answer_review(parsed, settings),
    }


def _linearity(points: list[tuple[float, float]]) -> dict[str, Any]:
    """``points`` are (KB, microseconds), ordered by size; equal sizes count once."""
    points = [point for i, point in enumerate(points) if i == 0 or point[0] > points[i - 1][0]]
    per_kb = [us / kb for kb, us in points]
    growth = max(
        (per_kb[j] / per_kb[i] for i in range(len(per_kb)) for j in range(i + 1, len(per_kb))),
        default=1.0,
    )
    marginal = [
        (points[i + 1][1] - points[i][1]) / (points[i + 1][0] - points[i][0])
        for i in range(len(points) - 1)
    ]
    count = len(points)
    mean_kb = sum(kb for kb, _ in points) / count
    mean_us = sum(us for _, us in points) / count
    slope = sum((kb - mean_kb) * (us - mean_us) for kb, us in points) / sum(
        (kb - mean_kb) ** 2 for kb, _ in points
    )
    return {
        "per_kb_growth": rounded(growth),
        "per_kb_spread": rounded(max(per_kb) / min(per_kb)),
        "marginal_us_per_kb": [rounded(value) for value in marginal],
        "fit_us_per_kb": rounded(slope, 4),
        "fit_intercept_us": rounded(mean_us - slope * mean_kb, 1),
    }


def run() -> dict[str, Any]:
    short = quick()
    rounds = 15 if short else 41
    chunk = 0.004 if short else 0.008
    settings = Settings()
    chosen = cases(short)
    bodies = {
        case.name: payloads.encoded(
            payloads.review(case.containers, case.annotation_bytes, denied=case.denied)
        )
        for case in chosen
    }
    log(f"decision: {len(chosen)} reviews x {len(MEASURES)} measures x {rounds} rounds")
    # The four measures of one review run in turns, a few milliseconds each, and each
    # figure is the median over the turns: a turn that another process or a garbage
    # collection interrupted does not move it, and ratios pair neighbouring turns.
    samples: dict[str, dict[str, list[float]]] = {}
    for case in chosen:
        functions = _functions(bodies[case.name], settings)
        calls = {m: _calls_per_chunk(functions[m], chunk) for m in MEASURES}
        got: dict[str, list[float]] = {measure: [] for measure in MEASURES}
        for _ in range(rounds):
            for measure in MEASURES:
                got[measure].append(_chunk(functions[measure], calls[measure]))
        samples[case.name] = got

    results: list[dict[str, Any]] = []
    for case in chosen:
        kb = len(bodies[case.name]) / 1024
        got = samples[case.name]
        us = {measure: median(got[measure]) for measure in MEASURES}
        results.append(
            {
                "name": case.name,
                "series": case.series,
                "containers": case.containers,
                "annotation_kib": case.annotation_bytes // 1024
                or round(case.annotation_bytes / 1024, 2),
                "allowed": not case.denied,
                "body_kb": rounded(kb, 1),
                **{f"{measure}_us": rounded(us[measure], 1) for measure in MEASURES},
                "us_per_kb": rounded(us["decision"] / kb),
                "ratio_vs_json_floor": rounded(
                    median(
                        ratio(d, j) for d, j in zip(got["decision"], got["json_loads"], strict=True)
                    )
                ),
                "ratio_vs_orjson_floor": rounded(
                    median(
                        ratio(d, o)
                        for d, o in zip(got["decision"], got["orjson_loads"], strict=True)
                    )
                ),
                "diff_share": rounded(us["diff"] / us["decision"]),
            }
        )
    by_name = {item["name"]: item for item in results}

    def series(name: str, measure: str = "decision_us") -> list[tuple[float, float]]:
        chosen_items = sorted(
            (item for item in results if item["series"] == name and item["allowed"]),
            key=lambda item: item["body_kb"],
        )
        return [(item["body_kb"], item[measure]) for item in chosen_items]

    linearity = {
        name: {
            **_linearity(series(name)),
            "orjson_floor_per_kb_growth": _linearity(series(name, "orjson_loads_us"))[
                "per_kb_growth"
            ],
            "diff_per_kb_growth": _linearity(series(name, "diff_us"))["per_kb_growth"],
        }
        for name in ("annotations", "containers")
    }
    realistic = by_name["realistic"]
    return {
        # marginal cost of a KB of annotations (the 1 KiB - 1 MiB series), and of a KB
        # of containers (many small objects cost more per byte)
        "us_per_kb": linearity["annotations"]["fit_us_per_kb"],
        "us_per_kb_containers": linearity["containers"]["fit_us_per_kb"],
        "us_per_kb_realistic": realistic["us_per_kb"],
        "realistic_us": realistic["decision_us"],
        "realistic_body_kb": realistic["body_kb"],
        "ratio_vs_json_floor": realistic["ratio_vs_json_floor"],
        "ratio_vs_orjson_floor": realistic["ratio_vs_orjson_floor"],
        "ratio_vs_json_floor_max": max(item["ratio_vs_json_floor"] for item in results),
        # the target's range: 1 KiB to 1 MiB of annotations
        "per_kb_growth": linearity["annotations"]["per_kb_growth"],
        "per_kb_growth_containers": linearity["containers"]["per_kb_growth"],
        "linearity": linearity,
        "rounds": rounds,
        "cases": results,
    }
