"""webhook/serving/wsgi.py: the environ built from a parsed request, and the response
bytes built from what the application returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from webhook.serving.protocol import HttpProtocol, Request
from webhook.serving.wsgi import build_environ, respond

SERVER = ("127.0.0.1", "8443")
CLIENT = ("10.0.0.7", 53211)


def parsed(data: bytes) -> Request:
    protocol = HttpProtocol(1024 * 1024)
    protocol.feed(data)
    assert protocol.refusal == 0
    return protocol.pop()


def test_environ_from_a_chunked_request() -> None:
    request = parsed(
        b"POST /validate%2Fx?timeout=10s HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\nX_Spoof: 1\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    environ = build_environ(request, server=SERVER, client=CLIENT, tls=True)
    assert environ is not None
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/validate/x"
    assert environ["QUERY_STRING"] == "timeout=10s"
    assert environ["SERVER_PORT"] == "8443"  # the listener's, never the Host header's
    assert environ["REMOTE_ADDR"] == "10.0.0.7"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["CONTENT_LENGTH"] == "2"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["wsgi.input"].read() == b"{}"
    assert environ["HTTP_X_A"] == "1, 2"
    assert "HTTP_TRANSFER_ENCODING" not in environ
    assert "HTTP_X_SPOOF" not in environ


def app_returning(
    status: str, headers: list[tuple[str, str]], body: Iterable[bytes]
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, headers)
        return body

    return app


def test_response_bytes_keep_alive_and_close() -> None:
    request = parsed(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    app = app_returning("200 OK", [("Content-Type", "text/plain")], [b"o", b"k"])
    data, keep = respond(app, request, server=SERVER, client=CLIENT, tls=False, closing=False)
    assert keep
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 2" in head
    assert b"Connection: keep-alive" in head
    assert body == b"ok"
    data, keep = respond(app, request, server=SERVER, client=CLIENT, tls=False, closing=True)
    assert not keep
    assert b"Connection: close" in data


def test_head_has_no_body_and_http_1_0_closes() -> None:
    app = app_returning("200 OK", [("Content-Length", "2")], [b""])
    request = parsed(b"HEAD / HTTP/1.0\r\n\r\n")
    data, keep = respond(app, request, server=SERVER, client=CLIENT, tls=False, closing=False)
    assert not keep
    assert data.endswith(b"\r\n\r\n")
    assert b"Content-Length: 2" in data


def test_a_failing_application_is_a_500_that_closes() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("boom")

    request = parsed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    data, keep = respond(app, request, server=SERVER, client=CLIENT, tls=False, closing=False)
    assert data.startswith(b"HTTP/1.1 500 ")
    assert not keep
