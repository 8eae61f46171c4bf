"""The Flask application (webhook.app.create_app) through Flask's test client.

Every status code of /validate, the AdmissionReview response shape, health, metrics
and the one-decision-log-line-per-request contract.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import webhook.app
from tests.support.reviews import example_pod, make_review, update_review
from webhook.app import create_app
from webhook.logs import DECISION_LOGGER, JsonFormatter
from webhook.policy import MAX_WARNING_LENGTH
from webhook.settings import MULTIPROC_ENV, Mode, Settings

JSON = "application/json"
SECRET = "s3cr3t-DO-NOT-LOG-http-51d2"
LIMIT = 64 * 1024


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)


def make_client(settings: Settings | None = None, **kwargs: Any) -> FlaskClient:
    app: Flask = create_app(settings or Settings(max_body_bytes=LIMIT), **kwargs)
    app.testing = True
    return app.test_client()


@pytest.fixture
def client() -> FlaskClient:
    return make_client()


def post(client: FlaskClient, body: Any, **kwargs: Any) -> TestResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    kwargs.setdefault("content_type", JSON)
    return client.post("/validate", data=data, **kwargs)


def frozen_change(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["env"][0]["value"] = SECRET
    pod["spec"]["nodeName"] = "node-2"


def image_change(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["image"] = "beego:v2"


def status_body(response: TestResponse, code: int) -> dict[str, Any]:
    """A metav1.Status failure body, checked for shape."""
    assert response.status_code == code
    assert response.mimetype == JSON
    body: dict[str, Any] = response.get_json()
    assert body["apiVersion"] == "v1"
    assert body["kind"] == "Status"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert isinstance(body["reason"], str)
    assert body["reason"]
    assert " " not in body["reason"]
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def metrics_text(client: FlaskClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


# --- 200: well-formed reviews ------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_allowed_review(client: FlaskClient, api_version: str) -> None:
    body = update_review(image_change, uid="uid-allowed", api_version=api_version)
    response = post(client, body)
    assert response.status_code == 200
    assert response.mimetype == JSON
    assert response.get_json() == {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {"uid": "uid-allowed", "allowed": True},
    }


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_denied_review(client: FlaskClient, api_version: str) -> None:
    body = update_review(frozen_change, uid="uid-denied", api_version=api_version)
    response = post(client, body)
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["apiVersion"] == api_version
    assert answer["kind"] == "AdmissionReview"
    result = answer["response"]
    assert result["uid"] == "uid-denied"
    assert result["allowed"] is False
    assert result["status"]["code"] == 403
    assert result["status"]["reason"] == "Forbidden"
    assert "spec.containers[0].env[0].value" in result["status"]["message"]
    assert "spec.nodeName" in result["status"]["message"]
    assert "warnings" not in result
    assert SECRET.encode() not in response.get_data()


def test_warn_mode_answers_with_warnings() -> None:
    client = make_client(Settings(mode="warn"))
    response = post(client, update_review(frozen_change, uid="uid-warn"))
    assert response.status_code == 200
    result = response.get_json()["response"]
    assert result["uid"] == "uid-warn"
    assert result["allowed"] is True
    assert "status" not in result
    assert len(result["warnings"]) == 2
    assert all(len(warning) <= MAX_WARNING_LENGTH for warning in result["warnings"])
    assert "spec.containers[0].env[0].value" in result["warnings"][0]
    assert "spec.nodeName" in result["warnings"][1]
    assert SECRET.encode() not in response.get_data()


def test_audit_mode_allows_without_warnings_and_annotates_the_audit_event() -> None:
    client = make_client(Settings(mode="audit"))
    response = post(client, update_review(frozen_change, uid="uid-audit"))
    assert response.status_code == 200
    answer = response.get_json()["response"]
    assert answer["uid"] == "uid-audit"
    assert answer["allowed"] is True
    assert "warnings" not in answer
    assert answer["auditAnnotations"]["decision"] == "audited"


def test_skipped_requests_are_allowed(client: FlaskClient) -> None:
    create = make_review(None, example_pod(), operation="CREATE", uid="uid-create")
    response = post(client, create)
    assert response.status_code == 200
    assert response.get_json()["response"] == {"uid": "uid-create", "allowed": True}
    status = update_review(frozen_change, uid="uid-status", sub_resource="status")
    assert post(client, status).get_json()["response"] == {"uid": "uid-status", "allowed": True}


def test_json_content_type_with_charset_is_accepted(client: FlaskClient) -> None:
    body = update_review(uid="uid-charset")
    response = post(client, body, content_type="application/json; charset=utf-8")
    assert response.status_code == 200
    assert response.get_json()["response"]["uid"] == "uid-charset"


# --- 400: malformed requests --------------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    body = update_review(uid="uid-400")
    del body["request"][key]
    return body


BAD_REQUESTS: list[tuple[str, bytes | dict[str, Any] | list[Any], str, str | None]] = [
    ("empty body", b"", "request body is empty", None),
    ("not JSON", b"{not json", "request body is not valid JSON", None),
    ("truncated JSON", b'{"apiVersion": "admission.k8s.io/v1"', "not valid JSON", None),
    ("invalid UTF-8", b'{"kind": "\xff\xfe"}', "not valid JSON", None),
    ("lone surrogate", b'{"kind": "\xed\xa0\x80"}', "not valid JSON", None),
    ("JSON array", [1, 2], "body must be a JSON object", None),
    ("not an AdmissionReview", {"apiVersion": "v1", "kind": "Pod"}, "apiVersion must be", None),
    (
        "wrong kind",
        {"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {}},
        "kind must be AdmissionReview",
        None,
    ),
    (
        "no request",
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        "request must be an object",
        None,
    ),
    ("missing uid", _without("uid"), "request.uid must be a non-empty string", None),
    ("UPDATE without oldObject", _without("oldObject"), "oldObject is required", "uid-400"),
    ("UPDATE without object", _without("object"), "object is required", "uid-400"),
]


@pytest.mark.parametrize(
    ("body", "message", "uid"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_malformed_requests_are_400_with_a_reason(
    client: FlaskClient, body: bytes | dict[str, Any], message: str, uid: str | None
) -> None:
    response = post(client, body)
    result = status_body(response, 400)
    assert result["reason"] == "BadRequest"
    assert message in result["message"]
    if uid is None:
        assert "details" not in result
    else:
        assert result["details"] == {"uid": uid}


def test_absurdly_nested_objects_are_400_with_the_uid(client: FlaskClient) -> None:
    # Both objects nest 200 maps deep under spec.nodeName and differ only at the
    # bottom, so the diff has to walk down; JSON parsers accept 200 levels.
    body = update_review(uid="uid-deep")
    new_deep, old_deep = '"new"', '"old"'
    for _ in range(200):
        new_deep, old_deep = '{"a":' + new_deep + "}", '{"a":' + old_deep + "}"
    raw = json.dumps(body)
    assert list(body["request"]).index("object") < list(body["request"]).index("oldObject")
    raw = raw.replace('"nodeName": "127.0.0.1"', '"nodeName": ' + new_deep, 1)
    raw = raw.replace('"nodeName": "127.0.0.1"', '"nodeName": ' + old_deep, 1)
    assert new_deep in raw
    assert old_deep in raw
    result = status_body(post(client, raw.encode()), 400)
    assert result["details"] == {"uid": "uid-deep"}
    assert "deeper" in result["message"]


def test_json_nesting_beyond_the_parser_limit_is_400(client: FlaskClient) -> None:
    result = status_body(post(client, b"[" * 5_000 + b"]" * 5_000), 400)
    assert "not valid JSON" in result["message"]


# --- 415, 413, 405, 404 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/yaml", "text/json"],
)
def test_non_json_content_type_is_415(client: FlaskClient, content_type: str | None) -> None:
    body = json.dumps(update_review(uid="uid-415")).encode()
    if content_type is None:
        response = client.post("/validate", data=body)
    else:
        response = client.post("/validate", data=body, content_type=content_type)
    result = status_body(response, 415)
    assert result["reason"] == "UnsupportedMediaType"
    assert "application/json" in result["message"]


def test_body_over_the_limit_is_413(client: FlaskClient) -> None:
    body = json.dumps(update_review(uid="uid-413")).encode()
    padded = body[:-1] + b" " * LIMIT + b"}"
    result = status_body(post(client, padded), 413)
    assert result["reason"] == "RequestEntityTooLarge"


def test_body_at_the_limit_is_read(client: FlaskClient) -> None:
    body = json.dumps(update_review(uid="uid-at-limit")).encode()
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    response = post(client, padded)
    assert response.status_code == 200
    assert response.get_json()["response"]["uid"] == "uid-at-limit"


def test_content_length_over_the_limit_is_413_before_reading(client: FlaskClient) -> None:
    # The header alone decides: the small body is never read.
    response = post(client, b"{}", environ_overrides={"CONTENT_LENGTH": str(LIMIT + 1)})
    assert status_body(response, 413)["reason"] == "RequestEntityTooLarge"
    huge = post(client, b"{}", environ_overrides={"CONTENT_LENGTH": str(10**12)})
    assert huge.status_code == 413


def test_default_limit_is_seven_mebibytes() -> None:
    client = make_client(Settings())
    response = post(client, b"{}", environ_overrides={"CONTENT_LENGTH": str(7 * 1024 * 1024 + 1)})
    assert response.status_code == 413
    body = json.dumps(update_review(uid="uid-big")).encode()
    padded = body[:-1] + b" " * (6 * 1024 * 1024) + b"}"
    assert post(client, padded).status_code == 200


def _chunked(client: FlaskClient, data: bytes) -> TestResponse:
    """A body without Content-Length (chunked transfer), as gunicorn passes it on."""
    return client.post(
        "/validate",
        input_stream=io.BytesIO(data),
        content_type=JSON,
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )


def test_chunked_body_within_the_limit_is_read(client: FlaskClient) -> None:
    body = json.dumps(update_review(uid="uid-chunked")).encode()
    response = _chunked(client, body)
    assert response.status_code == 200
    assert response.get_json()["response"]["uid"] == "uid-chunked"


def test_chunked_body_over_the_limit_is_413(client: FlaskClient) -> None:
    assert status_body(_chunked(client, b"x" * (LIMIT * 2)), 413)


def test_chunked_body_over_the_limit_is_not_judged_on_a_truncated_prefix(
    client: FlaskClient,
) -> None:
    # A valid review followed by padding that takes the body past the limit: the
    # whole body is over the limit, so it must be refused, not judged on its first
    # max_body_bytes bytes.
    body = json.dumps(update_review(uid="uid-truncated")).encode()
    response = _chunked(client, body + b" " * LIMIT)
    assert response.status_code == 413


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_other_methods_on_validate_are_405(client: FlaskClient, method: str) -> None:
    response = client.open("/validate", method=method, data=b"{}", content_type=JSON)
    result = status_body(response, 405)
    assert result["reason"] == "MethodNotAllowed"


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_405_names_the_allowed_methods(client: FlaskClient, method: str) -> None:
    # RFC 9110 section 15.5.6: a 405 response MUST carry an Allow header.
    response = client.open("/validate", method=method)
    assert response.status_code == 405
    assert "POST" in response.headers.get("Allow", "")


@pytest.mark.parametrize("path", ["/", "/nope", "/validate/extra", "/mutate"])
def test_unknown_paths_are_404_json(client: FlaskClient, path: str) -> None:
    result = status_body(client.get(path), 404)
    assert result["reason"] == "NotFound"
    assert status_body(client.post(path, data=b"{}", content_type=JSON), 404)


# --- 500 ----------------------------------------------------------------------------------------


def _explode(body: object, settings: Settings) -> Any:
    raise RuntimeError("unexpected " + SECRET)


def test_unexpected_exception_is_500_with_the_uid_and_the_app_keeps_answering(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(webhook.app, "answer_review", _explode)
    with caplog.at_level(logging.INFO):
        response = post(client, update_review(frozen_change, uid="uid-500"))
    result = status_body(response, 500)
    assert result["reason"] == "InternalError"
    assert result["details"] == {"uid": "uid-500"}
    assert SECRET not in result["message"]
    # logged with the traceback
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert tracebacks
    assert "uid-500" in [getattr(record, "uid", None) for record in tracebacks]
    # no uid to echo when the body has none
    no_uid = status_body(post(client, {"request": {"operation": "UPDATE"}}), 500)
    assert "details" not in no_uid
    text = metrics_text(client)
    assert "pod_replace_guard_internal_errors_total 2.0" in text
    assert "pod_replace_guard_in_flight_requests 0.0" in text
    monkeypatch.undo()
    after = post(client, update_review(image_change, uid="uid-after"))
    assert after.status_code == 200
    assert after.get_json()["response"] == {"uid": "uid-after", "allowed": True}


# --- health and metrics -----------------------------------------------------------------------


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_default_is_ready(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_readyz_reports_the_readiness_callable() -> None:
    state = {"ready": False}

    def readiness() -> tuple[bool, str]:
        return state["ready"], "certificate loaded" if state["ready"] else "no certificate yet"

    client = make_client(Settings(), readiness=readiness)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "reason": "no certificate yet"}
    assert client.get("/healthz").status_code == 200  # alive while not ready
    state["ready"] = True
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "reason": "certificate loaded"}


def test_metrics_count_requests_decisions_and_malformed(client: FlaskClient) -> None:
    post(client, update_review(image_change))
    post(client, update_review(image_change))
    post(client, update_review(frozen_change))
    post(client, make_review(None, example_pod(), operation="CREATE"))
    post(client, b"")
    post(client, b"{}", content_type="text/plain")
    client.get("/validate")
    text = metrics_text(client)
    counts = {
        'pod_replace_guard_admission_requests_total{decision="allowed",operation="UPDATE"}': 2.0,
        'pod_replace_guard_admission_requests_total{decision="denied",operation="UPDATE"}': 1.0,
        'pod_replace_guard_admission_requests_total{decision="skipped",operation="CREATE"}': 1.0,
        'pod_replace_guard_violations_total{path="spec.containers[*].env"}': 1.0,
        'pod_replace_guard_violations_total{path="spec.nodeName"}': 1.0,
        'pod_replace_guard_malformed_requests_total{reason="request body is empty"}': 1.0,
        'pod_replace_guard_admission_duration_seconds_count{operation="UPDATE"}': 3.0,
        "pod_replace_guard_in_flight_requests": 0.0,
    }
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    for name, value in counts.items():
        assert float(samples[name]) == value, name
    malformed = {
        name: float(value)
        for name, value in samples.items()
        if name.startswith("pod_replace_guard_malformed_requests_total")
    }
    assert sum(malformed.values()) == 3.0  # empty body, 415, 405
    assert SECRET not in text


def test_metrics_count_warned_and_audited() -> None:
    cases: tuple[tuple[Mode, str], ...] = (("warn", "warned"), ("audit", "audited"))
    for mode, label in cases:
        client = make_client(Settings(mode=mode))
        post(client, update_review(frozen_change))
        text = metrics_text(client)
        assert (
            "pod_replace_guard_admission_requests_total"
            f'{{decision="{label}",operation="UPDATE"}} 1.0' in text
        )


def test_metrics_content_type_is_the_prometheus_text_format(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_each_app_has_its_own_registry() -> None:
    first, second = make_client(), make_client()
    post(first, update_review(image_change))
    assert "decision=" in metrics_text(first)
    assert "pod_replace_guard_admission_requests_total{" not in metrics_text(second)


# --- logs -----------------------------------------------------------------------------------


@pytest.fixture
def decisions(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=DECISION_LOGGER)
    return caplog


def decision_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == DECISION_LOGGER]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the JSON formatter would write for the record."""
    entry: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return entry


