"""Issue 3, real-process tests: ``python -m webhook serve`` over HTTPS on loopback."""

from __future__ import annotations

import json
import stat
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.process.load import LoadClient, join_clients, merged, review_templates, run_clients
from tests.support.reviews import update_review
from tests.support.server import (
    Server,
    decision_lines,
    established_client_ports,
    running_server,
    wait_workers,
)

pytestmark = pytest.mark.process


def deny(pod: dict[str, Any]) -> None:
    pod["spec"]["restartPolicy"] = "Never"


def allow(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["image"] = "beego:v2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("serve"), workers=2, threads=4) as running:
        wait_workers(running, 2)
        yield running


def test_valid_reviews_allowed_and_denied(server: Server) -> None:
    status, body = server.post_review(update_review(allow, uid="allow-1"))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"] == {"uid": "allow-1", "allowed": True}

    status, body = server.post_review(update_review(deny, uid="deny-1"))
    assert status == 200
    response = body["response"]
    assert response["uid"] == "deny-1"
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "spec.restartPolicy" in response["status"]["message"]

    status, body = server.post_review(
        update_review(deny, uid="beta-1", api_version="admission.k8s.io/v1beta1")
    )
    assert (status, body["apiVersion"], body["response"]["allowed"]) == (
        200,
        "admission.k8s.io/v1beta1",
        False,
    )
    status, body = server.post_review(update_review(deny, uid="sub-1", sub_resource="status"))
    assert (status, body["response"]["allowed"]) == (200, True), "subresources are not judged"


def test_health_endpoints(server: Server) -> None:
    assert server.get("/healthz")[0] == 200
    status, body = server.get("/readyz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_keepalive_reuses_one_connection(server: Server) -> None:
    """Many reviews over one TCP connection and one TLS session; the server logs each."""
    conn = server.connection()
    conn.connect()
    assert conn.sock is not None
    sock = conn.sock
    local_port = sock.getsockname()[1]
    uids = [f"keepalive-{index}-{uuid.uuid4()}" for index in range(60)]
    try:
        for index, uid in enumerate(uids):
            status, body = server.post_review(
                update_review(deny if index % 2 else allow, uid=uid), conn
            )
            assert status == 200
            assert body["response"]["uid"] == uid
            assert body["response"]["allowed"] is (index % 2 == 0)
            # http.client reconnects silently when the server closes: it must not have.
            assert conn.sock is sock, f"a new connection after {index} requests"
            assert sock.getsockname()[1] == local_port
        # The server sees exactly one connection from us, still open.
        assert local_port in established_client_ports(server)
    finally:
        conn.close()
    logged = Counter(line["uid"] for line in decision_lines(server))
    assert all(logged[uid] == 1 for uid in uids), "each request logged once"


def _metric(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric from the Prometheus text format: {labels: value}."""
    samples = {}
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_text, _, value = line[len(name) + 1 :].rpartition("} ")
        labels = tuple(
            sorted(
                (pair.split("=", 1)[0], pair.split("=", 1)[1].strip('"'))
                for pair in labels_text.split(",")
                if pair
            )
        )
        samples[labels] = float(value)
    return samples


def test_metrics_count_requests_across_workers(tmp_path: Path) -> None:
    """/metrics adds up every worker's counts, whichever worker answers the scrape."""
    with running_server(tmp_path, workers=3, threads=2) as server:
        workers = wait_workers(server, 3)
        stop = threading.Event()
        # New connection per request, from several clients at once: spread over workers.
        clients = [
            LoadClient(server, stop, keepalive=False, max_requests=20, templates=review_templates())
            for _ in range(6)
        ]
        run_clients(clients)
        join_clients(clients, timeout=120)
        stats = merged(clients)
        assert not stats.failures, stats.failures[:3]
        assert stats.ok == 120
        # Both verdicts were counted by more than one worker process.
        metric_files = {path.name for path in (tmp_path / "metrics").glob("counter_*.db")}
        writers = {int(name.split("_")[1].split(".")[0]) for name in metric_files}
        assert len(writers & set(workers)) >= 2, (writers, workers)
        for _ in range(6):  # several scrapes, answered by whichever worker
            status, body = server.get("/metrics")
            assert status == 200
            requests = _metric(body.decode(), "pod_replace_guard_admission_requests_total")
            allowed = requests.get((("decision", "allowed"), ("operation", "UPDATE")), 0)
            denied = requests.get((("decision", "denied"), ("operation", "UPDATE")), 0)
            assert (allowed, denied) == (60, 60), requests
            count = _metric(body.decode(), "pod_replace_guard_admission_duration_seconds_count")
            assert sum(count.values()) == 120
            violations = _metric(body.decode(), "pod_replace_guard_violations_total")
            assert violations == {(("path", "spec.restartPolicy"),): 60}


def test_empty_cert_dir_generates_certificates(tmp_path: Path) -> None:
    """``make run`` from a fresh clone: no certificates yet, so serve makes dev ones."""
    cert_dir = tmp_path / "certs"
    assert not cert_dir.exists()
    with running_server(tmp_path, workers=1, generate_certs=False) as server:
        for name in ("ca.crt", "ca.key", "tls.crt", "tls.key"):
            assert (cert_dir / name).is_file(), name
        for name in ("ca.key", "tls.key"):
            assert stat.S_IMODE((cert_dir / name).stat().st_mode) == 0o600, name
        events = [line for line in server.log_lines() if line.get("event") == "dev-certificates"]
        assert len(events) == 1
        assert events[0]["cert_dir"] == str(cert_dir)
        assert "generated" in events[0]["message"]
        # The generated CA verifies the generated serving certificate.
        status, body = server.post_review(update_review(deny))
        assert (status, body["response"]["allowed"]) == (200, False)
    # A second start reuses them and says nothing about generating.
    serial = (cert_dir / "tls.crt").read_bytes()
    with running_server(tmp_path, workers=1, generate_certs=False) as again:
        assert not [line for line in again.log_lines() if line.get("event") == "dev-certificates"]
    assert (cert_dir / "tls.crt").read_bytes() == serial


def test_short_keepalive_is_cautioned_in_the_log(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1, env={"PRG_KEEPALIVE": "30"}) as server:
        status, _ = server.post_review(update_review())
        assert status == 200
        cautioned = [line for line in server.log_lines() if line.get("event") == "config-caution"]
    assert len(cautioned) == 1
    assert cautioned[0]["level"] == "warning"
    assert cautioned[0]["message"].startswith("PRG_KEEPALIVE: 30 s is not longer")


def test_default_settings_log_no_caution(server: Server) -> None:
    assert not [line for line in server.log_lines() if line.get("event") == "config-caution"]
