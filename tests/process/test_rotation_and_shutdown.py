"""Issue 3: certificate rotation under load, and the SIGTERM drain, on real processes."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.process.load import LoadClient, join_clients, merged, peer_serial, run_clients
from tests.support.reviews import update_review
from tests.support.server import (
    RawResponse,
    Server,
    decision_lines,
    read_response,
    running_server,
    start_server,
    tls_socket,
    wait_workers,
)
from webhook.certs import write_certificates
from webhook.settings import Settings

pytestmark = pytest.mark.process

RELOAD_SECONDS = Settings().cert_reload_seconds  # the documented default (1 s)


def serving_serial(cert_dir: Path) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate((cert_dir / "tls.crt").read_bytes()).serial_number


def rotate(server: Server) -> tuple[int, float]:
    """Replace tls.crt/tls.key as cert-manager would (same CA); (new serial, done at)."""
    write_certificates(server.cert_dir, "pod-replace-guard", "pod-replace-guard")
    return serving_serial(server.cert_dir), time.monotonic()


def test_rotation_under_load_zero_failures(tmp_path: Path) -> None:
    """Keep-alive and new-connection clients run through a rotation: no request fails,
    established connections carry on, and every connection started more than
    cert_reload_seconds after the files changed gets the new certificate."""
    with running_server(tmp_path, workers=2, threads=4) as server:
        wait_workers(server, 2)
        old_serial = serving_serial(server.cert_dir)
        stop = threading.Event()
        keepalive = [LoadClient(server, stop, pause=0.005) for _ in range(3)]
        fresh = [LoadClient(server, stop, keepalive=False, pause=0.02) for _ in range(3)]
        run_clients(keepalive + fresh)
        time.sleep(1.5)
        new_serial, rotated_at = rotate(server)
        assert new_serial != old_serial
        time.sleep(RELOAD_SECONDS + 2.0)
        stop.set()
        join_clients(keepalive + fresh)

        stats = merged(keepalive + fresh)
        assert not stats.failures, stats.failures[:3]
        # Kept-alive connections were never dropped: one connection each, old certificate.
        for client in keepalive:
            assert len(client.stats.connections) == 1
            assert client.stats.connections[0].serial == old_serial
        connections = [conn for client in fresh for conn in client.stats.connections]
        before = [conn for conn in connections if conn.started < rotated_at]
        late = [conn for conn in connections if conn.started > rotated_at + RELOAD_SECONDS + 0.5]
        assert before
        assert late
        assert all(conn.serial == old_serial for conn in before)
        # Within one reload interval (plus the milliseconds that building the new TLS
        # context takes, with margin for a busy machine), new connections get the new one.
        assert {conn.serial for conn in late} == {new_serial}, "new cert within the delay"
        first_new = min(conn.started for conn in connections if conn.serial == new_serial)
        last_old = max(
            (conn.started for conn in connections if conn.serial == old_serial), default=0.0
        )
        print(
            f"\nrotation: new certificate first served {first_new - rotated_at:.3f}s after, "
            f"old one last served {last_old - rotated_at:.3f}s after"
        )
        assert stats.ok > 100
        reloads = [
            line
            for line in server.log_lines()
            if line.get("event") == "certificate-reload" and line.get("result") == "success"
        ]
        assert {line["serial"] for line in reloads} == {f"{new_serial:x}"}


def _slow_review_client(
    server: Server,
    body: bytes,
    ready: threading.Barrier,
    go: threading.Event,
    results: list[RawResponse | Exception],
) -> None:
    """Send half the request, wait for SIGTERM, send the rest, read the answer."""
    head = (
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        with tls_socket(server, timeout=60) as sock:
            half = len(body) // 2
            sock.sendall(head + body[:half])
            ready.wait(30)
            go.wait(30)
            sock.sendall(body[half:])
            reader = sock.makefile("rb")
            try:
                results.append(read_response(reader))
            finally:
                reader.close()
    except Exception as error:  # recorded and asserted on by the test
        results.append(error)


def _big_review(uid: str, allowed: bool, megabytes: int) -> bytes:
    def change(pod: dict[str, Any]) -> None:
        if allowed:
            pod["spec"]["containers"][0]["image"] = "beego:v2"
        else:
            pod["spec"]["restartPolicy"] = "Never"

    review = update_review(change, uid=uid)
    for pod in (review["request"]["object"], review["request"]["oldObject"]):
        # Many env entries: a large pod that takes real work to parse and compare.
        pod["spec"]["containers"][0]["env"] = [
            {"name": f"VAR_{index}", "value": "v" * 100} for index in range(megabytes * 8000)
        ]
    return json.dumps(review).encode()


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    """SIGTERM while several-MB reviews are half uploaded: every one is answered
    correctly, each is logged once, and the server exits 0."""
    server = start_server(tmp_path, workers=2, threads=8)
    try:
        wait_workers(server, 2)
        clients = 8  # <= threads per worker, so every connection is in a worker thread
        uids = [str(uuid.uuid4()) for _ in range(clients)]
        bodies = [_big_review(uid, index % 2 == 0, 3) for index, uid in enumerate(uids)]
        ready = threading.Barrier(clients + 1)
        go = threading.Event()
        results: list[RawResponse | Exception] = []
        threads = [
            threading.Thread(
                target=_slow_review_client, args=(server, body, ready, go, results), daemon=True
            )
            for body in bodies
        ]
        for thread in threads:
            thread.start()
        ready.wait(60)  # every request is half sent: in flight
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the workers are draining now
        assert server.process.poll() is None, "exited with requests in flight"
        go.set()
        for thread in threads:
            thread.join(60)
        exit_code = server.process.wait(60)
    finally:
        server.stop()
    assert len(results) == clients
    errors = [result for result in results if isinstance(result, Exception)]
    assert not errors, errors
    answers = {}
    for result in results:
        assert isinstance(result, RawResponse)
        assert result.status == 200, result.body[:300]
        answer = result.json()["response"]
        answers[answer["uid"]] = answer["allowed"]
    assert answers == {uid: index % 2 == 0 for index, uid in enumerate(uids)}
    assert exit_code == 0
    logged = Counter(line["uid"] for line in decision_lines(server))
    assert all(logged[uid] == 1 for uid in uids)
    assert any("Handling signal: term" in str(line.get("message")) for line in server.log_lines())


def test_sigterm_idle_keepalive_connection_not_used_after_close(tmp_path: Path) -> None:
    """A client with an idle kept-alive connection when SIGTERM arrives is either
    answered or told to close, never left with a half-handled request."""
    server = start_server(tmp_path, workers=1, threads=2)
    try:
        conn = server.connection()
        status, _ = server.post_review(update_review(), conn)
        assert status == 200
        assert conn.sock is not None
        serial = peer_serial(conn.sock)
        assert serial == serving_serial(server.cert_dir)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Within the stop linger the idle connection is still served, with Connection: close.
        conn.request(
            "POST",
            "/validate",
            json.dumps(update_review(uid="after-term")).encode(),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["response"]["uid"] == "after-term"
        assert response.getheader("Connection", "").lower() == "close"
        conn.close()
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def _expiry_metric(server: Server) -> float:
    status, body = server.get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("pod_replace_guard_certificate_expiry_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError("no certificate expiry metric")


def test_idle_workers_reload_too_so_the_expiry_metric_follows(tmp_path: Path) -> None:
    """The metric is the earliest expiry across workers: a worker that takes no
    connection must still load renewed files, or the metric (and its alert) stays on
    the old certificate. One request after the renewal reaches one worker only."""
    from cryptography import x509

    with running_server(tmp_path, workers=2, threads=4) as server:
        wait_workers(server, 2)
        first = _expiry_metric(server)
        # Renewed for a longer life (365 -> 400 days), then no traffic at all.
        write_certificates(server.cert_dir, "pod-replace-guard", "pod-replace-guard", days=400)
        renewed = x509.load_pem_x509_certificate((server.cert_dir / "tls.crt").read_bytes())
        time.sleep(RELOAD_SECONDS + 2.0)
        after = _expiry_metric(server)
        assert after > first
        assert after == pytest.approx(renewed.not_valid_after_utc.timestamp(), abs=1)