def test_one_decision_line_per_judged_request(
    client: FlaskClient, decisions: pytest.LogCaptureFixture
) -> None:
    post(client, update_review(frozen_change, uid="uid-log", namespace="team-a", name="web-0"))
    (record,) = decision_records(decisions)
    entry = fields(record)
    assert entry["uid"] == "uid-log"
    assert entry["event"] == "decision"
    assert entry["operation"] == "UPDATE"
    assert entry["namespace"] == "team-a"
    assert entry["name"] == "web-0"
    assert entry["user"] == "alice"
    assert entry["allowed"] is False
    assert entry["mode"] == "enforce"
    assert entry["violations"] == ["spec.containers[0].env[0].value", "spec.nodeName"]
    assert isinstance(entry["duration_ms"], float)
    assert SECRET not in json.dumps(entry)
    assert "beego" not in json.dumps(entry)  # no object bodies


def test_one_log_line_per_skipped_request(
    client: FlaskClient, decisions: pytest.LogCaptureFixture
) -> None:
    post(client, make_review(None, example_pod(), operation="CREATE", uid="uid-skip"))
    (record,) = decision_records(decisions)
    entry = fields(record)
    assert entry["uid"] == "uid-skip"
    assert entry["judged"] is False
    assert entry["skip_reason"] == "operation"


