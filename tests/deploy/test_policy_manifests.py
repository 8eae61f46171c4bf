"""deploy/'s policy install paths, rendered with kubectl kustomize.

components/policy holds the generated policy (it must be what ``python -m webhook
policy --settings-env deploy/base/settings.env`` prints today); overlays/policy installs
it instead of the webhook, overlays/policy-audit beside the webhook in Audit. The
policy's verdicts against the webhook's are the end-to-end suite's
(tests/e2e/test_policy_equivalence.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from tests.deploy.test_manifests import (
    REPO,
    Doc,
    deployed_settings,
    find,
    render,
    webhook,
)
from webhook.cli import main

POLICY_FILE = REPO / "deploy" / "components" / "policy" / "policy.yaml"
BENCHMARK_POLICY = REPO / "benchmarks" / "vap.yaml"


def generated(*args: str) -> str:
    out = io.StringIO()
    code = main(
        ["policy", "--settings-env", str(REPO / "deploy" / "base" / "settings.env"), *args],
        out=out,
    )
    assert code == 0
    return out.getvalue()


def test_the_committed_policy_is_what_the_generator_prints() -> None:
    assert POLICY_FILE.read_text() == generated(), (
        "deploy/components/policy/policy.yaml is stale: regenerate it with "
        "python -m webhook policy --settings-env deploy/base/settings.env"
    )


def test_the_benchmark_policy_is_the_generated_one() -> None:
    assert BENCHMARK_POLICY.read_text() == generated(), (
        "benchmarks/vap.yaml is stale: it is the generated policy (same command as "
        "deploy/components/policy/policy.yaml)"
    )


def test_the_policy_overlay_installs_only_the_policy(kubectl: str) -> None:
    docs = render(kubectl, "deploy/overlays/policy")
    assert sorted(doc["kind"] for doc in docs) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    binding = find(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert (
        binding["spec"]["policyName"] == find(docs, "ValidatingAdmissionPolicy")["metadata"]["name"]
    )


def _namespaces(policy: Doc) -> list[str]:
    (selector,) = policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
    values: list[str] = selector["values"]
    return values


def test_the_audit_overlay_adds_the_policy_beside_the_webhook_in_audit(kubectl: str) -> None:
    docs = render(kubectl, "deploy/overlays/policy-audit")
    default = render(kubectl, "deploy")
    assert [d for d in docs if not d["kind"].startswith("ValidatingAdmissionPolicy")] == default
    binding = find(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["validationActions"] == ["Audit"]
    policy = find(docs, "ValidatingAdmissionPolicy")
    # The same scope and exemptions as the webhook it runs beside.
    hook = webhook(docs)
    (hook_selector,) = hook["namespaceSelector"]["matchExpressions"]
    assert sorted(hook_selector["values"]) == _namespaces(policy)
    settings = deployed_settings(docs)
    assert sorted(settings.judged_namespaces_excluded) == _namespaces(policy)
    users = yaml.safe_dump(policy["spec"]["matchConditions"])
    for user in settings.exempt_users:
        assert user in users
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["pods"]
    assert hook["rules"][0]["resources"] == ["pods"]


def test_the_components_are_documented() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    for path in ("overlays/policy", "components/policy-audit", "policy --check --live"):
        assert path in readme
    assert Path(REPO / "README.md").read_text().count("## Webhook or policy?") == 1
