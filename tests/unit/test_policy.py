"""Admission decisions (webhook.policy.answer_review / judge_update), without HTTP.

Table-driven like agnhost's webhook tests: a review goes in, the verdict comes out.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.reviews import example_pod, make_review, update_review
from tests.unit.fuzzing import FUZZ, JSON_OBJECTS, JSON_VALUES
from tests.unit.podpaths import Pod, put
from webhook.policy import (
    AUDIT_ANNOTATION_PATHS,
    MAX_PATHS_IN_MESSAGE,
    MAX_WARNING_LENGTH,
    MAX_WARNINGS,
    WARNING_PREFIX,
    Decision,
    answer_review,
    denial_message,
    judge_update,
)
from webhook.review import AdmissionReview, MalformedReview
from webhook.rules import UPDATABLE_PATHS, Violation
from webhook.settings import MODES, Mode, Settings

SECRET = "s3cr3t-DO-NOT-LOG-0c7a1b"
ENFORCE = Settings(mode="enforce")
WARN = Settings(mode="warn")
AUDIT = Settings(mode="audit")


def decision_for(body: dict[str, Any], settings: Settings) -> Decision:
    return answer_review(body, settings)[1]


def secret_change(pod: Pod) -> None:
    """Three frozen changes, one of which writes a secret into an env value."""
    put(pod, "spec.containers[0].env[0].value", SECRET)
    put(pod, "spec.nodeName", "node-with-" + SECRET)
    put(pod, "spec.nodeSelector", {"kubernetes.io/hostname": SECRET})


SECRET_PATHS = [
    "spec.containers[0].env[0].value",
    "spec.nodeName",
    'spec.nodeSelector["kubernetes.io/hostname"]',
]


def image_change(pod: Pod) -> None:
    put(pod, "spec.containers[0].image", "beego:v2")
    put(pod, "metadata.labels.extra", "x")


def everything(decision: Decision) -> str:
    """All text a decision can carry out of the webhook (response, log fields)."""
    return json.dumps(decision.response) + repr(decision) + " ".join(decision.violation_paths)


# --- modes -------------------------------------------------------------------------------


def test_enforce_denies_with_403_forbidden_and_a_complete_message() -> None:
    decision = decision_for(update_review(secret_change), ENFORCE)
    assert decision.allowed is False
    assert decision.skip_reason == ""
    assert decision.mode == "enforce"
    assert decision.violation_paths == SECRET_PATHS
    response = decision.response
    assert response["allowed"] is False
    assert response["uid"] == decision.uid
    status = response.get("status")
    assert status is not None
    assert status.get("code") == 403
    assert status.get("reason") == "Forbidden"
    message = status.get("message", "")
    for path in SECRET_PATHS:
        assert path in message
    for updatable in UPDATABLE_PATHS:
        assert updatable in message
    assert "warnings" not in response


def test_enforce_message_shape() -> None:
    violations = [Violation(("spec", "nodeName")), Violation(("metadata", "finalizers"))]
    assert denial_message(violations) == (
        "pod updates may not change these fields: spec.nodeName, metadata.finalizers. "
        "Only these fields may be updated: " + ", ".join(UPDATABLE_PATHS)
    )


@pytest.mark.parametrize("mode", MODES)
def test_no_field_value_leaves_the_webhook(mode: Mode) -> None:
    decision = decision_for(update_review(secret_change), Settings(mode=mode))
    assert decision.violation_paths == SECRET_PATHS
    assert SECRET not in everything(decision)
    assert "node-with-" not in everything(decision)


def test_warn_allows_with_one_warning_per_violation() -> None:
    decision = decision_for(update_review(secret_change), WARN)
    assert decision.allowed is True
    assert decision.skip_reason == ""
    assert decision.violation_paths == SECRET_PATHS
    response = decision.response
    assert response["allowed"] is True
    assert "status" not in response
    warnings = response.get("warnings")
    assert warnings is not None
    assert len(warnings) == len(SECRET_PATHS)
    for warning, path in zip(warnings, SECRET_PATHS, strict=True):
        assert len(warning) <= MAX_WARNING_LENGTH
        assert warning.startswith(WARNING_PREFIX)
        assert path in warning
        assert SECRET not in warning


def test_warn_truncates_long_paths_to_120_characters() -> None:
    long_key = "example.com/" + "k" * 300

    def change(pod: Pod) -> None:
        pod["spec"]["nodeSelector"] = {long_key: "v", "short": "v"}

    decision = decision_for(update_review(change), WARN)
    warnings = decision.response.get("warnings") or []
    assert len(warnings) == 2
    assert all(len(warning) <= MAX_WARNING_LENGTH for warning in warnings)
    assert warnings[0].endswith("...")
    assert warnings[0].startswith(WARNING_PREFIX + 'spec.nodeSelector["example.com/kkk')
    assert warnings[1] == (
        WARNING_PREFIX + "spec.nodeSelector.short may not be changed (denied in enforce mode)"
    )


def test_warn_caps_the_number_of_warnings() -> None:
    count = MAX_WARNINGS + 25

    def change(pod: Pod) -> None:
        pod["spec"]["nodeSelector"] = {f"k{index:03d}": "v" for index in range(count)}

    decision = decision_for(update_review(change), WARN)
    assert len(decision.violations) == count
    warnings = decision.response.get("warnings") or []
    assert len(warnings) == MAX_WARNINGS
    assert all(len(warning) <= MAX_WARNING_LENGTH for warning in warnings)


def test_enforce_message_is_bounded_for_huge_violation_lists() -> None:
    count = MAX_PATHS_IN_MESSAGE + 7

    def change(pod: Pod) -> None:
        pod["spec"]["nodeSelector"] = {f"k{index:04d}": "v" for index in range(count)}

    decision = decision_for(update_review(change), ENFORCE)
    message = (decision.response.get("status") or {}).get("message", "")
    assert "spec.nodeSelector.k0000" in message
    assert f"spec.nodeSelector.k{MAX_PATHS_IN_MESSAGE - 1:04d}" in message
    assert f"spec.nodeSelector.k{MAX_PATHS_IN_MESSAGE:04d}" not in message
    assert "and 7 more" in message
    assert len(decision.violations) == count


def test_audit_allows_without_warnings_but_records_violations() -> None:
    decision = decision_for(update_review(secret_change), AUDIT)
    assert decision.allowed is True
    assert decision.skip_reason == ""
    assert decision.mode == "audit"
    assert decision.violation_paths == SECRET_PATHS
    assert decision.response == {
        "uid": decision.uid,
        "allowed": True,
        "auditAnnotations": {
            "decision": "audited",
            "violations": ", ".join(SECRET_PATHS),
            "violations-total": "3",
        },
    }


@pytest.mark.parametrize(("mode", "outcome"), [("enforce", "denied"), ("warn", "warned")])
def test_violations_are_named_in_audit_annotations_in_every_mode(mode: Mode, outcome: str) -> None:
    decision = decision_for(update_review(secret_change), Settings(mode=mode))
    assert decision.response.get("auditAnnotations") == {
        "decision": outcome,
        "violations": ", ".join(SECRET_PATHS),
        "violations-total": "3",
    }
    assert SECRET not in everything(decision)


def test_audit_annotations_are_bounded_and_count_every_violation() -> None:
    def change(pod: Pod) -> None:
        pod["spec"]["nodeSelector"] = {f"k{index:04d}": "v" for index in range(300)}

    annotations = decision_for(update_review(change), AUDIT).response.get("auditAnnotations")
    assert annotations is not None
    assert annotations["violations-total"] == "300"
    assert annotations["violations"].count("spec.nodeSelector.") == AUDIT_ANNOTATION_PATHS


def test_a_denial_lists_each_path_as_a_status_cause() -> None:
    status = decision_for(update_review(secret_change), ENFORCE).response.get("status") or {}
    causes = (status.get("details") or {}).get("causes") or []
    assert [cause["field"] for cause in causes] == SECRET_PATHS
    assert {cause["type"] for cause in causes} == {"FieldValueForbidden"}


@pytest.mark.parametrize("mode", MODES)
def test_allowed_changes_are_allowed_in_every_mode(mode: Mode) -> None:
    decision = decision_for(update_review(image_change), Settings(mode=mode))
    assert decision.allowed is True
    assert decision.outcome == "allowed"
    assert decision.violations == ()
    assert decision.skip_reason == ""
    assert decision.response == {"uid": decision.uid, "allowed": True}


# --- which requests are judged -----------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    name: str
    review: dict[str, Any]
    settings: Settings = ENFORCE
    judged: bool = False
    skip_reason: str = ""
    allowed: bool = True
    paths: list[str] = field(default_factory=list)


def frozen(**kwargs: Any) -> dict[str, Any]:
    """A review of an UPDATE that changes spec.nodeName (denied when judged)."""

    def change(pod: Pod) -> None:
        pod["spec"]["nodeName"] = "node-2"

    return update_review(change, **kwargs)


def _changed_pair() -> tuple[Pod, Pod]:
    old, new = example_pod(), example_pod()
    new["spec"]["nodeName"] = "node-2"
    return old, new


def denied(name: str, body: dict[str, Any], settings: Settings = ENFORCE) -> Gate:
    """A gate that lets the request through to the rules, which deny spec.nodeName."""
    return Gate(name, body, settings, judged=True, allowed=False, paths=["spec.nodeName"])


GATES = [
    denied("update of a pod is judged", frozen()),
    denied("dry-run update is judged", frozen(dry_run=True)),
    denied("v1beta1 review is judged", frozen(api_version="admission.k8s.io/v1beta1")),
    Gate("create", make_review(None, example_pod(), operation="CREATE"), skip_reason="operation"),
    Gate(
        "create with an oldObject present",
        make_review(*_changed_pair(), operation="CREATE"),
        skip_reason="operation",
    ),
    Gate("delete", make_review(example_pod(), None, operation="DELETE"), skip_reason="operation"),
    Gate("connect", make_review(None, None, operation="CONNECT"), skip_reason="operation"),
    Gate("status subresource", frozen(sub_resource="status"), skip_reason="subresource"),
    Gate(
        "ephemeralcontainers subresource",
        frozen(sub_resource="ephemeralcontainers"),
        skip_reason="subresource",
    ),
    Gate("resize subresource", frozen(sub_resource="resize"), skip_reason="subresource"),
    Gate("binding subresource", frozen(sub_resource="binding"), skip_reason="subresource"),
    denied(
        "resize judged when opted in",
        frozen(sub_resource="resize"),
        Settings(judged_subresources=("resize",)),
    ),
    denied(
        "ephemeralcontainers judged when opted in",
        frozen(sub_resource="ephemeralcontainers"),
        Settings(judged_subresources=("ephemeralcontainers", "resize")),
    ),
    Gate(
        "status never judged, even with subresources opted in",
        frozen(sub_resource="status"),
        Settings(judged_subresources=("ephemeralcontainers", "resize")),
        skip_reason="subresource",
    ),
    Gate("deployments", frozen(resource="deployments", group="apps"), skip_reason="resource"),
    Gate("configmaps in the core group", frozen(resource="configmaps"), skip_reason="resource"),
    Gate("pods of another group", frozen(group="metrics.k8s.io"), skip_reason="resource"),
    Gate("namespace kube-system", frozen(namespace="kube-system"), skip_reason="exempt-namespace"),
    Gate(
        "the webhook's own namespace",
        frozen(namespace="pod-replace-guard"),
        skip_reason="exempt-namespace",
    ),
    Gate(
        "a configured webhook namespace is exempt",
        frozen(namespace="guard"),
        Settings(namespace="guard"),
        skip_reason="exempt-namespace",
    ),
    denied(
        "the default webhook namespace is judged when another is configured",
        frozen(namespace="pod-replace-guard"),
        Settings(namespace="guard"),
    ),
    denied(
        "configured exempt namespaces replace the defaults",
        frozen(namespace="kube-system"),
        Settings(exempt_namespaces=("infra",)),
    ),
    Gate(
        "a configured exempt namespace",
        frozen(namespace="infra"),
        Settings(exempt_namespaces=("infra",)),
        skip_reason="exempt-namespace",
    ),
    Gate(
        "kube-controller-manager",
        frozen(user="system:kube-controller-manager"),
        skip_reason="exempt-user",
    ),
    denied(
        "a user whose name only starts like an exempt user",
        frozen(user="system:kube-controller-manager-evil"),
    ),
    Gate(
        "the job controller's service account",
        frozen(
            user="system:serviceaccount:kube-system:job-controller",
            groups=["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        ),
        skip_reason="exempt-user",
    ),
    Gate(
        "the garbage collector's service account",
        frozen(user="system:serviceaccount:kube-system:generic-garbage-collector"),
        skip_reason="exempt-user",
    ),
    denied(
        "another kube-system service account (a CNI agent, say) is judged",
        frozen(
            user="system:serviceaccount:kube-system:some-cni-agent",
            groups=["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        ),
    ),
    denied(
        "a service account of another namespace",
        frozen(
            user="system:serviceaccount:default:ci",
            groups=["system:serviceaccounts", "system:serviceaccounts:default"],
        ),
    ),
    Gate(
        "configured exempt users",
        frozen(user="alice"),
        Settings(exempt_users=("bob", "alice")),
        skip_reason="exempt-user",
    ),
    Gate(
        "configured exempt groups",
        frozen(groups=["team-a", "platform"]),
        Settings(exempt_groups=("platform",)),
        skip_reason="exempt-group",
    ),
    denied(
        "no exemptions at all",
        frozen(user="system:kube-controller-manager", namespace="kube-system"),
        Settings(exempt_users=(), exempt_groups=(), exempt_namespaces=(), namespace="x"),
    ),
]


@pytest.mark.parametrize("gate", GATES, ids=lambda gate: gate.name)
def test_which_requests_are_judged(gate: Gate) -> None:
    decision = decision_for(copy.deepcopy(gate.review), gate.settings)
    assert (decision.skip_reason == "") is gate.judged
    assert decision.skip_reason == gate.skip_reason
    assert decision.allowed is gate.allowed
    assert decision.violation_paths == gate.paths
    assert decision.response["uid"] == gate.review["request"]["uid"]
    assert decision.response["allowed"] is gate.allowed
    if not gate.judged:
        assert decision.response == {"uid": decision.uid, "allowed": True}


def test_a_request_without_a_namespace_is_judged() -> None:
    body = frozen()
    del body["request"]["namespace"]
    decision = decision_for(body, ENFORCE)
    assert decision.skip_reason == ""
    assert decision.allowed is False


# --- judge_update(): the rules in a given mode, without exemptions (the offline check) ------------


@pytest.mark.parametrize(
    ("mode", "allowed", "warned"),
    [("enforce", False, False), ("warn", True, True), ("audit", True, False)],
)
def test_judge_applies_the_rules_without_exemptions(
    mode: Mode, allowed: bool, warned: bool
) -> None:
    old, new = example_pod(), example_pod()
    old["metadata"]["namespace"] = new["metadata"]["namespace"] = "kube-system"
    secret_change(new)
    decision = judge_update(old, new, mode)
    assert decision.uid == "check"
    assert decision.skip_reason == ""
    assert decision.allowed is allowed
    assert decision.violation_paths == SECRET_PATHS
    assert ("warnings" in decision.response) is warned
    assert SECRET not in everything(decision)


def test_judge_allows_updatable_changes() -> None:
    old, new = example_pod(), example_pod()
    image_change(new)
    decision = judge_update(old, new, "enforce")
    assert decision.allowed is True
    assert decision.response == {"uid": "check", "allowed": True}


def test_judge_raises_malformed_review_for_absurd_nesting() -> None:
    old, new = example_pod(), example_pod()
    deep_old: Any = 1
    deep_new: Any = 2
    for _ in range(500):
        deep_old, deep_new = [deep_old], [deep_new]
    old["spec"]["x"], new["spec"]["x"] = deep_old, deep_new
    with pytest.raises(MalformedReview) as caught:
        judge_update(old, new, "enforce")
    assert caught.value.uid == "check"


# --- deleting pods -----------------------------------------------------------------------


def _deleting_pair(old_finalizers: list[str], new_finalizers: list[str]) -> tuple[Pod, Pod]:
    old, new = example_pod(), example_pod()
    for pod, finalizers in ((old, old_finalizers), (new, new_finalizers)):
        pod["metadata"]["deletionTimestamp"] = "2016-08-08T08:00:00Z"
        pod["metadata"]["deletionGracePeriodSeconds"] = 30
        pod["metadata"]["finalizers"] = finalizers
    return old, new


@pytest.mark.parametrize(
    ("old_finalizers", "new_finalizers", "allowed"),
    [
        (["a/x", "b/y"], ["b/y"], True),
        (["a/x"], [], True),
        (["a/x"], ["a/x", "c/z"], False),
        (["a/x"], ["c/z"], False),
    ],
)
def test_deleting_pod_may_only_lose_finalizers(
    old_finalizers: list[str], new_finalizers: list[str], allowed: bool
) -> None:
    old, new = _deleting_pair(old_finalizers, new_finalizers)
    decision = decision_for(make_review(old, new), ENFORCE)
    assert decision.skip_reason == ""
    assert decision.allowed is allowed


def test_live_pod_may_not_lose_finalizers() -> None:
    old, new = example_pod(), example_pod()
    old["metadata"]["finalizers"] = ["a/x"]
    decision = decision_for(make_review(old, new), ENFORCE)
    assert decision.allowed is False
    assert decision.violation_paths == ["metadata.finalizers"]


# --- hostile input -----------------------------------------------------------------------


def test_absurd_nesting_is_a_malformed_review_with_the_uid() -> None:
    old, new = example_pod(), example_pod()
    deep: Any = "leaf"
    for _ in range(10_000):
        deep = {"a": deep}
    new["spec"]["x"] = deep
    body = make_review(old, new, uid="deep-uid")
    with pytest.raises(MalformedReview) as caught:
        decision_for(body, ENFORCE)
    assert caught.value.uid == "deep-uid"
    assert "deeper" in caught.value.reason


# --- answer_review(): envelope, uid and apiVersion echo ------------------------------------------


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
@pytest.mark.parametrize(
    ("change", "allowed"), [(image_change, True), (secret_change, False)], ids=["ok", "frozen"]
)
def test_review_echoes_uid_and_api_version(
    api_version: str, change: Callable[[Pod], None], allowed: bool
) -> None:
    body = update_review(change, uid="7d1c-uid", api_version=api_version)
    answer, decision = answer_review(body, ENFORCE)
    assert answer["apiVersion"] == api_version
    assert answer["kind"] == "AdmissionReview"
    assert "request" not in answer
    response = answer.get("response")
    assert response is not None
    assert response["uid"] == "7d1c-uid"
    assert response["allowed"] is allowed
    assert decision.uid == "7d1c-uid"
    assert response == decision.response
    json.dumps(answer)  # serialisable as is


def test_review_of_a_skipped_request_is_a_bare_allow() -> None:
    body = make_review(None, example_pod(), operation="CREATE", uid="c-1")
    answer, decision = answer_review(body, ENFORCE)
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "c-1", "allowed": True},
    }
    assert decision.skip_reason == "operation"


@pytest.mark.parametrize(
    "body",
    [None, [], "x", {}, {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}],
    ids=["null", "list", "string", "empty", "no-request"],
)
def test_review_raises_malformed_review_for_non_reviews(body: Any) -> None:
    with pytest.raises(MalformedReview):
        answer_review(body, ENFORCE)


# --- property tests ---------------------------------------------------------------------------


def _review_or_error(
    body: Any, settings: Settings
) -> tuple[AdmissionReview, Decision] | MalformedReview:
    try:
        return answer_review(body, settings)
    except MalformedReview as error:
        return error


def _check_review(body: Any, settings: Settings) -> None:
    outcome = _review_or_error(body, settings)
    if isinstance(outcome, MalformedReview):
        assert isinstance(outcome.reason, str)
        assert outcome.reason
        return
    answer, decision = outcome
    request = body["request"]
    assert answer["apiVersion"] == body["apiVersion"]
    assert answer["kind"] == "AdmissionReview"
    response = answer.get("response")
    assert response is not None
    assert response["uid"] == request["uid"]
    assert isinstance(response["allowed"], bool)
    assert response["allowed"] == decision.allowed
    if not decision.allowed:
        assert settings.mode == "enforce"
        assert (response.get("status") or {}).get("code") == 403
    json.dumps(answer)


SETTINGS = st.sampled_from([ENFORCE, WARN, AUDIT, Settings(exempt_namespaces=(), namespace="")])


@FUZZ
@given(body=JSON_VALUES, settings=SETTINGS)
def test_fuzz_review_of_arbitrary_json_raises_only_malformed(body: Any, settings: Settings) -> None:
    _check_review(body, settings)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The strategy, or any JSON value in its place (wrong types included)."""
    return st.one_of(strategy, strategy, strategy, JSON_VALUES)


