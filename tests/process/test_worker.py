"""webhook/serving/ in a real server: deadlines, shedding, the health listener, and
readiness that follows draining and the certificate's validity.

Each test starts `python -m webhook serve` with settings that make the behaviour show
within seconds, and talks to it over loopback as a client would.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.reviews import update_review
from tests.support.server import (
    Server,
    connection_owners,
    established_client_ports,
    free_port,
    http_request,
    running_server,
    start_server,
    tls_socket,
    wait_workers,
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


def _many_frozen_changes(pod: dict[str, Any]) -> None:
    pod["spec"]["nodeSelector"] = {f"zone-{index}": "elsewhere" for index in range(300)}


def test_a_client_that_never_reads_its_answers_stalls_no_one(tmp_path: Path) -> None:
    """Small reviews are answered by the selector loop itself, which must never wait on
    a socket: a client that pipelines reviews and reads none of the answers (its
    receive buffer is kept tiny) waits alone until its request deadline, while another
    client is answered. One worker, one thread: nothing else could answer."""
    env = {"PRG_REQUEST_TIMEOUT": "3"}
    with running_server(tmp_path, workers=1, threads=1, env=env) as server:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", server.port))
        hog = server.tls_context().wrap_socket(raw, server_hostname="127.0.0.1")
        hog_port = hog.getsockname()[1]
        # Denials naming 300 fields: ~25 KB answers, which soon fill the socket buffers.
        request = http_request(
            "POST",
            "/validate",
            json.dumps(update_review(_many_frozen_changes)).encode(),
            {"Content-Type": "application/json"},
        )

        def pipeline() -> None:
            try:
                for _ in range(4000):
                    hog.sendall(request)
            except (OSError, ssl.SSLError):
                pass  # the server stopped reading, then closed the connection

        sender = threading.Thread(target=pipeline, daemon=True)
        sender.start()
        time.sleep(1.0)
        assert hog_port in established_client_ports(server)
        started = time.monotonic()
        for _ in range(10):
            status, answer = server.post_review(update_review())
            assert status == 200
            assert answer["response"]["allowed"] is True
        elapsed = time.monotonic() - started
        closed_after = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if hog_port not in established_client_ports(server):
                closed_after = time.monotonic() - started
                break
            time.sleep(0.1)
        hog.close()
        sender.join(5)
    assert elapsed < 2, f"10 reviews took {elapsed:.1f} s beside a client that reads nothing"
    assert closed_after is not None, "the connection that reads nothing was never closed"


def _wait_until_both_workers_answer(server: Server, timeout: float = 30.0) -> None:
    """Readiness needs one worker; balancing needs both to have loaded the app (until
    then the first takes every connection, as it must)."""
    pids = set(wait_workers(server, 2))
    answered: set[int | None] = set()
    deadline = time.monotonic() + timeout
    while not pids <= answered:
        assert time.monotonic() < deadline, f"workers {pids - answered} never answered"
        held = []
        for _ in range(4):
            conn = server.connection()
            status, _answer = server.post_review(update_review(), conn)
            assert status == 200
            held.append(conn)
        ports = [conn.sock.getsockname()[1] for conn in held if conn.sock]
        answered |= set(connection_owners(server, ports).values())
        for conn in held:
            conn.close()
    time.sleep(0.2)  # the server ends of the closed connections are gone


def test_connections_opened_at_once_are_spread_over_the_workers(tmp_path: Path) -> None:
    """16 kept-alive connections opened one after another, as a client does when its
    load rises: each of the two workers holds about half of them (webhook/balance.py),
    not one worker all of them."""
    with running_server(tmp_path, workers=2) as server:
        _wait_until_both_workers_answer(server)
        connections = []
        for _ in range(16):
            conn = server.connection()
            conn.request(
                "POST",
                "/validate",
                json.dumps(update_review()).encode(),
                {"Content-Type": "application/json"},
            )
            assert conn.getresponse().read()
            connections.append(conn)
        ports = [conn.sock.getsockname()[1] for conn in connections if conn.sock]
        owners = connection_owners(server, ports)
        for conn in connections:
            conn.close()
    held = sorted(
        sum(1 for owner in owners.values() if owner == pid) for pid in set(owners.values())
    )
    assert None not in owners.values(), owners
    assert len(held) == 2, f"one worker holds every connection: {held}"
    assert held[0] >= 6, f"connections per worker: {held}"


def test_a_stopped_worker_does_not_hold_up_new_connections(tmp_path: Path) -> None:
    """A worker leaves a new connection to a worker holding fewer only for a few
    milliseconds: with the emptier worker stopped (SIGSTOP), new connections are still
    taken and answered at once by the other."""
    with running_server(tmp_path, workers=2) as server:
        pids = wait_workers(server, 2)
        busy = server.connection()  # the first worker to answer holds one connection
        busy.request(
            "POST",
            "/validate",
            json.dumps(update_review()).encode(),
            {"Content-Type": "application/json"},
        )
        assert busy.getresponse().read()
        assert busy.sock is not None
        holder = connection_owners(server, [busy.sock.getsockname()[1]])
        other = next(pid for pid in pids if pid not in holder.values())
        os.kill(other, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for _ in range(20):
                status, _answer = server.post_review(update_review())
                assert status == 200
            elapsed = time.monotonic() - started
        finally:
            os.kill(other, signal.SIGCONT)
            busy.close()
    assert elapsed < 3, f"20 reviews on new connections took {elapsed:.1f} s"


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
