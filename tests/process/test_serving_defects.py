"""Issue 22's defects, each through the real server (`python -m webhook serve`) over TLS
and, where it applied there, on the plain-HTTP health port. Each of these failed on the
serving loop that framed requests with its own code (before webhook/serving/)."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.reviews import update_review
from tests.support.server import (
    Server,
    client_socket,
    free_port,
    http_request,
    running_server,
    running_server_with_health,
    tls_socket,
)

pytestmark = pytest.mark.process

REVIEW = json.dumps(update_review()).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server_with_health(tmp_path_factory.mktemp("defects"), 4) as started:
        yield started


def connect(server: Server, tls: bool, timeout: float = 5.0) -> socket.socket:
    return client_socket(server, tls, timeout)


def read_all(sock: socket.socket, seconds: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``seconds`` pass (False)."""
    data = b""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, ssl.SSLError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def statuses(data: bytes) -> list[int]:
    return [int(line[9:12]) for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def review_seconds(server: Server) -> float:
    started = time.monotonic()
    status, answer = server.post_review(update_review())
    assert status == 200
    assert answer["response"]["allowed"] is True
    return time.monotonic() - started


def chunked(path: str, chunks: list[bytes], method: str = "POST") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    return head + b"".join(chunks)


# 1: a signed chunk size looped the worker; 0x10, +5, 1_0 were taken as sizes.
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "health"])
@pytest.mark.parametrize("size", [b"-5", b"0x10", b"+5", b"1_0"])
def test_chunk_sizes_that_are_not_hexadecimal_are_refused(
    server: Server, tls: bool, size: bytes
) -> None:
    with connect(server, tls) as sock:
        sock.sendall(chunked("/healthz", [size + b"\r\nhello\r\n0\r\n\r\n"], "GET"))
        data, closed = read_all(sock, 3)
    assert statuses(data) == [400]
    assert closed, "the connection stays open after a refused request"
    assert review_seconds(server) < 1.0


# 2: each read re-framed the chunked body from its first byte.
def test_a_body_trickled_in_one_byte_chunks_costs_linear_work(server: Server) -> None:
    stop = threading.Event()

    def trickle() -> None:
        with connect(server, True, timeout=10) as sock:
            sock.sendall(chunked("/validate", []))
            while not stop.is_set():
                try:
                    sock.sendall(b"1\r\n \r\n" * 8)  # 8 one-byte chunks per TLS record
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    time.sleep(1.5)  # tens of thousands of chunks in
    try:
        slowest = max(review_seconds(server) for _ in range(10))
    finally:
        stop.set()
        thread.join(10)
    assert slowest < 0.5, f"a review took {slowest:.2f} s beside the trickled chunks"


# 3: requests the loop's framing refused or misjudged held a pool thread reading the socket.
def test_no_malformed_request_holds_a_thread(server: Server) -> None:
    held = []
    for _ in range(8):  # a chunk-size line over 1024 bytes, unfinished
        sock = connect(server, True)
        sock.sendall(chunked("/validate", [b"1;" + b"e" * 2000]))
        held.append(sock)
    for _ in range(8):  # bare LF line endings on the health port
        sock = connect(server, False)
        sock.sendall(b"POST /healthz HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n5\nhel")
        held.append(sock)
    for tls in (True, False):
        for _ in range(8):  # a body far over the limit, announced and never sent
            sock = connect(server, tls)
            sock.sendall(http_request("POST", "/validate", headers={"Content-Length": "99999999"}))
            held.append(sock)
    try:
        slowest = 0.0
        for _ in range(5):
            started = time.monotonic()
            with connect(server, False) as probe:
                probe.sendall(http_request("GET", "/healthz", headers={"Connection": "close"}))
                data, _closed = read_all(probe, 3)
            assert statuses(data) == [200]
            slowest = max(slowest, time.monotonic() - started)
        refused = [statuses(read_all(sock, 0.5)[0]) for sock in held[8:]]
    finally:
        for sock in held:
            sock.close()
    assert slowest < 1.0, f"a probe took {slowest:.2f} s"
    assert refused[:8] == [[400]] * 8
    assert refused[8:] == [[413]] * 16


# 4: paused requests had their deadline stopped and moved back, twice when resumes
# nested (~1000 s deadlines), and waited one after another a full timeout each.
def test_paused_requests_keep_a_hard_deadline(tmp_path: Path) -> None:
    """Three requests stall over the buffer budget (64 KiB x 2), then a 100 KB review
    arrives: every stalled one is closed (408) by its hard deadline, twice the request
    timeout from its start, and the review is answered right after."""
    timeout = 3.0
    env = {"PRG_INFLIGHT_BYTES": str(64 * 1024), "PRG_REQUEST_TIMEOUT": str(timeout)}
    with running_server(tmp_path, workers=1, env=env) as server:
        hogs = []
        started = time.monotonic()
        for _ in range(3):  # 200 KB of a 1 MB body each, then silence
            sock = tls_socket(server)
            head = http_request("POST", "/validate", headers={"Content-Length": "1000000"})
            sock.sendall(head + b" " * 200_000)
            hogs.append(sock)
        time.sleep(1.0)
        review = update_review(lambda pod: pod.update(padding="x" * 100_000))
        status, _answer = server.post_review(review)
        answered = time.monotonic() - started
        closed = []
        for sock in hogs:
            data, was_closed = read_all(sock, 8)
            closed.append((was_closed, statuses(data), time.monotonic() - started))
            sock.close()
    assert status == 200
    assert answered < 2 * timeout + 1.5, f"the 100 KB review answered {answered:.1f} s in"
    for was_closed, answer, after in closed:
        assert was_closed, after
        assert answer == [408], (answer, after)
        assert after < 2 * timeout + 1.5, f"a stalled request was closed {after:.1f} s in"


