"""webhook/worker.py's request framing: when a buffered request is complete, table-driven.

The worker hands a request to a thread only once this says it is whole (or refused
anyway), so a wrong "complete" would let a thread block on the socket and a wrong
"incomplete" would leave a request unanswered until its deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn import http
from gunicorn.config import Config

from webhook.worker import MAX_HEAD_BYTES, drain_buffered_body, request_framing

LIMIT = 1000
HEAD = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def head(*lines: str) -> bytes:
    return HEAD + b"".join(line.encode() + b"\r\n" for line in lines) + b"\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


CASES: list[tuple[str, bytes, tuple[bool, bool, int] | None]] = [
    # name, buffer, (complete, must_close, body bytes) or None (head incomplete)
    ("empty", b"", None),
    ("head-cut", HEAD, None),
    ("no-body", head(), (True, False, 0)),
    ("length-0", head("Content-Length: 0"), (True, False, 0)),
    ("body-partial", head("Content-Length: 10") + b"12345", (False, False, 10)),
    ("body-whole", head("Content-Length: 10") + b"1234567890", (True, False, 10)),
    ("body-and-next", head("Content-Length: 2") + b"{}" + head(), (True, False, 2)),
    ("header-case", head("content-LENGTH:  4") + b"abcd", (True, False, 4)),
    ("over-limit-by-length", head("Content-Length: 1001"), (True, True, 0)),
    ("at-limit", head("Content-Length: 1000") + b"x" * 1000, (True, False, 1000)),
    ("length-not-a-number", head("Content-Length: 1e3"), (True, True, 0)),
    ("length-negative", head("Content-Length: -5"), (True, True, 0)),
    ("two-lengths-differ", head("Content-Length: 3", "Content-Length: 4"), (True, True, 0)),
    ("two-lengths-same", head("Content-Length: 3", "Content-Length: 3") + b"abc", (True, False, 3)),
    ("bare-lf", HEAD.replace(b"\r\n", b"\n") + b"Content-Length: 2\n\n{}", (True, False, 2)),
    (
        "chunked-whole",
        head("Transfer-Encoding: chunked") + chunk(b"ab") + chunk(b"cde") + b"0\r\n\r\n",
        (True, False, 5),
    ),
    (
        "chunked-no-last-chunk",
        head("Transfer-Encoding: chunked") + chunk(b"ab"),
        (False, False, 2),
    ),
    (
        "chunked-last-chunk-no-blank-line",
        head("Transfer-Encoding: chunked") + chunk(b"ab") + b"0\r\n",
        (False, False, 2),
    ),
    (
        "chunked-trailers",
        head("Transfer-Encoding: chunked") + chunk(b"ab") + b"0\r\nX-T: 1\r\n\r\n",
        (True, False, 2),
    ),
    (
        "chunked-partial-chunk",
        head("Transfer-Encoding: chunked") + b"10\r\n" + b"x" * 5,
        (False, False, 5),
    ),
    (
        "chunked-extension",
        head("Transfer-Encoding: chunked") + b"2;name=v\r\nab\r\n0\r\n\r\n",
        (True, False, 2),
    ),
    (
        "chunked-bad-size",
        head("Transfer-Encoding: chunked") + b"zz\r\nab\r\n",
        (True, True, 0),
    ),
    (
        "chunked-over-limit-once-buffered",
        head("Transfer-Encoding: chunked") + chunk(b"x" * 600) + chunk(b"y" * 401),
        (True, True, 1001),
    ),
    (
        "chunked-declared-over-limit-not-yet-buffered",
        head("Transfer-Encoding: chunked") + b"800\r\n" + b"x" * 10,
        (False, False, 10),
    ),
    (
        "chunked-size-line-endless",
        head("Transfer-Encoding: chunked") + b"1" * 2000,
        (True, True, 0),
    ),
]


@pytest.mark.parametrize(("name", "buffer", "want"), CASES, ids=[c[0] for c in CASES])
def test_request_framing(name: str, buffer: bytes, want: tuple[bool, bool, int] | None) -> None:
    framing = request_framing(buffer, LIMIT)
    if want is None:
        assert framing is None
        return
    assert framing is not None
    assert (framing.complete, framing.must_close, framing.body_bytes) == want


def test_a_head_longer_than_the_limit_is_never_complete() -> None:
    buffer = HEAD + b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n"
    assert request_framing(buffer, LIMIT) is None


def test_expect_continue_is_noticed() -> None:
    framing = request_framing(head("Expect: 100-continue", "Content-Length: 5"), LIMIT)
    assert framing is not None
    assert framing.expects_continue
    assert not framing.complete


def test_a_request_ends_where_its_content_length_says() -> None:
    """The worker hands the parser only the first of pipelined requests."""
    first = head("Content-Length: 2") + b"{}"
    framing = request_framing(first + head("Content-Length: 3") + b"abc", LIMIT)
    assert framing is not None
    assert framing.complete
    assert framing.end == len(first)


def test_the_end_of_a_chunked_request_is_left_to_the_parser() -> None:
    framing = request_framing(
        head("Transfer-Encoding: chunked") + chunk(b"ab") + b"0\r\n\r\n", LIMIT
    )
    assert framing is not None
    assert framing.complete
    assert framing.end is None


def test_a_blank_line_in_the_body_does_not_end_the_head() -> None:
    """The head ends at its first blank line, CRLF or bare LF; a bare one later, in
    the body, is the body's."""
    body = b'{"a":\n\n1}'
    framing = request_framing(head(f"Content-Length: {len(body)}") + body, LIMIT)
    assert framing is not None
    assert (framing.complete, framing.body_bytes) == (True, len(body))
    bare = b"POST /validate HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}"
    framing = request_framing(bare, LIMIT)
    assert framing is not None
    assert framing.complete
    assert framing.end == len(bare)


# --- draining what the app left of a body -----------------------------------------------------


class BufferedOnlySocket:
    """A socket that has nothing to give and must not be touched: the whole request is
    in the parser's buffer, as the loop leaves it."""

    def recv(self, size: int) -> bytes:
        raise AssertionError("the drain read from the socket")

    def gettimeout(self) -> float:
        raise AssertionError("the drain looked at the socket's timeout")

    def settimeout(self, value: float | None) -> None:
        raise AssertionError("the drain changed the socket's timeout (an ioctl)")


def parser_with(request: bytes) -> Any:
    parser = http.get_parser(Config(), BufferedOnlySocket(), ("127.0.0.1", 1))
    parser.unreader.unread(request)
    return parser


@pytest.mark.parametrize(
    "request_bytes",
    [
        b'POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"a": true}',
        b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n7\r\n: true}\r\n0\r\n\r\n',
    ],
    ids=["content-length", "chunked"],
)
def test_an_unread_body_is_drained_from_the_buffer_alone(request_bytes: bytes) -> None:
    second = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    parser = parser_with(request_bytes + second)
    first = next(parser)
    first.body.read(3)  # the app read part of the body
    assert drain_buffered_body(parser)
    following = next(parser)  # parses straight on: nothing left to drain, no socket
    assert (following.method, following.path) == ("GET", "/readyz")


def test_a_body_that_failed_to_read_closes_the_connection() -> None:
    parser = parser_with(
        b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    request = next(parser)
    with pytest.raises(http.errors.InvalidChunkSize):
        request.body.read()
    assert drain_buffered_body(parser) is False
