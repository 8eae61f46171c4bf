"""A parsed request through the WSGI application, to the bytes of its response.

Runs in the loop thread for small admission requests and in a pool thread for the rest;
either way it touches no socket: it returns the whole response, which the loop sends.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import httptools

from webhook.serving.protocol import Request, refusal_bytes

log = logging.getLogger("pod_replace_guard.serving")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# Headers the server decides, whatever the application says.
_HOP_BY_HOP: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})
_NO_BODY: Final = frozenset({204, 304})


class _Date:
    """The Date header, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


def build_environ(
    request: Request, *, server: tuple[str, str], client: tuple[str, int], tls: bool
) -> dict[str, Any] | None:
    """The WSGI environ of ``request`` (PEP 3333); None: a target that is not a URL."""
    try:
        url = httptools.parse_url(request.target)
    except httptools.HttpParserInvalidURLError:
        return None
    path = url.path or b"/"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": (url.query or b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": server[1],
        "SERVER_PROTOCOL": f"HTTP/{request.version}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "RAW_URI": request.target.decode("latin-1"),
        # The whole body is here: its length, whatever framing carried it.
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if tls else "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        if b"_" in name:
            continue  # X_Forwarded_For would pass for X-Forwarded-For (gunicorn drops these)
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in {"CONTENT_LENGTH", "TRANSFER_ENCODING"}:
            continue
        if key != "CONTENT_TYPE":
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]}, {text}" if key in environ else text
    return environ


def respond(
    app: WsgiApp,
    request: Request,
    *,
    server: tuple[str, str],
    client: tuple[str, int],
    tls: bool,
    closing: bool,
) -> tuple[bytes, bool]:
    """The response to ``request`` and whether the connection stays open after it.

    ``closing``: the worker is draining, so the response says ``Connection: close``.
    """
    environ = build_environ(request, server=server, client=client, tls=tls)
    if environ is None:
        return refusal_bytes(400), False
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return _no_write

    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception:
        log.exception("the application failed on %s %s", request.method, environ["PATH_INFO"])
        return refusal_bytes(500), False
    if not started:
        log.error("the application returned without starting a response")
        return refusal_bytes(500), False
    keep = request.keep_alive and not closing
    status, headers = started
    return _serialize(status, headers, body, keep, request.method == "HEAD"), keep


def _no_write(data: bytes) -> None:
    raise RuntimeError("the write() callable is not supported; return the body")


def _serialize(
    status: str, headers: list[tuple[str, str]], body: bytes, keep: bool, head: bool
) -> bytes:
    code = int(status[:3])
    lines = [b"HTTP/1.1 " + status.encode("latin-1"), b"Date: " + _Date.now()]
    has_length = False
    for name, value in headers:
        raw = name.encode("latin-1")
        lowered = raw.lower()
        if lowered in _HOP_BY_HOP:
            continue
        if lowered == b"content-length":
            has_length = True
        lines.append(raw + b": " + value.encode("latin-1"))
    if code in _NO_BODY or code < 200:
        body = b""
    elif not has_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if head:
        body = b""
    lines.append(b"Connection: keep-alive" if keep else b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
