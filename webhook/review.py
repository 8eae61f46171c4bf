"""AdmissionReview types, request decoding and response builders.

Modelled on controller-runtime's ``pkg/webhook/admission`` and kopf's review structs:
a review that cannot be understood raises :class:`MalformedReview` (the server answers
HTTP 400); a review that is understood always gets an AdmissionReview back, allowed or
not. Field names follow ``k8s.io/api/admission/v1/types.go``.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NotRequired, TypedDict, cast

API_VERSIONS: Final = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS: Final = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class MalformedReview(ValueError):
    """The request is not an AdmissionReview this webhook can answer (HTTP 400).

    ``uid`` is set when the request's uid could be read, so the error can echo it.
    """

    def __init__(self, reason: str, uid: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.uid = uid


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    requestSubResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    userInfo: UserInfo
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[dict[str, Any] | None]


class StatusCause(TypedDict):
    type: str
    field: str
    message: str


class StatusDetails(TypedDict, total=False):
    causes: list[StatusCause]


class Status(TypedDict, total=False):
    code: int
    reason: str
    message: str
    details: StatusDetails


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: Literal["AdmissionReview"]
    request: NotRequired[AdmissionRequest]
    response: NotRequired[AdmissionResponse]


def _require_str(obj: dict[str, Any], key: str, where: str, uid: str | None) -> str:
    value = obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedReview(f"{where}.{key} must be a string", uid)
    return value


def _require_map(obj: dict[str, Any], key: str, where: str, uid: str | None) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedReview(f"{where}.{key} must be an object", uid)
    return value


def _validate_group_kind(
    value: dict[str, Any], keys: tuple[str, ...], where: str, uid: str
) -> None:
    for key in keys:
        _require_str(value, key, where, uid)


def parse_review(body: object) -> tuple[str, AdmissionRequest]:
    """Check that ``body`` (decoded JSON) is an AdmissionReview request.

    Returns the apiVersion to answer in and the request. Only the fields this webhook
    reads are checked, so newer API servers may add fields freely.
    """
    if not isinstance(body, dict):
        raise MalformedReview("body must be a JSON object (an AdmissionReview)")
    api_version = body.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise MalformedReview("apiVersion must be one of " + ", ".join(API_VERSIONS))
    if body.get("kind") != "AdmissionReview":
        raise MalformedReview("kind must be AdmissionReview")
    request = body.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request must be an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid must be a non-empty string")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise MalformedReview("request.operation must be one of " + ", ".join(OPERATIONS), uid)
    _validate_group_kind(
        _require_map(request, "kind", "request", uid),
        ("group", "version", "kind"),
        "request.kind",
        uid,
    )
    _validate_group_kind(
        _require_map(request, "resource", "request", uid),
        ("group", "version", "resource"),
        "request.resource",
        uid,
    )
    for key in ("subResource", "name", "namespace"):
        _require_str(request, key, "request", uid)
    user_info = _require_map(request, "userInfo", "request", uid)
    _require_str(user_info, "username", "request.userInfo", uid)
    groups = user_info.get("groups")
    if groups is not None and not (
        isinstance(groups, list) and all(isinstance(group, str) for group in groups)
    ):
        raise MalformedReview("request.userInfo.groups must be a list of strings", uid)
    for key in ("object", "oldObject"):
        value = request.get(key)
        if value is not None and not isinstance(value, dict):
            raise MalformedReview(f"request.{key} must be an object", uid)
    if operation == "UPDATE" and not isinstance(request.get("oldObject"), dict):
        raise MalformedReview("request.oldObject is required for UPDATE", uid)
    if operation == "UPDATE" and not isinstance(request.get("object"), dict):
        raise MalformedReview("request.object is required for UPDATE", uid)
    return api_version, cast(AdmissionRequest, request)


def allowed_response(uid: str, warnings: list[str] | None = None) -> AdmissionResponse:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = warnings
    return response


def denied_response(
    uid: str,
    message: str,
    code: int = 403,
    reason: str = "Forbidden",
    forbidden_fields: list[str] | None = None,
) -> AdmissionResponse:
    """A denial; ``forbidden_fields`` become the Status's causes, which the API server
    passes on to its client (``check --live`` reads them), one per path."""
    status: Status = {"code": code, "reason": reason, "message": message}
    if forbidden_fields:
        status["details"] = {
            "causes": [
                {"type": "FieldValueForbidden", "field": path, "message": "may not be changed"}
                for path in forbidden_fields
            ]
        }
    return {"uid": uid, "allowed": False, "status": status}


def review_envelope(api_version: str, response: AdmissionResponse) -> AdmissionReview:
    """Wrap a response in an AdmissionReview of the version the request used."""
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
