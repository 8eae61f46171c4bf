"""HTTP/1.1 framing of one connection: llhttp (through httptools) parses, this adapts.

The loop (webhook/serving/loop.py) feeds every byte it reads into the connection's
:class:`HttpProtocol` once; llhttp parses incrementally, so the work is linear in the
bytes received whatever their pace or split. Out come complete :class:`Request` objects,
in order, or one refusal status (:attr:`HttpProtocol.refusal`): after a refusal the
parser is never fed again, and the loop answers the requests completed before it, then
the refusal, then closes the connection. So every request gets exactly one response.

llhttp in its default (strict) mode refuses what request smuggling is built from:
Content-Length with Transfer-Encoding, two Content-Lengths, a signed or non-decimal
length, chunk sizes that are not plain hexadecimal (``-5``, ``+5``, ``0x5``, ``1_0``),
obs-fold, bare CR or LF line endings, an unknown transfer coding (docs/design.md, "The
HTTP parser"). This module adds the limits llhttp leaves to its user: the request line,
the head, the number and size of header fields, the body (413 from Content-Length
alone, before any of it is read) and ``Expect``; and the bytes of a request that are
not body (head, chunk framing, trailers), which llhttp neither stores nor bounds:
every byte fed is counted, as body or as framing (431 once framing is over its bound).
llhttp reports a header or trailer field only once it ends and httptools gathers its
value by concatenation, so the parser is fed at most FEED_SLICE_BYTES at a time and
the bound is checked after each slice: an endless field is refused after at most
MAX_HEAD_BYTES plus one slice, at linear cost.

Modelled on uvicorn's protocols/http/httptools_impl.py, without asyncio.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import httptools

# Longest request head (request line and headers); the API server's are a few hundred
# bytes. And gunicorn's limits, as the committed configuration set them.
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_REQUEST_LINE: Final = 8190
MAX_HEADER_FIELDS: Final = 100
MAX_FIELD_BYTES: Final = 8190
# Framing of one request (every byte that is not body: head, chunk-size lines and
# extensions, CRLFs, trailers): at most MAX_HEAD_BYTES in a row (the head, a chunk
# header, the trailers), and in all twice MAX_HEAD_BYTES plus FRAMING_PER_BODY_BYTE per
# body byte. A body trickled in one-byte chunks ("1\r\nx\r\n") has 5 per body byte.
FRAMING_PER_BODY_BYTE: Final = 16
# The most the parser is fed in one call (see the module's docstring).
FEED_SLICE_BYTES: Final = 16 * 1024

REASONS: Final = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class Request:
    """A complete request: what the WSGI environ is built from."""

    __slots__ = ("body", "expects_continue", "headers", "keep_alive", "method", "target", "version")

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.keep_alive = True
        self.expects_continue = False


class _Refused(Exception):
    """Raised in a parser callback to stop parsing with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def refusal_bytes(status: int) -> bytes:
    """The whole response to a refused request; the connection is closed after it."""
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Connection: close\r\nContent-Length: 0\r\n\r\n"
    ).encode()


CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpProtocol:
    """The requests on one connection, parsed incrementally."""

    __slots__ = (
        "_current",
        "_fields",
        "_framing",
        "_in_head",
        "_parser",
        "_run",
        "_sliced_body",
        "continue_sent",
        "ended",
        "max_body",
        "pending_bytes",
        "refusal",
        "requests",
    )

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self.requests: deque[Request] = deque()
        # The status to refuse the connection's next request with (0: none).
        self.refusal = 0
        # Nothing more is parsed: the last request asked for the connection to close
        # (Connection: close, HTTP/1.0) or to switch protocols, which is not served.
        self.ended = False
        self.continue_sent = False
        self.pending_bytes = 0  # body bytes of the complete requests not yet taken
        self._current: Request | None = None
        self._in_head = False
        self._framing = 0  # bytes of the current request that are not body
        self._run = 0  # of which since its last body byte (an upper bound)
        self._sliced_body = 0  # body bytes parsed from the slice being fed
        self._fields = 0

    # -- what the loop calls ---------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse ``data``, the bytes that follow those fed before."""
        view = memoryview(data)
        for start in range(0, len(view), FEED_SLICE_BYTES):
            if self.refusal or self.ended:
                return  # the connection closes after what is already parsed
            piece = view[start : start + FEED_SLICE_BYTES]
            self._sliced_body = 0
            self._feed(piece)
            if self._current is not None and not self.refusal:
                # Bytes of a request under way: all but its body is framing (the tail of
                # the request before it, in the same slice, counts too: at most a slice).
                framing = len(piece) - self._sliced_body
                self._framing += framing
                self._run += framing
                allowed = 2 * MAX_HEAD_BYTES + FRAMING_PER_BODY_BYTE * len(self._current.body)
                if self._run > MAX_HEAD_BYTES or self._framing > allowed:
                    self._refuse(431)

    def _feed(self, data: memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            context = error.__context__
            self._refuse(context.status if isinstance(context, _Refused) else 400)
        except httptools.HttpParserUpgrade:
            self.ended = True  # CONNECT or Upgrade: answered, then closed
        except httptools.HttpParserError:
            if not self.ended:  # bytes after a request that closes: never answered
                self._refuse(400)

    def pop(self) -> Request:
        """The next complete request, to be answered."""
        request = self.requests.popleft()
        self.pending_bytes -= len(request.body)
        return request

    @property
    def held_bytes(self) -> int:
        """Request bytes this connection holds in memory (bodies; heads are small)."""
        return self.pending_bytes + self.receiving

    @property
    def receiving(self) -> int:
        """Body bytes of the request being received (0: none under way)."""
        return len(self._current.body) if self._current is not None else 0

    @property
    def started(self) -> bool:
        """Whether part of a request has been received and not yet completed."""
        return self._current is not None

    @property
    def wants_continue(self) -> bool:
        """Whether the client waits for ``100 Continue`` before sending the body."""
        current = self._current
        return (
            current is not None
            and current.expects_continue
            and not self._in_head
            and not self.continue_sent
            and not self.refusal
        )

    def _refuse(self, status: int) -> None:
        self.refusal = status
        self._current = None

    # -- llhttp's callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._current = Request()
        self._in_head = True
        self._framing = 0
        self._run = 0
        self._fields = 0
        self.continue_sent = False

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.target += url
        if len(self._current.target) > MAX_REQUEST_LINE:
            raise _Refused(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._fields += 1
        if self._fields > MAX_HEADER_FIELDS or len(name) + len(value) > MAX_FIELD_BYTES:
            raise _Refused(431)
        self._current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        current = self._current
        assert current is not None
        self._in_head = False
        current.method = self._parser.get_method().decode("ascii")
        current.version = self._parser.get_http_version()
        if current.version not in ("1.0", "1.1"):
            raise _Refused(400)  # HTTP/0.9 (a request line alone) or an unknown version
        for name, value in current.headers:
            lowered = name.lower()
            if lowered == b"content-length" and int(value) > self.max_body:
                raise _Refused(413)  # llhttp has checked it is digits, and the only one
            if lowered == b"expect":
                if value.strip().lower() != b"100-continue":
                    raise _Refused(417)
                # HTTP/1.0 clients do not know 100 Continue (RFC 9110, 10.1.1).
                current.expects_continue = current.version == "1.1"

    def on_body(self, body: bytes) -> None:
        current = self._current
        assert current is not None
        current.body += body
        self._sliced_body += len(body)
        self._run = 0
        if len(current.body) > self.max_body:
            raise _Refused(413)  # a chunked body over the limit

    def on_message_complete(self) -> None:
        current = self._current
        assert current is not None
        current.keep_alive = bool(self._parser.should_keep_alive())
        self.requests.append(current)
        self.pending_bytes += len(current.body)
        self._current = None
        if not current.keep_alive:
            self.ended = True
