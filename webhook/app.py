"""The Flask application: /validate, /validate/canary/<token>, /healthz, /readyz, /metrics.

HTTP bytes in, AdmissionReview bytes out. The handler never lets an exception escape:
malformed input is a 4xx with a reason, an unexpected error a 500 that echoes the uid
where known; every answer to /validate is logged once with its uid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from webhook.logs import DECISION_LOGGER, log_info_line
from webhook.metrics import Metrics
from webhook.policy import Decision, answer_review
from webhook.registration import CANARY_PATH, answer_canary
from webhook.review import MalformedReview
from webhook.settings import Settings

JSON: Final = "application/json"
Readiness = Callable[[], tuple[bool, str]]

decision_log = logging.getLogger(DECISION_LOGGER)
error_log = logging.getLogger("pod_replace_guard.app")

admission = Blueprint("admission", __name__)
health = Blueprint("health", __name__)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON)


def _failure(code: int, reason: str, message: str, uid: str | None = None) -> Response:
    """A metav1.Status body, which the API server quotes in its error."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if uid:
        body["details"] = {"uid": uid}
    return _json(body, code)


def _settings() -> Settings:
    settings: Settings = current_app.config["PRG_SETTINGS"]
    return settings


def _metrics() -> Metrics:
    metrics: Metrics = current_app.config["PRG_METRICS"]
    return metrics


# Longest string from a request that a log line carries (uid, user, names, paths): the
# API server's are far shorter (a uid is 36 characters), a hostile client's can be
# megabytes, and one log line must not be.
MAX_LOGGED_CHARS: Final = 256


