"""webhook/worker.py in a real server: deadlines, shedding, the health listener, and
readiness that follows draining and the certificate's validity.

Each test starts `python -m webhook serve` with settings that make the behaviour show
within seconds, and talks to it over loopback as a client would.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.support.reviews import update_review
from tests.support.server import (
    free_port,
    running_server,
    start_server,
    tls_socket,
)
from webhook.certs import write_certificates

pytestmark = pytest.mark.process


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except (TimeoutError, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, ssl.SSLError):
            return time.monotonic() - started
    return None


def health_get(port: int, path: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if path != "/metrics" else {"text": body}
    finally:
        conn.close()


def test_handshake_deadline_closes_a_silent_connection(tmp_path: Path) -> None:
    env = {"PRG_HANDSHAKE_TIMEOUT": "1"}
    with running_server(tmp_path, workers=1, env=env) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"\x16")  # the first byte of a TLS record, then nothing
            elapsed = closed_within(sock, 5)
        assert elapsed is not None, "still open 5 s later"
        assert 0.8 <= elapsed < 3


def test_request_deadline_closes_trickled_headers(tmp_path: Path) -> None:
    env = {"PRG_REQUEST_TIMEOUT": "2"}
    with running_server(tmp_path, workers=1, env=env) as server:
        sock = tls_socket(server, timeout=10)
        try:
            head = b"POST /validate HTTP/1.1\r\nHost: x\r\n"
            started = time.monotonic()
            closed = None
            for byte in head:  # a byte every 0.25 s: alive, never done
                try:
                    sock.send(bytes([byte]))
                except (OSError, ssl.SSLError):
                    closed = time.monotonic() - started
                    break
                time.sleep(0.25)
            if closed is None:
                rest = closed_within(sock, 5)
                closed = None if rest is None else time.monotonic() - started
        finally:
            sock.close()
        assert closed is not None, "a trickled request head was never cut off"
        assert 1.5 <= closed < 4.5


def test_a_stalled_connection_holds_no_thread(tmp_path: Path) -> None:
    """One thread per worker, and connections stuck mid-request: reviews still pass."""
    env = {"PRG_REQUEST_TIMEOUT": "30", "PRG_HANDSHAKE_TIMEOUT": "30"}
    with running_server(tmp_path, workers=1, threads=1, env=env) as server:
        stalled = []
        for index in range(20):
            sock = tls_socket(server, timeout=10)
            sock.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
            stalled.append(sock)
            if index % 2:
                raw = socket.create_connection(("127.0.0.1", server.port))
                raw.sendall(b"\x16\x03")
                stalled.append(raw)  # type: ignore[arg-type]
        started = time.monotonic()
        for _ in range(10):
            status, answer = server.post_review(update_review())
            assert status == 200
            assert answer["response"]["allowed"] is True
        elapsed = time.monotonic() - started
        for sock in stalled:
            sock.close()
    assert elapsed < 5, f"10 reviews took {elapsed:.1f} s beside 30 stalled connections"


def test_at_the_connection_bound_the_heaviest_client_is_shed(tmp_path: Path) -> None:
    """maxConnections 8: a kept-alive client from 127.0.0.1 keeps being served while
    another address opens 30 idle connections (the bound sheds those)."""
    env = {"PRG_MAX_CONNECTIONS": "8"}
    with running_server(tmp_path, workers=1, env=env) as server:
        conn = server.connection()
        body = json.dumps(update_review()).encode()
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/validate", body, headers)
        assert conn.getresponse().read()
        hogs = []
        for _ in range(30):
            raw = socket.create_connection(
                ("127.0.0.1", server.port), source_address=("127.0.2.9", 0)
            )
            hogs.append(server.tls_context().wrap_socket(raw, server_hostname="pod-replace-guard"))
            time.sleep(0.02)
        conn.request("POST", "/validate", body, headers)  # the same kept-alive connection
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        assert conn.sock is not None
        open_hogs = sum(1 for hog in hogs if closed_within(hog, 0.3) is None)
        conn.close()
        for hog in hogs:
            hog.close()
    assert open_hogs <= 8, f"{open_hogs} of the 30 idle connections still open"


def test_health_listener_serves_probes_and_metrics_but_no_reviews(tmp_path: Path) -> None:
    port = free_port()
    with running_server(
        tmp_path, workers=1, env={"PRG_HEALTH_BIND": f"127.0.0.1:{port}"}
    ) as server:
        assert health_get(port, "/healthz")[0] == 200
        status, ready = health_get(port, "/readyz")
        assert status == 200
        assert "certificate valid until" in str(ready["reason"])
        status, metrics = health_get(port, "/metrics")
        assert status == 200
        assert b"pod_replace_guard_certificate_expiry_timestamp_seconds" in metrics["text"]  # type: ignore[operator]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = json.dumps(update_review()).encode()
        conn.request("POST", "/validate", body, {"Content-Type": "application/json"})
        refused = conn.getresponse()
        assert refused.status == 404
        assert b"TLS listener only" in refused.read()
        conn.close()
        assert server.post_review(update_review())[0] == 200, "the TLS listener still judges"
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # no TLS on this port
            server.tls_context().wrap_socket(raw, server_hostname="pod-replace-guard")
        raw.close()


def test_readiness_fails_while_draining(tmp_path: Path) -> None:
    port = free_port()
    env = {"PRG_HEALTH_BIND": f"127.0.0.1:{port}", "PRG_GRACEFUL_TIMEOUT": "6"}
    server = start_server(tmp_path, workers=1, env=env)
    try:
        kept = server.connection()
        kept.request("GET", "/healthz")
        kept.getresponse().read()  # an idle kept-alive connection keeps the worker draining
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        answer: tuple[int, dict[str, object]] = (0, {})
        while time.monotonic() < deadline:
            answer = health_get(port, "/readyz")
            if answer[0] == 503:
                break
            time.sleep(0.1)
        assert answer == (503, {"status": "unavailable", "reason": "shutting down"})
        kept.request("GET", "/healthz")  # still answered while draining, then closed
        response = kept.getresponse()
        assert response.status == 200
        assert response.getheader("Connection", "").lower() == "close"
        kept.close()
        assert server.process.wait(15) == 0
    finally:
        server.stop()


def test_readiness_follows_the_certificate_validity(tmp_path: Path) -> None:
    """A serving certificate that expires while served: /readyz fails and the expiry
    metric names the moment; a renewed pair in the directory makes it ready again."""
    cert_dir = tmp_path / "certs"
    write_certificates(cert_dir, "pod-replace-guard", "pod-replace-guard", days=4 / 86400)
    port = free_port()
    env = {"PRG_HEALTH_BIND": f"127.0.0.1:{port}", "PRG_CERT_RELOAD_SECONDS": "0.2"}
    with running_server(tmp_path, workers=1, env=env, generate_certs=False) as server:
        status, ready = health_get(port, "/readyz")
        assert status == 200, ready
        text = health_get(port, "/metrics")[1]["text"]
        line = next(
            row
            for row in text.decode().splitlines()  # type: ignore[attr-defined]
            if row.startswith("pod_replace_guard_certificate_expiry_timestamp_seconds ")
        )
        expires = float(line.split()[1])
        assert 0 < expires - time.time() < 10
        time.sleep(max(0.0, expires - time.time()) + 0.5)
        status, ready = health_get(port, "/readyz")
        assert status == 503
        assert "expired" in str(ready["reason"])
        write_certificates(cert_dir, "pod-replace-guard", "pod-replace-guard", days=1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.3)
            status, ready = health_get(port, "/readyz")
        assert status == 200, ready
        assert server.post_review(update_review())[0] == 200