# 5: at the cap, the address with the most connections lost one, however well served.
def test_at_the_cap_served_connections_outlast_one_per_address_attackers(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1, env={"PRG_MAX_CONNECTIONS": "8"}) as server:
        served = [server.connection() for _ in range(3)]
        for conn in served:
            assert server.post_review(update_review(), conn)[0] == 200
        attackers = []
        for index in range(30):
            raw = socket.create_connection(
                ("127.0.0.1", server.port), source_address=(f"127.0.3.{index + 1}", 0)
            )
            attackers.append(raw)
            time.sleep(0.01)
        try:
            for conn in served:  # the same kept-alive connections, not new ones
                assert server.post_review(update_review(), conn)[0] == 200
                assert conn.sock is not None
                before = conn.sock
                server.post_review(update_review(), conn)
                assert conn.sock is before, "the served connection was closed"
        finally:
            for raw in attackers:
                raw.close()
            for conn in served:
                conn.close()


# 6: loop framing accepted what gunicorn's parser refused: 200, then 400, on one request.
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "health"])
def test_one_response_to_a_request_the_parser_refuses(server: Server, tls: bool) -> None:
    with connect(server, tls) as sock:
        sock.sendall(chunked("/healthz", [b"0x5\r\nhello\r\n0\r\n\r\n"], "GET"))
        data, closed = read_all(sock, 3)
    assert statuses(data) == [400]
    assert closed


# 7: 100 Continue went to HTTP/1.0 clients, and twice to HTTP/1.1 ones.
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "health"])
@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_100_continue_once_and_only_to_http_1_1(server: Server, tls: bool, version: str) -> None:
    path = "/validate" if tls else "/healthz"
    head = http_request(
        "POST",
        path,
        headers={
            "Content-Length": str(len(REVIEW)),
            "Content-Type": "application/json",
            "Expect": "100-continue",
            "Connection": "close",
        },
        version=version,
    )
    with connect(server, tls) as sock:
        sock.sendall(head)
        early, _closed = read_all(sock, 0.6)
        sock.sendall(REVIEW)
        rest, closed = read_all(sock, 3)
    assert closed
    expected = [100] if version == "HTTP/1.1" else []
    assert statuses(early) == expected
    final = statuses(rest)
    assert len(final) == 1
    assert final[0] == (200 if tls else 405)


# Issue 22 review, F1: an endless trailer field grew without bound (~400 MB a worker)
# and stalled the loop for seconds; it is refused (431) once MAX_HEAD_BYTES of it came.
def test_an_endless_trailer_field_is_refused(server: Server) -> None:
    with connect(server, False) as sock:
        sock.sendall(chunked("/healthz", [b"1\r\na\r\n0\r\nX-Trailer: "]))
        sent = 0
        answered = False
        try:
            while sent < 64 * 1024 * 1024 and not answered:
                sock.sendall(b"a" * 65536)
                sent += 65536
                answered = bool(select.select([sock], [], [], 0)[0])
        except OSError:
            pass  # refused and closed: the rest is not read
        data, _closed = read_all(sock, 3)
    assert statuses(data) == [431]
    assert sent < 4 * 1024 * 1024, f"{sent} bytes of one trailer field were read"
    assert review_seconds(server) < 1.0


# Issue 22 review, F2: served connections that start their next request and stall
# were never shed: at the cap every newcomer (the API server, probes) was refused.
def test_served_connections_with_a_stalled_request_do_not_lock_out(tmp_path: Path) -> None:
    health = free_port()
    env = {"PRG_MAX_CONNECTIONS": "8", "PRG_HEALTH_BIND": f"127.0.0.1:{health}"}
    with running_server(tmp_path, workers=1, env=env) as server:
        attackers = []
        try:
            for index in range(10):  # up to 4 per address: fill the cap of 8
                raw = socket.create_connection(
                    ("127.0.0.1", server.port),
                    timeout=5,
                    source_address=(f"127.0.5.{index % 3 + 1}", 0),
                )
                try:
                    sock = server.tls_context().wrap_socket(raw, server_hostname="127.0.0.1")
                    sock.sendall(http_request("GET", "/healthz"))
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += sock.recv(4096)
                except (OSError, ssl.SSLError):
                    raw.close()  # at the cap, with nothing to shed: refused
                    continue
                assert statuses(data) == [200]
                sock.sendall(b"G")  # the next request begins, and stalls
                attackers.append(sock)
            assert len(attackers) >= 6
            time.sleep(1.5)  # past the grace a served connection's request has
            for _ in range(3):
                assert review_seconds(server) < 1.0  # a new connection each
                with socket.create_connection(("127.0.0.1", health), timeout=5) as probe:
                    probe.sendall(http_request("GET", "/healthz", headers={"Connection": "close"}))
                    data, _closed = read_all(probe, 3)
                assert statuses(data) == [200]
        finally:
            for sock in attackers:
                sock.close()
