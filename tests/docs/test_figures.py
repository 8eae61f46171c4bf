"""The benchmark figures in the docs are the ones benchmarks/results.json holds.

benchmarks/render_docs.py writes every ``<!-- figures:NAME -->`` block of README.md,
docs/benchmarks.md and docs/operations.md from results.json; a committed doc that
differs (a figure edited by hand, results.json re-run without re-rendering) fails here.
Fix: ``python -m benchmarks.render_docs``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import render_docs
from benchmarks.common import RESULTS_FILE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RESULTS_FILE.read_text(encoding="utf-8"))
    return loaded


def test_the_committed_docs_are_what_the_renderer_writes(results: dict[str, Any]) -> None:
    rendered = render_docs.render_all(results, REPO)
    stale = [
        doc for doc, text in rendered.items() if (REPO / doc).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `python -m benchmarks.render_docs`: {stale} differ from results.json"


def test_every_template_key_is_in_results(results: dict[str, Any]) -> None:
    for name, template in render_docs.TEMPLATES.items():
        for key in render_docs.keys_of(template):
            render_docs.lookup(results, key)  # raises MissingFigure
        assert render_docs.keys_of(template), f"{name} quotes no figure"


def test_a_hand_edited_figure_is_caught(results: dict[str, Any]) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = f"**+{results['apiserver']['added_p50_ms']:.1f} ms p50**"
    edited = readme.replace(shown, "**+9.9 ms p50**", 1)
    assert edited != readme
    assert render_docs.render_text(edited, results)[0] == readme


def test_a_new_result_changes_the_docs(results: dict[str, Any]) -> None:
    """A re-run with another figure: the committed docs no longer match it."""
    changed = copy.deepcopy(results)
    changed["apiserver"]["added_p50_ms"] = 3.456
    rendered = render_docs.render_all(changed, REPO)
    for doc in ("README.md", "docs/benchmarks.md", "docs/operations.md"):
        assert rendered[doc] != (REPO / doc).read_text(encoding="utf-8"), doc
    assert "+3.5 ms p50" in rendered["README.md"]


def test_a_missing_key_fails_loudly(results: dict[str, Any]) -> None:
    broken = copy.deepcopy(results)
    del broken["http"]["sizing"]
    with pytest.raises(render_docs.MissingFigure, match=r"http\.sizing"):
        render_docs.render_all(broken, REPO)


def test_unknown_and_missing_blocks_are_errors(results: dict[str, Any]) -> None:
    with pytest.raises(render_docs.RenderError, match="unknown"):
        render_docs.render_text("<!-- figures:nope -->\n<!-- /figures:nope -->", results)
    with pytest.raises(render_docs.RenderError, match="in no doc"):
        render_docs.render_all(results, REPO, docs=("README.md",))


# The figures issue 24 found quoted two ways; each must now read as its one key says.
ALL = ("README.md", "docs/benchmarks.md", "docs/operations.md")
UNIFIED = [
    ("apiserver.added_p50_ms", "{:.1f} ms", ALL),
    ("apiserver.vap_added_p50_ms", "{:.1f} ms", ALL[:2]),
    ("apiserver.concurrent_vap_added_p50_ms", "{:.1f} ms", ALL[:2]),
    ("apiserver.floor_added_p50_ms", "{:.1f} ms", (ALL[0], ALL[2])),
    ("http.cpu_ms_per_request.webhook", "{:.2f} ms", ALL),
    ("http.sizing.rps_at_p99_limit", "{:,.0f}", ALL),
]
STALE = {
    "README.md": ["2.7 ms", "~2,400-3,200", "0.36-0.49", "~0.07 ms"],
    "docs/operations.md": ["2.7 ms", "0.36 ms", "3,200"],
}


@pytest.mark.parametrize(("key", "shown", "docs"), UNIFIED)
def test_unified_figures_are_quoted_from_their_key(
    results: dict[str, Any], key: str, shown: str, docs: tuple[str, ...]
) -> None:
    value = render_docs.lookup(results, key)
    # As rounded in prose or to two places in the detailed text (docs/benchmarks.md).
    texts = {shown.format(value), shown.replace(".1f", ".2f").format(value)}
    for doc in docs:
        content = (REPO / doc).read_text(encoding="utf-8")
        assert any(text in content for text in texts), (doc, key, texts)


@pytest.mark.parametrize("doc", sorted(STALE))
def test_the_old_disagreeing_figures_are_gone(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    for old in STALE[doc]:
        assert not re.search(re.escape(old), text), f"{doc} still says {old}"
