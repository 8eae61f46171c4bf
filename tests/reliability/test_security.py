"""Issue 6, security: no field value of a pod ever leaves the webhook (responses,
warnings, logs) in any mode, and every decision is logged exactly once with its uid."""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.process.load import LoadClient, join_clients, merged, run_clients
from tests.support.reviews import example_pod, make_review
from tests.support.server import (
    decision_lines,
    http_request,
    raw_exchange,
    running_server,
    wait_workers,
)

pytestmark = pytest.mark.process

SECRET = "s3cr3t-PRG-7f3a9c1e-value"
SECRET_NEW = "s3cr3t-PRG-b21d44aa-rotated"


def _secret_pod(value: str) -> dict[str, Any]:
    pod = example_pod()
    container = pod["spec"]["containers"][0]
    container["env"].append({"name": "DB_PASSWORD", "value": value})
    pod["spec"]["nodeSelector"] = {"vault": value}
    pod["metadata"]["annotations"] = {"token": value}
    return pod


def _hostile_reviews() -> list[tuple[str, bytes]]:
    """Reviews that carry the secret in changed, unchanged, frozen, updatable and
    malformed places."""
    old = _secret_pod(SECRET)
    reviews: list[tuple[str, Any]] = []
    changed = _secret_pod(SECRET_NEW)  # env value, nodeSelector value, annotation value
    reviews.append(("secret-changed", make_review(old, changed)))
    image = _secret_pod(SECRET)
    image["spec"]["containers"][0]["image"] = SECRET_NEW  # an allowed change to the value
    reviews.append(("secret-as-image", make_review(old, image)))
    typed = _secret_pod(SECRET)
    typed["spec"]["containers"][0]["env"] = {"DB_PASSWORD": SECRET_NEW}  # a map, not a list
    reviews.append(("secret-wrong-type", make_review(old, typed)))
    keyed = _secret_pod(SECRET)
    keyed["spec"]["restartPolicy"] = SECRET_NEW
    reviews.append(("secret-in-frozen-scalar", make_review(old, keyed)))
    no_old = make_review(None, changed)
    reviews.append(("secret-no-oldobject", no_old))
    bad_uid = make_review(old, changed)
    bad_uid["request"]["uid"] = 7
    reviews.append(("secret-bad-uid", bad_uid))
    bad_op = make_review(old, changed, operation=SECRET_NEW)
    reviews.append(("secret-as-operation", bad_op))
    deep = copy.deepcopy(make_review(old, changed))
    deep["request"]["object"]["spec"]["x"] = json.loads(
        '{"n":' * 200 + '"' + SECRET_NEW + '"' + "}" * 200
    )
    reviews.append(("secret-deep", deep))
    encoded = [(name, json.dumps(review).encode()) for name, review in reviews]
    encoded.append(("secret-not-json", json.dumps(make_review(old, changed)).encode()[:-5]))
    return encoded


@pytest.mark.parametrize("mode", ["enforce", "warn", "audit"])
def test_pod_values_never_leave_the_webhook(tmp_path: Path, mode: str) -> None:
    with running_server(tmp_path, workers=1, args=["--mode", mode]) as server:
        answers = []
        for name, body in _hostile_reviews():
            data = http_request("POST", "/validate", body, {"Content-Type": "application/json"})
            (response,) = raw_exchange(server, data)
            assert response.status < 500, (name, response.status)
            answers.append((name, response))
        metrics = server.get("/metrics")[1]
        server.stop()
        log_text = server.log_path.read_text(errors="replace")
    for name, response in answers:
        text = response.body.decode(errors="replace") + json.dumps(response.headers)
        for secret in (SECRET, SECRET_NEW):
            assert secret not in text, f"{name}: the response holds a pod value"
    seen = {name: response.status for name, response in answers}
    assert seen["secret-changed"] == 200
    verdicts = {
        name: response.json()["response"] for name, response in answers if response.status == 200
    }
    if mode == "enforce":
        assert verdicts["secret-changed"]["allowed"] is False
        assert "spec.containers[0].env" in verdicts["secret-changed"]["status"]["message"]
    if mode == "warn":
        assert verdicts["secret-changed"]["allowed"] is True
        assert verdicts["secret-changed"]["warnings"], "warn mode warns"
    for secret in (SECRET, SECRET_NEW):
        assert secret not in log_text, "a log line holds a pod value"
        assert secret.encode() not in metrics, "a metric holds a pod value"
    assert "spec.nodeSelector" in log_text, "the decision lines name the paths"


def test_every_decision_logged_exactly_once(tmp_path: Path) -> None:
    """Count decision log lines against requests sent, over several workers, with
    keep-alive and new connections, and malformed requests among them."""
    with running_server(tmp_path, workers=2, threads=4) as server:
        wait_workers(server, 2)
        stop = threading.Event()
        clients = [LoadClient(server, stop, max_requests=150) for _ in range(3)]
        clients += [LoadClient(server, stop, keepalive=False, max_requests=40) for _ in range(2)]
        run_clients(clients)
        malformed_uids = []
        for _ in range(20):
            uid = str(uuid.uuid4())
            review = make_review(example_pod(), example_pod(), uid=uid)
            del review["request"]["oldObject"]
            status, _ = server.post_review(review)
            assert status == 400
            malformed_uids.append(uid)
        join_clients(clients, timeout=180)
        stats = merged(clients)
        assert not stats.failures
        sent = stats.uids
        assert len(sent) == 3 * 150 + 2 * 40
        lines = decision_lines(server)
        logged = Counter(line["uid"] for line in lines)
        assert sum(logged.values()) == len(sent), "one decision line per request, no more"
        assert set(logged) == set(sent)
        assert all(count == 1 for count in logged.values())
        for line in lines:
            assert {"uid", "operation", "namespace", "name", "user", "allowed", "mode"} <= set(line)
            assert isinstance(line["duration_ms"], float)
        refused = Counter(
            line["uid"] for line in server.log_lines() if line.get("event") == "malformed"
        )
        assert all(refused[uid] == 1 for uid in malformed_uids)


def test_hostile_field_names_do_not_grow_metric_labels() -> None:
    """Violation metrics are labelled by rule-level path so that cardinality stays
    bounded: field names a request makes up stop making new series at the cap."""
    import orjson

    from webhook.app import create_app
    from webhook.metrics import MAX_VIOLATION_LABELS, OTHER_LABEL
    from webhook.settings import Settings

    app = create_app(Settings())
    client = app.test_client()

    def series_after(batch: str) -> set[str]:
        old, new = example_pod(), example_pod()
        for index in range(MAX_VIOLATION_LABELS // 2):
            new["spec"][f"made-up-{batch}-{index}"] = "x"
        new[f"top-{batch}"] = 1
        response = client.post(
            "/validate",
            data=orjson.dumps(make_review(old, new)),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200
        assert orjson.loads(response.data)["response"]["allowed"] is False
        text = client.get("/metrics").data.decode()
        return {
            line.rsplit(" ", 1)[0]
            for line in text.splitlines()
            if line.startswith("pod_replace_guard_violations_total{")
        }

    batches = [series_after(batch) for batch in "abcd"]
    assert len(batches[0]) > 10, "distinct paths are distinct series below the cap"
    assert len(batches[-1]) <= MAX_VIOLATION_LABELS + 1
    assert batches[-1] == batches[-2], "past the cap no new series appear"
    assert any(f'path="{OTHER_LABEL}"' in series for series in batches[-1])
