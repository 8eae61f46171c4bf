"""AdmissionReview decoding (webhook.review.parse_review) and response builders."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.reviews import example_pod, make_review, update_review
from webhook.review import (
    API_VERSIONS,
    OPERATIONS,
    MalformedReview,
    allowed_response,
    denied_response,
    parse_review,
    review_envelope,
)

UID = "b5a0c3f2-uid"

Edit = Callable[[dict[str, Any]], None]


def good() -> dict[str, Any]:
    return update_review(uid=UID)


def on_request(key: str, value: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        body["request"][key] = value

    return edit


def without_request(key: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        del body["request"][key]

    return edit


def on_map(outer: str, key: str, value: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        body["request"][outer][key] = value

    return edit


def on_body(key: str, value: Any) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        body[key] = value

    return edit


def without_body(key: str) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        del body[key]

    return edit


@dataclass(frozen=True)
class Bad:
    name: str
    edit: Edit | None  # applied to a good review; None: ``body`` is used as is
    reason: str  # a fragment of MalformedReview.reason
    uid: str | None = None  # the uid the error must carry
    body: Any = None


NOT_OBJECT = "body must be a JSON object"
API_VERSION = "apiVersion must be one of"

BAD = [
    Bad("null", None, NOT_OBJECT, body=None),
    Bad("list", None, NOT_OBJECT, body=[]),
    Bad("string", None, NOT_OBJECT, body="AdmissionReview"),
    Bad("number", None, NOT_OBJECT, body=42),
    Bad("empty object", None, API_VERSION, body={}),
    Bad("apiVersion missing", without_body("apiVersion"), API_VERSION),
    Bad("apiVersion v2", on_body("apiVersion", "admission.k8s.io/v2"), API_VERSION),
    Bad("apiVersion of a pod", on_body("apiVersion", "v1"), API_VERSION),
    Bad("apiVersion not a string", on_body("apiVersion", ["admission.k8s.io/v1"]), API_VERSION),
    Bad("kind missing", without_body("kind"), "kind must be AdmissionReview"),
    Bad("kind Pod", on_body("kind", "Pod"), "kind must be AdmissionReview"),
    Bad("kind lower case", on_body("kind", "admissionreview"), "kind must be AdmissionReview"),
    Bad("request missing", without_body("request"), "request must be an object"),
    Bad("request null", on_body("request", None), "request must be an object"),
    Bad("request a list", on_body("request", []), "request must be an object"),
    Bad("request a string", on_body("request", "x"), "request must be an object"),
    Bad("uid missing", without_request("uid"), "request.uid must be a non-empty string"),
    Bad("uid empty", on_request("uid", ""), "request.uid must be a non-empty string"),
    Bad("uid null", on_request("uid", None), "request.uid must be a non-empty string"),
    Bad("uid a number", on_request("uid", 7), "request.uid must be a non-empty string"),
    Bad("uid an object", on_request("uid", {"a": 1}), "request.uid must be a non-empty string"),
    Bad("operation missing", without_request("operation"), "request.operation", UID),
    Bad("operation PATCH", on_request("operation", "PATCH"), "request.operation", UID),
    Bad("operation lower case", on_request("operation", "update"), "request.operation", UID),
    Bad("operation a list", on_request("operation", ["UPDATE"]), "request.operation", UID),
    Bad("UPDATE without oldObject", without_request("oldObject"), "oldObject is required", UID),
    Bad("UPDATE with null oldObject", on_request("oldObject", None), "oldObject is required", UID),
    Bad("UPDATE without object", without_request("object"), "object is required", UID),
    Bad("UPDATE with null object", on_request("object", None), "object is required", UID),
    Bad("object a list", on_request("object", []), "request.object must be an object", UID),
    Bad("object a string", on_request("object", "{}"), "request.object must be an object", UID),
    Bad(
        "oldObject a number", on_request("oldObject", 5), "request.oldObject must be an object", UID
    ),
    Bad("kind not an object", on_request("kind", "Pod"), "request.kind must be an object", UID),
    Bad("kind.kind a number", on_map("kind", "kind", 1), "request.kind.kind must be a string", UID),
    Bad("kind.group a list", on_map("kind", "group", []), "request.kind.group", UID),
    Bad(
        "resource not an object",
        on_request("resource", ["pods"]),
        "request.resource must be an object",
        UID,
    ),
    Bad(
        "resource.resource a number",
        on_map("resource", "resource", 3),
        "request.resource.resource must be a string",
        UID,
    ),
    Bad("subResource a bool", on_request("subResource", True), "request.subResource", UID),
    Bad("namespace a number", on_request("namespace", 1), "request.namespace", UID),
    Bad("name a list", on_request("name", ["x"]), "request.name", UID),
    Bad("userInfo a string", on_request("userInfo", "alice"), "request.userInfo must be", UID),
    Bad(
        "username a number",
        on_map("userInfo", "username", 5),
        "request.userInfo.username",
        UID,
    ),
    Bad(
        "groups a string",
        on_map("userInfo", "groups", "system:masters"),
        "request.userInfo.groups must be a list of strings",
        UID,
    ),
    Bad(
        "groups holding a number",
        on_map("userInfo", "groups", ["a", 1]),
        "request.userInfo.groups must be a list of strings",
        UID,
    ),
    Bad(
        "groups holding null",
        on_map("userInfo", "groups", [None]),
        "request.userInfo.groups must be a list of strings",
        UID,
    ),
    Bad(
        "groups an object",
        on_map("userInfo", "groups", {"a": "b"}),
        "request.userInfo.groups must be a list of strings",
        UID,
    ),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda bad: bad.name)
def test_malformed_reviews_raise_with_a_reason(bad: Bad) -> None:
    if bad.edit is None:
        body = copy.deepcopy(bad.body)
    else:
        body = good()
        bad.edit(body)
    with pytest.raises(MalformedReview) as caught:
        parse_review(body)
    assert bad.reason in caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert caught.value.uid == bad.uid


def test_malformed_review_is_a_value_error() -> None:
    error = MalformedReview("why", "uid-1")
    assert isinstance(error, ValueError)
    assert (error.reason, error.uid) == ("why", "uid-1")
    assert MalformedReview("why").uid is None


# --- well-formed reviews ----------------------------------------------------------------


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_parse_returns_the_api_version_and_the_request(api_version: str) -> None:
    body = update_review(uid=UID, api_version=api_version)
    version, request = parse_review(body)
    assert version == api_version
    assert request is body["request"]
    assert request["uid"] == UID
    assert request["operation"] == "UPDATE"


@pytest.mark.parametrize(
    ("operation", "old", "new"),
    [
        ("CREATE", None, example_pod()),
        ("DELETE", example_pod(), None),
        ("CONNECT", None, None),
        ("UPDATE", example_pod(), example_pod()),
    ],
)
def test_each_operation_needs_only_its_own_objects(
    operation: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    _, request = parse_review(make_review(old, new, operation=operation, uid=UID))
    assert request["operation"] == operation
    assert operation in OPERATIONS


def test_create_without_old_object_key_is_fine() -> None:
    body = make_review(None, example_pod(), operation="CREATE", uid=UID)
    del body["request"]["oldObject"]
    _, request = parse_review(body)
    assert "oldObject" not in request


@pytest.mark.parametrize(
    "edit",
    [
        on_request("newFieldFromAFutureApiServer", {"x": [1, 2]}),
        on_request("namespace", None),
        on_request("subResource", None),
        without_request("kind"),
        without_request("resource"),
        without_request("userInfo"),
        on_map("userInfo", "groups", None),
        on_map("userInfo", "groups", []),
        on_map("userInfo", "extra", {"scopes": ["a"]}),
        on_request("dryRun", True),
        on_request("options", None),
        on_body("extra", "ignored"),
    ],
    ids=[
        "unknown request field",
        "null namespace",
        "null subResource",
        "no kind",
        "no resource",
        "no userInfo",
        "null groups",
        "empty groups",
        "userInfo extra",
        "dryRun",
        "null options",
        "unknown top-level field",
    ],
)
def test_fields_not_read_are_not_checked(edit: Edit) -> None:
    body = good()
    edit(body)
    _, request = parse_review(body)
    assert request["uid"] == UID


def test_uid_is_any_non_empty_string() -> None:
    body = good()
    body["request"]["uid"] = " "
    _, request = parse_review(body)
    assert request["uid"] == " "


# --- response builders ---------------------------------------------------------------


def test_allowed_response() -> None:
    assert allowed_response("u") == {"uid": "u", "allowed": True}
    assert allowed_response("u", []) == {"uid": "u", "allowed": True}
    assert allowed_response("u", ["w"]) == {"uid": "u", "allowed": True, "warnings": ["w"]}


def test_denied_response() -> None:
    assert denied_response("u", "no") == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "no"},
    }
    assert denied_response("u", "m", code=400, reason="BadRequest")["status"] == {
        "code": 400,
        "reason": "BadRequest",
        "message": "m",
    }


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_review_envelope_answers_in_the_version_asked(api_version: str) -> None:
    response = allowed_response("u")
    assert review_envelope(api_version, response) == {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {"uid": "u", "allowed": True},
    }
