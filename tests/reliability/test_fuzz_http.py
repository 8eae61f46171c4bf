"""Fuzzing the serving layer with request bytes, through the real server.

Valid requests (reviews, probes; Content-Length or chunked, with extensions and
trailers), pipelined, mutated byte-wise, with random chunk grammar, sent over TLS or to
the plain-HTTP health port in pieces split at random points. For every case: at most one
response per request (nothing after a response that closes the connection), a
review on another connection answered within 1 s, and no worker restarted.

Budget: PRG_FUZZ_EXAMPLES / FUZZ_EXAMPLES examples (200 by default; ``make fuzz``
sets 20000).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.reviews import update_review
from tests.support.server import Server, client_socket, running_server_with_health
from tests.unit.fuzzing import FUZZ

pytestmark = pytest.mark.process

REVIEW = json.dumps(update_review()).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server_with_health(tmp_path_factory.mktemp("fuzz-http"), 2) as started:
        yield started


def hex_size(size: int) -> st.SearchStrategy[bytes]:
    plain = f"{size:x}".encode()
    return st.sampled_from(
        [
            plain,
            plain.upper(),
            b"0" + plain,
            b"-" + plain,
            b"+" + plain,
            b"0x" + plain,
            b" " + plain,
        ]
    )


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    out = b""
    for piece in pieces:
        if not piece:
            continue  # a zero size is the last chunk
        size = draw(hex_size(len(piece))) if draw(st.integers(0, 9)) == 0 else b"%x" % len(piece)
        extension = draw(st.sampled_from([b"", b";a=b", b";" + b"e" * 1500]))
        eol = draw(st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r"]))
        out += size + extension + eol + piece + b"\r\n"
    trailer = draw(st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
    return out + b"0\r\n" + trailer + b"\r\n"


@st.composite
def request(draw: st.DrawFn) -> bytes:
    method, path, body = draw(
        st.sampled_from(
            [
                ("POST", "/validate", REVIEW),
                ("GET", "/healthz", b""),
                ("GET", "/readyz", b""),
                ("POST", "/healthz", b"{}"),
            ]
        )
    )
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0"]))
    headers = [b"Host: x", b"Content-Type: application/json"]
    framing = draw(st.sampled_from(["length", "chunked", "both", "none"]))
    if framing in ("length", "both"):
        headers.append(b"Content-Length: %d" % len(body))
    if framing in ("chunked", "both"):
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body(body))
    elif framing == "none":
        body = b""
    extra = draw(
        st.lists(
            st.sampled_from(
                [
                    b"Expect: 100-continue",
                    b"Connection: close",
                    b"Connection: keep-alive",
                    b"Content-Length: 5",
                    b"X-Fold: a\r\n b",
                    b"X-Bare: a\rb",
                    b"X_Under: 1",
                    b"X-Long: " + b"v" * 9000,
                ]
            ),
            max_size=2,
        )
    )
    head = f"{method} {path} {version}".encode()
    return b"\r\n".join([head, *headers, *extra]) + b"\r\n\r\n" + body


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> tuple[bytes, int]:
    """``data`` with a few bytes changed, and how many changes."""
    out = bytearray(data)
    changes = draw(st.integers(1, 3))
    for _ in range(changes):
        if not out:
            break
        position = draw(st.integers(0, len(out) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "duplicate"]))
        if action == "flip":
            out[position] = draw(st.sampled_from(b"\r\n\x00 :;-+0x9aZ\t"))
        elif action == "delete":
            del out[position : position + draw(st.integers(1, 8))]
        elif action == "insert":
            out[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            out[position:position] = out[position : position + draw(st.integers(1, 40))]
    return bytes(out), changes


def responses_in(data: bytes) -> tuple[int, bool]:
    """(responses, whether anything followed one that said Connection: close)."""
    count, after_close, position = 0, False, 0
    while position < len(data):
        end = data.find(b"\r\n\r\n", position)
        if end < 0:
            break
        head = data[position:end].lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip() == b"content-length":
                length = int(value)
        position = end + 4 + length
        if head.startswith(b"http/1.1 100"):
            continue
        count += 1
        if b"connection: close" in head and position < len(data):
            after_close = True
    return count, after_close


def exchange(server: Server, tls: bool, pieces: list[bytes]) -> bytes:
    sock = client_socket(server, tls)
    received = b""
    with sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # closed by the server: what it sent is still read below
        sock.settimeout(0.1)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError):
                break
            if not chunk:
                break
            received += chunk
    return received


@FUZZ
@given(
    requests=st.lists(request(), min_size=1, max_size=3),
    data=st.data(),
    tls=st.booleans(),
)
def test_fuzz_request_bytes(
    server: Server, requests: list[bytes], data: st.DataObject, tls: bool
) -> None:
    payload = b"".join(requests)
    # Unchanged, the requests are delimited as generated: one response each at most.
    # Each change may split a request in two (a duplicated end of a body, say).
    changes = 0
    if data.draw(st.booleans()):
        payload, changes = data.draw(mutated(payload))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=5)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    pids = server.worker_pids()
    received = exchange(server, tls, pieces)
    count, after_close = responses_in(received)
    assert count <= len(requests) + changes, received[:2000]
    assert not after_close, received[:2000]
    started = time.monotonic()
    status, _answer = server.post_review(update_review())
    assert status == 200
    assert time.monotonic() - started < 1.0
    assert server.worker_pids() == pids, "a worker was restarted"