def test_one_log_line_per_malformed_request_with_the_uid(
    client: FlaskClient, decisions: pytest.LogCaptureFixture
) -> None:
    body = update_review(uid="uid-bad")
    del body["request"]["oldObject"]
    post(client, body)
    (record,) = decision_records(decisions)
    entry = fields(record)
    assert entry["uid"] == "uid-bad"
    assert entry["status"] == 400
    assert entry["event"] == "malformed"


def test_strings_a_client_chooses_are_clipped_in_the_log_not_in_the_answer(
    client: FlaskClient, decisions: pytest.LogCaptureFixture
) -> None:
    long_uid, long_key = "u" * 10_000, "k" * 10_000

    def frozen_long_key(pod: dict[str, Any]) -> None:
        pod["spec"]["nodeSelector"] = {long_key: "x"}

    body = update_review(frozen_long_key, uid=long_uid)
    body["request"]["userInfo"]["username"] = "n" * 10_000
    answer = post(client, body).get_json()
    assert answer["response"]["uid"] == long_uid  # the API server matches it exactly
    malformed = update_review(uid=long_uid)
    del malformed["request"]["oldObject"]
    post(client, malformed)
    for record in decision_records(decisions):
        line = JsonFormatter().format(record)
        assert len(line) < 4_000, line[:200]
        assert f"...({10_000 - webhook.app.MAX_LOGGED_CHARS} more characters)" in line


