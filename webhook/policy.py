"""Admission decisions: which requests are judged, exemptions, modes and answers.

Pure (no Flask, no I/O). Two entry points: the server calls :func:`answer_review`
with a decoded AdmissionReview; the ``check`` command calls :func:`judge_update` with
two pods (it knows no requester, so no exemptions apply). Both end in the same rules
(:func:`webhook.rules.find_violations_bounded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from webhook.review import (
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    MalformedReview,
    allowed_response,
    denied_response,
    parse_review,
    review_envelope,
)
from webhook.rules import (
    NestingTooDeep,
    Violation,
    describe_updatable_fields,
    find_violations_bounded,
)
from webhook.settings import Mode, Settings

# Kubernetes asks that each warning stay within 120 characters and that responses
# carry few of them; the message is bounded for the same reason (etcd events, logs).
MAX_WARNING_LENGTH: Final = 120
MAX_WARNINGS: Final = 50
MAX_PATHS_IN_MESSAGE: Final = 200
# Violations a decision keeps (the message, warnings, log and metrics show fewer); the
# rest are only counted.
MAX_KEPT_VIOLATIONS: Final = 1000
WARNING_PREFIX: Final = "pod-replace-guard: "
# The API server copies these into its audit log as "<webhook name>/<key>"; the path
# list is bounded like the log line (app.MAX_LOGGED_VIOLATIONS), the count is exact.
AUDIT_ANNOTATION_PATHS: Final = 50
AUDIT_VIOLATIONS: Final = "violations"
AUDIT_VIOLATIONS_TOTAL: Final = "violations-total"
AUDIT_DECISION: Final = "decision"


@dataclass(frozen=True)
class Decision:
    """The verdict on one request, plus what the log line and metrics need."""

    uid: str
    allowed: bool
    mode: Mode
    # Why the request was allowed without being judged ("" when it was judged).
    skip_reason: str
    violations: tuple[Violation, ...]
    response: AdmissionResponse
    # All the violations found; ``violations`` keeps the first MAX_KEPT_VIOLATIONS.
    violation_count: int = 0

    @property
    def violation_paths(self) -> list[str]:
        return [violation.path for violation in self.violations]

    @property
    def outcome(self) -> str:
        """skipped, allowed, denied, warned or audited (a metric label and a log field)."""
        if self.skip_reason:
            return "skipped"
        if not self.violation_count:
            return "allowed"
        return _OUTCOME_BY_MODE[self.mode]


_OUTCOME_BY_MODE: Final[dict[Mode, str]] = {
    "enforce": "denied",
    "warn": "warned",
    "audit": "audited",
}


def _skip_reason(request: AdmissionRequest, settings: Settings) -> str:
    """Why a request is allowed without evaluation, or "" when it is judged."""
    resource = request.get("resource") or {}
    if request.get("operation") != "UPDATE":
        return "operation"
    if (resource.get("group") or "") != "" or resource.get("resource") != "pods":
        return "resource"
    sub_resource = request.get("subResource")
    if sub_resource and sub_resource not in settings.judged_subresources:
        return "subresource"
    if request.get("namespace", "") in settings.judged_namespaces_excluded:
        return "exempt-namespace"
    user = request.get("userInfo") or {}
    if user.get("username", "") in settings.exempt_users:
        return "exempt-user"
    if any(group in settings.exempt_groups for group in user.get("groups") or ()):
        return "exempt-group"
    return ""


def denial_message(
    violations: tuple[Violation, ...] | list[Violation], total: int | None = None
) -> str:
    """Names every violating path (up to a bound) and the fields that may change."""
    paths = [violation.path for violation in violations]
    total = len(paths) if total is None else total
    shown = ", ".join(paths[:MAX_PATHS_IN_MESSAGE])
    if total > MAX_PATHS_IN_MESSAGE:
        shown += f" and {total - MAX_PATHS_IN_MESSAGE} more"
    return (
        f"pod updates may not change these fields: {shown}. "
        f"Only these fields may be updated: {describe_updatable_fields()}"
    )


def _warning(violation: Violation) -> str:
    text = f"{WARNING_PREFIX}{violation.path} may not be changed (denied in enforce mode)"
    if len(text) <= MAX_WARNING_LENGTH:
        return text
    return text[: MAX_WARNING_LENGTH - 3] + "..."


def _audit_annotations(
    decision: str, violations: tuple[Violation, ...], total: int
) -> dict[str, str]:
    """What the API server's audit log records for a request with violations."""
    paths = [violation.path for violation in violations[:AUDIT_ANNOTATION_PATHS]]
    return {
        AUDIT_DECISION: decision,
        AUDIT_VIOLATIONS: ", ".join(paths),
        AUDIT_VIOLATIONS_TOTAL: str(total),
    }


def _judge(uid: str, old: dict[str, Any], new: dict[str, Any], mode: Mode) -> Decision:
    try:
        found, count = find_violations_bounded(old, new, MAX_KEPT_VIOLATIONS)
    except NestingTooDeep as error:
        raise MalformedReview(str(error), uid) from error
    violations = tuple(found)
    if not count:
        return Decision(uid, True, mode, "", (), allowed_response(uid))
    audit = _audit_annotations(_OUTCOME_BY_MODE[mode], violations, count)
    if mode == "enforce":
        paths = [violation.path for violation in violations[:MAX_PATHS_IN_MESSAGE]]
        response = denied_response(uid, denial_message(violations, count), forbidden_fields=paths)
        response["auditAnnotations"] = audit
        return Decision(uid, False, mode, "", violations, response, count)
    warnings = [_warning(v) for v in violations[:MAX_WARNINGS]] if mode == "warn" else None
    response = allowed_response(uid, warnings)
    response["auditAnnotations"] = audit
    return Decision(uid, True, mode, "", violations, response, count)


def answer_review(body: object, settings: Settings) -> tuple[AdmissionReview, Decision]:
    """The server's entry point: a decoded AdmissionReview in, the answer out.

    Raises only MalformedReview (the server's HTTP 400).
    """
    api_version, request = parse_review(body)
    uid = request["uid"]
    skip = _skip_reason(request, settings)
    if skip:
        decision = Decision(uid, True, settings.mode, skip, (), allowed_response(uid))
    else:
        old, new = request.get("oldObject") or {}, request.get("object") or {}
        decision = _judge(uid, old, new, settings.mode)
    return review_envelope(api_version, decision.response), decision


def judge_update(
    old: dict[str, Any], new: dict[str, Any], mode: Mode = "enforce", uid: str = "check"
) -> Decision:
    """The ``check`` command's entry point: the rules on one pod update, in ``mode``.

    Exemptions depend on who sends a request, which a check does not know, so none
    apply. Raises MalformedReview for objects nested deeper than any pod.
    """
    return _judge(uid, old, new, mode)