def _clip(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_LOGGED_CHARS:
        return f"{value[:MAX_LOGGED_CHARS]}...({len(value) - MAX_LOGGED_CHARS} more characters)"
    return value


def _refuse(status: int, reason: str, message: str, uid: str | None = None) -> Response:
    _metrics().malformed.labels(reason=message).inc()
    decision_log.warning(
        "malformed admission request",
        extra={
            "event": "malformed",
            "uid": _clip(uid or ""),
            "status": status,
            "reason": _clip(message),
        },
    )
    return _failure(status, reason, message, uid)


# A review can name hundreds of thousands of made-up fields; the log line, like the
# denial message (policy.MAX_PATHS_IN_MESSAGE), names the first ones and counts the rest.
MAX_LOGGED_VIOLATIONS: Final = 50
# Violations counted in the metrics per review (their labels are bounded separately).
MAX_COUNTED_VIOLATIONS: Final = 200


def _log_decision(decision: Decision, request_fields: dict[str, Any], duration: float) -> None:
    paths = decision.violation_paths
    log_info_line(
        decision_log,
        "admission decision",
        {
            "event": "decision",
            "uid": _clip(decision.uid),
            **{key: _clip(value) for key, value in request_fields.items()},
            "allowed": decision.allowed,
            "judged": not decision.skip_reason,
            "skip_reason": decision.skip_reason,
            "violations": [_clip(path) for path in paths[:MAX_LOGGED_VIOLATIONS]],
            "violations_total": decision.violation_count,
            "mode": decision.mode,
            "duration_ms": round(duration * 1000, 3),
        },
    )


def _peek_uid(body: object) -> str | None:
    if isinstance(body, dict):
        request_part = body.get("request")
        if isinstance(request_part, dict) and isinstance(request_part.get("uid"), str):
            return str(request_part["uid"])
    return None


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes.

    Werkzeug refuses a Content-Length over MAX_CONTENT_LENGTH before reading (413),
    but a chunked body (no Content-Length) just stops at the limit; one more byte
    from the underlying stream tells a body that fits exactly from one cut short.
    """
    raw = request.get_data(cache=False)
    if len(raw) >= limit and not request.content_length and request.input_stream.read(1):
        return None
    return raw


@admission.before_request
def admission_only_over_tls() -> Response | None:
    """The plain-HTTP health listener (PRG_HEALTH_BIND) serves no admission reviews."""
    port = current_app.config["PRG_HEALTH_PORT"]
    if port and request.environ.get("SERVER_PORT") == port:
        return _failure(404, "NotFound", "admission reviews are served on the TLS listener only")
    return None


def _review_body() -> Any:
    """The request's decoded JSON, or the 4xx that says why there is none."""
    if request.mimetype != JSON:
        return _refuse(415, "UnsupportedMediaType", "content type must be application/json")
    try:
        raw = _read_body(_settings().max_body_bytes)
    except HTTPException:
        raise
    except Exception:  # broken framing (bad chunk sizes) or a dropped connection
        return _refuse(400, "BadRequest", "request body could not be read")
    if raw is None:
        return _refuse(413, "RequestEntityTooLarge", "request body is over the size limit")
    if not raw:
        return _refuse(400, "BadRequest", "request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _refuse(400, "BadRequest", "request body is not valid JSON")


@admission.post("/validate")
def validate() -> Response:
    started = time.perf_counter()
    metrics = _metrics()
    metrics.in_flight.inc()
    uid: str | None = None
    try:
        body = _review_body()
        if isinstance(body, Response):
            return body
        uid = _peek_uid(body)
        try:
            answer, decision = answer_review(body, _settings())
        except MalformedReview as error:
            return _refuse(400, "BadRequest", error.reason, error.uid or uid)
        duration = time.perf_counter() - started
        req = body["request"]
        operation = req["operation"]
        user = req.get("userInfo") or {}
        fields = {
            "operation": operation,
            "namespace": req.get("namespace") or "",
            "name": req.get("name") or "",
            "resource": (req.get("resource") or {}).get("resource", ""),
            "sub_resource": req.get("subResource") or "",
            "user": user.get("username", ""),
            "dry_run": bool(req.get("dryRun")),
        }
        metrics.count_decision(operation, decision.outcome, duration)
        for violation in decision.violations[:MAX_COUNTED_VIOLATIONS]:
            metrics.count_violation(violation.segments)
        _log_decision(decision, fields, duration)
        return _json(answer)
    except HTTPException as error:  # 413 from the body limit, raised while reading
        return _refuse(
            error.code or 400, error.name.replace(" ", ""), error.description or error.name, uid
        )
    except Exception:
        metrics.errors.inc()
        error_log.exception(
            "unexpected error while answering an admission review", extra={"uid": uid or ""}
        )
        decision_log.error(
            "admission request failed", extra={"event": "error", "uid": uid or "", "status": 500}
        )
        return _failure(500, "InternalError", "internal error while judging the review", uid)
    finally:
        metrics.in_flight.dec()


@admission.post(f"{CANARY_PATH}/<token>")
def canary(token: str) -> Response:
    """The controller's proof that the API server reaches us (registration.canary_entry):
    its probe is refused with the message it looks for, anything else allowed."""
    uid: str | None = None
    try:
        body = _review_body()
        if isinstance(body, Response):
            return body
        uid = _peek_uid(body)
        try:
            answer = answer_canary(body, token)
        except MalformedReview as error:
            return _refuse(400, "BadRequest", error.reason, error.uid or uid)
        log_info_line(
            decision_log,
            "canary answered",
            {
                "event": "canary",
                "uid": _clip(uid or ""),
                "allowed": answer["response"]["allowed"],
            },
        )
        return _json(answer)
    except HTTPException as error:
        return _refuse(
            error.code or 400, error.name.replace(" ", ""), error.description or error.name, uid
        )
    except Exception:
        error_log.exception("unexpected error while answering the canary", extra={"uid": uid or ""})
        return _failure(500, "InternalError", "internal error while answering the canary", uid)


@health.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"})


@health.get("/readyz")
def readyz() -> Response:
    ready, reason = current_app.config["PRG_READINESS"]()
    return _json(
        {"status": "ok" if ready else "unavailable", "reason": reason}, 200 if ready else 503
    )


@health.get("/metrics")
def metrics_endpoint() -> Response:
    return Response(
        _metrics().exposition(), content_type="text/plain; version=0.0.4; charset=utf-8"
    )


def _always_ready() -> tuple[bool, str]:
    return True, "configuration valid"


def create_app(settings: Settings, readiness: Readiness | None = None) -> Flask:
    """The application factory. ``readiness`` reports whether the certificate is loaded."""
    app = Flask("pod_replace_guard")
    app.config.update(
        PRG_SETTINGS=settings,
        PRG_METRICS=Metrics(CollectorRegistry()),
        PRG_READINESS=readiness or _always_ready,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PRG_HEALTH_PORT=settings.health_port,
    )
    app.register_blueprint(admission)
    app.register_blueprint(health)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        # Flask's own errors (404, 405) in the same JSON shape as ours.
        code = error.code or 500
        if request.path.startswith("/validate"):
            _metrics().malformed.labels(reason=error.name.lower()).inc()
        response = _failure(code, error.name.replace(" ", ""), error.description or error.name)
        for header, value in error.get_headers():
            if header.lower() == "allow":  # required on 405 (RFC 9110)
                response.headers[header] = value
        return response

    return app