@st.composite
def pods(draw: st.DrawFn) -> Any:
    pod = example_pod()
    for _ in range(draw(st.integers(0, 3))):
        where = draw(
            st.sampled_from(
                [
                    "spec.nodeName",
                    "spec.containers[0].image",
                    "spec.containers[0].env",
                    "metadata.labels",
                    "metadata.finalizers",
                    "metadata.deletionTimestamp",
                    "spec.tolerations",
                    "status",
                    "spec",
                ]
            )
        )
        try:
            put(pod, where, draw(JSON_VALUES))
        except (TypeError, KeyError, IndexError, AttributeError):
            continue  # an earlier edit replaced spec or a list with something else
    return pod


def _reviews() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "apiVersion": _maybe(
                st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
            ),
            "kind": _maybe(st.just("AdmissionReview")),
            "request": _maybe(
                st.fixed_dictionaries(
                    {
                        "uid": _maybe(st.text(min_size=1, max_size=8)),
                        "operation": _maybe(
                            st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])
                        ),
                    },
                    optional={
                        "kind": _maybe(
                            st.fixed_dictionaries(
                                {"group": _maybe(st.just("")), "version": st.just("v1")},
                                optional={"kind": _maybe(st.just("Pod"))},
                            )
                        ),
                        "resource": _maybe(
                            st.fixed_dictionaries(
                                {
                                    "group": _maybe(st.sampled_from(["", "apps"])),
                                    "resource": _maybe(st.sampled_from(["pods", "deployments"])),
                                },
                                optional={"version": _maybe(st.just("v1"))},
                            )
                        ),
                        "subResource": _maybe(st.sampled_from(["", "status", "binding"])),
                        "namespace": _maybe(
                            st.sampled_from(["", "default", "kube-system", "pod-replace-guard"])
                        ),
                        "name": _maybe(st.text(max_size=8)),
                        "userInfo": _maybe(
                            st.fixed_dictionaries(
                                {},
                                optional={
                                    "username": _maybe(
                                        st.sampled_from(["alice", "system:kube-controller-manager"])
                                    ),
                                    "groups": _maybe(st.lists(st.text(max_size=12), max_size=3)),
                                    "extra": JSON_VALUES,
                                },
                            )
                        ),
                        "object": _maybe(pods() | JSON_OBJECTS),
                        "oldObject": _maybe(pods() | JSON_OBJECTS),
                        "dryRun": JSON_VALUES,
                        "options": JSON_VALUES,
                        "unknownField": JSON_VALUES,
                    },
                )
            ),
        }
    )


# deferred: hypothesis shows a short name instead of a 50 kB strategy repr.
REVIEWS = st.deferred(_reviews)


@FUZZ
@given(body=REVIEWS, settings=SETTINGS)
def test_fuzz_structured_reviews_raise_only_malformed(body: Any, settings: Settings) -> None:
    _check_review(body, settings)