def test_one_log_line_per_failed_request(
    client: FlaskClient, decisions: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook.app, "answer_review", _explode)
    post(client, update_review(uid="uid-err"))
    (record,) = decision_records(decisions)
    assert fields(record)["uid"] == "uid-err"
    assert fields(record)["status"] == 500


def test_log_lines_count_matches_requests(
    client: FlaskClient, decisions: pytest.LogCaptureFixture
) -> None:
    uids = [f"uid-{index}" for index in range(5)]
    for uid in uids:
        post(client, update_review(image_change, uid=uid))
    post(client, b"not json")
    records = decision_records(decisions)
    assert [fields(record)["uid"] for record in records] == [*uids, ""]


# --- /canary: the controller's proof that the API server reaches the webhook ----------


def test_the_canary_refuses_the_controllers_probe_and_allows_the_rest(
    client: FlaskClient, decisions: pytest.LogCaptureFixture
) -> None:
    from webhook.registration import CANARY_ANNOTATION, CANARY_PATH, canary_message

    def canary(dry_run: bool, uid: str, path: str = f"{CANARY_PATH}/feedc0de") -> TestResponse:
        probe = {"metadata": {"annotations": {CANARY_ANNOTATION: "00112233aabbccdd"}}}
        body = make_review({}, probe, uid=uid, resource="configmaps", dry_run=dry_run)
        return client.post(path, data=json.dumps(body), content_type=JSON)

    refused = canary(True, "uid-probe").get_json()["response"]
    assert (refused["uid"], refused["allowed"]) == ("uid-probe", False)
    assert refused["status"]["message"] == canary_message("feedc0de", "00112233aabbccdd")
    assert canary(False, "uid-real").get_json()["response"] == {"uid": "uid-real", "allowed": True}
    logged = [fields(r)["uid"] for r in decision_records(decisions)]
    assert logged == ["uid-probe", "uid-real"]
    # Malformed input is a 4xx with a reason there too, never a crash.
    status_body(client.post(f"{CANARY_PATH}/x", data=b"[1", content_type=JSON), 400)
    status_body(client.post(f"{CANARY_PATH}/x", data=b"{}", content_type="text/plain"), 415)
    status_body(client.get(f"{CANARY_PATH}/x"), 405)
    status_body(canary(True, "uid-no-token", path=CANARY_PATH), 404)
    status_body(canary(True, "uid-off-route", path="/canary/feedc0de"), 404)
