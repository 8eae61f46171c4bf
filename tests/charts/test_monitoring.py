"""deploy/monitoring/: the alerting rules (promtool check rules, promtool test rules), the
Grafana dashboard, and that every metric they name is one that is really exported: by
a running webhook (scraped) or by the API server (its admission metrics' source).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.tools import MONITORING, REPO, run
from tests.support.reviews import make_review, update_review
from tests.support.server import running_server

RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
WEBHOOK_NAME = "pods.pod-replace-guard.io"
# PromQL functions, aggregations and keywords the expressions use.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "time", "and", "or", "unless", "bool", "offset",
}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, matchers, groupings, ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {word for word in words if word not in PROMQL_WORDS}


def test_metric_names_parser_finds_names() -> None:
    names = metric_names(
        'sum by (le) (rate(a_b_bucket{name="x",le="1"}[5m])) / sum(rate(c_total[5m])) > 0.5'
    )
    assert names == {"a_b_bucket", "c_total"}


def test_rules_are_valid(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_is_unit_tested(promtool: str) -> None:
    """promtool test rules passes, and each alert fires in one case and is quiet in another."""
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=MONITORING, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    alerts = {rule["alert"] for rule in rules()}
    assert alerts == {case["alertname"] for case in cases if case["exp_alerts"]}
    assert alerts == {case["alertname"] for case in cases if not case["exp_alerts"]}
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]


def test_every_alert_has_a_runbook() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    for rule in rules():
        assert f"### {rule['alert']}" in operations, rule["alert"]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each panel's query, as a recording rule, passes promtool's parser."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    recorded = [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(exprs)
    ]
    rule_file = tmp_path / "dashboard-queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = run([promtool, "check", "rules", str(rule_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "pod-replace-guard"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]


# --- every metric named is exported --------------------------------------------------------


def scraped_webhook_metrics(tmp_path: Path) -> set[str]:
    """Sample names of a real `python -m webhook serve` after it saw every kind of outcome."""
    with running_server(tmp_path, workers=1, threads=2) as server:
        allowed = update_review(lambda pod: pod["metadata"].setdefault("labels", {}).update(a="b"))
        denied = update_review(lambda pod: pod["spec"].update(restartPolicy="Never"))
        assert server.post_review(allowed)[1]["response"]["allowed"] is True
        assert server.post_review(denied)[1]["response"]["allowed"] is False
        assert server.post_review(make_review(None, None, operation="CREATE"))[0] == 200
        assert server.post_review(b"{not json")[0] == 400
        # A changed certificate file that cannot be loaded: a failed reload.
        (server.cert_dir / "tls.crt").write_text("not a certificate\n")
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            status, body = server.get("/metrics")
            assert status == 200
            text = body.decode()
            if 'result="failure"' in text:
                break
            time.sleep(0.5)
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    assert 'pod_replace_guard_certificate_reloads_total{result="failure"}' in text
    return names


def apiserver_module_dir() -> Path:
    """k8s.io/apiserver at the version the end-to-end control plane is built from."""
    go_mod = (REPO / "tests" / "e2e" / "controlplane" / "go.mod").read_text()
    version = re.search(r"^\s*k8s\.io/apiserver (v\S+)", go_mod, re.MULTILINE)
    assert version, "k8s.io/apiserver not in tests/e2e/controlplane/go.mod"
    try:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/apiserver@{version.group(1)}"],
            capture_output=True, text=True, check=False, timeout=300, cwd="/",
        )  # fmt: skip
    except FileNotFoundError:
        reason = "go is not installed: cannot read the API server's metric names"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(f"\nSKIPPING: {reason}")
        pytest.skip(reason)
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["Dir"])


def apiserver_admission_metrics() -> set[str]:
    """apiserver_admission_* names the API server registers (pkg/admission/metrics)."""
    source = (apiserver_module_dir() / "pkg" / "admission" / "metrics" / "metrics.go").read_text()
    assert re.search(r'namespace\s*=\s*"apiserver"', source)
    assert re.search(r'subsystem\s*=\s*"admission"', source)
    names = {f"apiserver_admission_{name}" for name in re.findall(r'Name:\s*"(\w+)"', source)}
    assert "apiserver_admission_webhook_rejection_count" in names
    return names


def test_every_metric_named_is_exported(tmp_path: Path) -> None:
    webhook = scraped_webhook_metrics(tmp_path)
    apiserver = apiserver_admission_metrics()
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs()
    named: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        named |= names
    unknown = set()
    for name in sorted(named):
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
        if name not in webhook and not {name, base} & apiserver:
            unknown.add(name)
    assert not unknown, f"not exported by the webhook {sorted(webhook)} nor the API server"
    # Both sources are used, and the API server's metrics are filtered to this webhook.
    assert any(name.startswith("pod_replace_guard_") for name in named)
    assert any(name.startswith("apiserver_admission_webhook_") for name in named)
    for expr in exprs:
        if "apiserver_admission_webhook_" in expr:
            assert expr.count(f'name="{WEBHOOK_NAME}"') == expr.count("apiserver_admission_"), expr
