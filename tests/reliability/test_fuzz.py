"""Property-based fuzzing of the HTTP handler and the diff engine, and the differential
check against the independent oracle (in the spirit of Kyverno's FuzzPodBypass).

Budget: PRG_FUZZ_EXAMPLES / FUZZ_EXAMPLES examples per property (200 by default;
``make fuzz`` sets 20000).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st

from tests.reliability import oracle
from tests.reliability.strategies import (
    fuzz_examples,
    fuzz_settings,
    json_objects,
    json_values,
    mutated_pair,
    structured_reviews,
)
from tests.support.reviews import example_pod, make_review
from tests.support.server import Server, start_server, wait_workers
from webhook.app import create_app
from webhook.rules import NestingTooDeep, find_violations
from webhook.settings import Settings


@pytest.fixture(scope="module")
def client() -> Iterator[FlaskClient]:
    app = create_app(Settings(max_body_bytes=1024 * 1024))
    with app.test_client() as test_client:
        yield test_client


def _post(client: FlaskClient, body: bytes, content_type: str = "application/json") -> Any:
    return client.post("/validate", data=body, headers={"Content-Type": content_type})


def _check_answer(body: Any, status: int, data: bytes) -> None:
    """The contract for any request: 200 with a review, or a 4xx Status; never a 5xx."""
    assert status < 500, data[:500]
    payload = orjson.loads(data)
    if status == 200:
        assert payload["kind"] == "AdmissionReview"
        assert payload["apiVersion"] == body["apiVersion"]
        response = payload["response"]
        assert response["uid"] == body["request"]["uid"]
        assert isinstance(response["allowed"], bool)
        if not response["allowed"]:
            assert response["status"]["code"] == 403
    else:
        assert 400 <= status < 500
        assert payload["kind"] == "Status"
        assert payload["code"] == status
        assert isinstance(payload["message"], str)


# --- the HTTP handler (Flask test client of create_app) -------------------------------


@fuzz_settings()
@given(body=structured_reviews())
def test_fuzz_handler_structured_reviews(client: FlaskClient, body: Any) -> None:
    data = orjson.dumps(body)
    response = _post(client, data)
    _check_answer(body, response.status_code, response.data)


@fuzz_settings()
@given(body=json_values)
def test_fuzz_handler_arbitrary_json(client: FlaskClient, body: Any) -> None:
    response = _post(client, orjson.dumps(body))
    assert response.status_code == 400, response.data
    assert orjson.loads(response.data)["kind"] == "Status"


@fuzz_settings()
@given(
    raw=st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | json_values.map(orjson.dumps).flatmap(
        lambda data: st.integers(0, max(len(data) - 1, 0)).map(lambda cut: data[:cut])
    )
)
@example(raw=b"")
@example(raw=b"\xff\xfe{}")
@example(raw=b"[" * 10000 + b"]" * 10000)
def test_fuzz_handler_arbitrary_bytes(client: FlaskClient, raw: bytes) -> None:
    response = _post(client, raw)
    assert response.status_code in {400, 200}, response.data


@fuzz_settings()
@given(content_type=st.text(max_size=40), method=st.sampled_from(["GET", "PUT", "DELETE"]))
def test_fuzz_handler_content_types_and_methods(
    client: FlaskClient, content_type: str, method: str
) -> None:
    body = orjson.dumps(make_review(example_pod(), example_pod()))
    try:
        response = _post(client, body, content_type)
    except ValueError:  # werkzeug will not even send some header values
        return
    assert response.status_code in (200, 400, 415), response.data
    other = client.open("/validate", method=method, data=body)
    assert other.status_code == 405


# --- the diff engine ------------------------------------------------------------------


@fuzz_settings()
@given(old=json_objects, new=json_objects)
def test_fuzz_diff_engine_arbitrary_json(old: dict[str, Any], new: dict[str, Any]) -> None:
    try:
        violations = find_violations(old, new)
    except NestingTooDeep:
        return
    paths = [violation.path for violation in violations]
    assert all(isinstance(path, str) for path in paths)
    assert len(set(paths)) == len(paths), "each path reported once"
    assert find_violations(old, new) == violations, "deterministic"
    assert find_violations(old, copy.deepcopy(old)) == []
    assert find_violations(new, new) == []


# A map key spelled "[*]" is not a list index: the rule spec.containers[*].image must
# not make spec.containers["[*]"].image (a map, not a list) updatable.
_WILDCARD_KEY = (
    {"spec": {"containers": {"[*]": {"image": "a", "command": ["x"]}}}},
    {"spec": {"containers": {"[*]": {"image": "b", "command": ["x"]}}}},
)


@fuzz_settings()
@given(pair=mutated_pair())
@example(pair=_WILDCARD_KEY)
def test_fuzz_diff_engine_agrees_with_oracle(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Kyverno FuzzPodBypass-style differential: engine and oracle agree on every pair."""
    old, new = pair
    engine_allowed = not find_violations(old, new)
    expected = oracle.allowed(old, new)
    assert engine_allowed == expected, (
        f"engine says {'allowed' if engine_allowed else 'denied'}, oracle says "
        f"{'allowed' if expected else 'denied'}; oracle's frozen changes: "
        f"{sorted(oracle.frozen_changes(old, new), key=str)[:5]}; "
        f"engine's violations: {[v.path for v in find_violations(old, new)][:5]}"
    )


@fuzz_settings()
@given(pair=mutated_pair())
def test_fuzz_handler_verdict_agrees_with_oracle(
    client: FlaskClient, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """The same differential through the HTTP handler (enforce mode, a judged request)."""
    old, new = pair
    response = _post(client, orjson.dumps(make_review(old, new)))
    assert response.status_code == 200, response.data
    assert orjson.loads(response.data)["response"]["allowed"] == oracle.allowed(old, new)


# --- a smaller run over TLS against the real server ---------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[int]]]:
    server = start_server(tmp_path_factory.mktemp("fuzz-tls"), workers=2, threads=4)
    try:
        yield server, wait_workers(server, 2)
    finally:
        server.stop()


@pytest.mark.process
def test_fuzz_over_tls_structured_reviews(tls_server: tuple[Server, list[int]]) -> None:
    server, workers = tls_server
    conn = server.connection(timeout=30)

    @fuzz_settings(max(20, fuzz_examples() // 10))
    @given(body=structured_reviews())
    def check(body: Any) -> None:
        data = orjson.dumps(body)
        conn.request("POST", "/validate", data, {"Content-Type": "application/json"})
        response = conn.getresponse()
        _check_answer(body, response.status, response.read())

    try:
        check()
    finally:
        conn.close()
    assert sorted(server.worker_pids()) == workers, "no worker died"
    assert not [line for line in server.log_lines() if line.get("event") == "error"]
