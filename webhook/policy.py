"""Admission decisions: which requests are judged, exemptions, and modes.

Pure: takes a parsed request and the settings, returns a :class:`Decision`. The
server, the ``check`` command and the tests call the same :func:`decide`.
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


@dataclass(frozen=True)
class Decision:
    """The verdict on one request, plus what the log line and metrics need."""

    uid: str
    allowed: bool
    mode: Mode
    judged: bool
    skip_reason: str
    violations: tuple[Violation, ...]
    response: AdmissionResponse
    # All the violations found; ``violations`` keeps the first MAX_KEPT_VIOLATIONS.
    violation_count: int = 0

    @property
    def violation_paths(self) -> list[str]:
        return [violation.path for violation in self.violations]


def _skip_reason(request: AdmissionRequest, settings: Settings) -> str:
    """Why a request is allowed without evaluation, or "" when it is judged."""
    resource = request.get("resource") or {}
    if request.get("operation") != "UPDATE":
        return "operation"
    if (resource.get("group") or "") != "" or resource.get("resource") != "pods":
        return "resource"
    if request.get("subResource"):
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


def decide(request: AdmissionRequest, settings: Settings) -> Decision:
    """Judge one parsed AdmissionRequest (see :func:`webhook.review.parse_review`)."""
    uid = request["uid"]
    skip = _skip_reason(request, settings)
    if skip:
        return Decision(uid, True, settings.mode, False, skip, (), allowed_response(uid))
    return judge(uid, request.get("oldObject") or {}, request.get("object") or {}, settings.mode)


def judge(uid: str, old: dict[str, Any], new: dict[str, Any], mode: Mode) -> Decision:
    """Apply the replace rules to one pod update, in the given mode.

    The offline ``check`` command calls this directly: exemptions depend on who
    sends a request, which an offline check does not know.
    """
    try:
        found, count = find_violations_bounded(old, new, MAX_KEPT_VIOLATIONS)
    except NestingTooDeep as error:
        raise MalformedReview(str(error), uid) from error
    violations = tuple(found)
    if not count:
        return Decision(uid, True, mode, True, "", (), allowed_response(uid))
    if mode == "enforce":
        response = denied_response(uid, denial_message(violations, count))
        return Decision(uid, False, mode, True, "", violations, response, count)
    warnings = [_warning(v) for v in violations[:MAX_WARNINGS]] if mode == "warn" else None
    return Decision(uid, True, mode, True, "", violations, allowed_response(uid, warnings), count)


def review(body: object, settings: Settings) -> tuple[AdmissionReview, Decision]:
    """Decoded JSON in, AdmissionReview out. Raises only MalformedReview."""
    api_version, request = parse_review(body)
    decision = decide(request, settings)
    return review_envelope(api_version, decision.response), decision
