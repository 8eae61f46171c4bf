"""webhook/serving/protocol.py: llhttp's framing as the loop sees it, table-driven.

The strictness table of docs/design.md ("The HTTP parser"): what is refused, with which
status, and that every byte split gives the same answer (parsing is incremental).
"""

from __future__ import annotations

import time

import pytest

from webhook.serving.protocol import (
    FEED_SLICE_BYTES,
    FRAMING_PER_BODY_BYTE,
    MAX_HEAD_BYTES,
    HttpProtocol,
)

HEAD = b"POST /validate HTTP/1.1\r\nHost: x\r\n"


def chunked(body: bytes) -> bytes:
    return HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body


REFUSED = {
    "chunk size -5": (chunked(b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size 0x5": (chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size +5": (chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk size 1_0": (chunked(b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n"), 400),
    "bare LF in a chunk": (chunked(b"5\nhello\n0\n\n"), 400),
    "CL and TE": (HEAD + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "two CLs": (HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    "signed CL": (HEAD + b"Content-Length: +5\r\n\r\nhello", 400),
    "obs-fold": (HEAD + b"X-A: a\r\n b\r\n\r\n", 400),
    "bare LF head": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "bare CR": (HEAD + b"X-A: a\rb\r\n\r\n", 400),
    "space before colon": (HEAD + b"X-A : a\r\n\r\n", 400),
    "unknown coding": (HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    "TLS on plain HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    "CL over the limit": (HEAD + b"Content-Length: 99999999\r\n\r\n", 413),
    "chunked over the limit": (chunked(b"ffff\r\n" + b"a" * 0xFFFF + b"\r\n"), 413),
    "Expect other": (HEAD + b"Expect: 200-ok\r\nContent-Length: 0\r\n\r\n", 417),
    "long target": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    "too many fields": (HEAD + b"X-A: 1\r\n" * 101 + b"\r\n", 431),
    "long field": (HEAD + b"X-A: " + b"a" * 9000 + b"\r\n\r\n", 431),
}


def feed(data: bytes, split: int = 0, max_body: int = 1024) -> HttpProtocol:
    protocol = HttpProtocol(max_body)
    if split:
        for start in range(0, len(data), split):
            protocol.feed(data[start : start + split])
    else:
        protocol.feed(data)
    return protocol


@pytest.mark.parametrize("split", [0, 1, 7])
@pytest.mark.parametrize(("data", "status"), REFUSED.values(), ids=REFUSED.keys())
def test_refused(data: bytes, status: int, split: int) -> None:
    protocol = feed(data, split)
    assert protocol.refusal == status
    assert not protocol.requests


@pytest.mark.parametrize("split", [0, 1, 3])
def test_chunk_extensions_and_trailers_are_read(split: int) -> None:
    protocol = feed(chunked(b"5;a=b\r\nhello\r\n3\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n"), split)
    assert protocol.refusal == 0
    (request,) = protocol.requests
    assert bytes(request.body) == b"hello!!!"
    assert request.method == "POST"
    assert request.target == b"/validate"


def test_pipelined_requests_come_out_in_order_then_the_refusal() -> None:
    one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    two = HEAD + b"Content-Length: 2\r\n\r\n{}"
    protocol = feed(one + two + b"BROKEN\r\n\r\n")
    assert [r.target for r in protocol.requests] == [b"/a", b"/validate"]
    assert protocol.refusal == 400
    assert protocol.pending_bytes == 2
    protocol.pop()
    protocol.pop()
    assert protocol.held_bytes == 0


def test_nothing_is_parsed_after_a_request_that_closes() -> None:
    protocol = feed(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert len(protocol.requests) == 1
    assert not protocol.requests[0].keep_alive
    assert protocol.ended
    assert protocol.refusal == 0


@pytest.mark.parametrize(("version", "wants"), [("1.1", True), ("1.0", False)])
def test_100_continue_only_for_http_1_1_and_once(version: str, wants: bool) -> None:
    protocol = feed(
        f"POST / HTTP/{version}\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".encode()
    )
    assert protocol.wants_continue is wants
    protocol.continue_sent = True
    assert not protocol.wants_continue
    protocol.feed(b"abcd")
    assert len(protocol.requests) == 1


def test_a_head_over_the_limit_is_refused_as_it_arrives() -> None:
    protocol = HttpProtocol(1024)
    protocol.feed(HEAD)
    for index in range(100):
        protocol.feed(b"X-%d: " % index + b"a" * 2000 + b"\r\n")
        if protocol.refusal:
            break
    assert protocol.refusal == 431
    assert index * 2000 < MAX_HEAD_BYTES + 8000


def test_parsing_a_trickled_chunked_body_is_linear() -> None:
    """Defect 2: 100 000 one-byte chunks, fed one chunk at a time, in well under a second."""
    protocol = HttpProtocol(1024 * 1024)
    protocol.feed(chunked(b""))
    started = time.process_time()
    for _ in range(100_000):
        protocol.feed(b"1\r\na\r\n")
    protocol.feed(b"0\r\n\r\n")
    assert time.process_time() - started < 1.0
    assert len(protocol.requests[0].body) == 100_000


@pytest.mark.parametrize("line", [b"GET /healthz\r\n\r\n", b"GET / HTTP/2.5\r\n\r\n"])
def test_only_http_1_0_and_1_1(line: bytes) -> None:
    assert feed(line).refusal == 400


# Issue 22 review, F1: framing (every byte that is not body) is bounded as it arrives.
TRAILER_START = chunked(b"1\r\na\r\n0\r\nX-Trailer: ")


@pytest.mark.parametrize("piece", [1024, 64 * 1024, 4 * 1024 * 1024])
def test_an_endless_trailer_field_is_refused_as_it_arrives(piece: int) -> None:
    """A trailer field that never ends: 431 once MAX_HEAD_BYTES of it (and at most one
    feed slice more) have come, whether it comes in small reads or one large one."""
    protocol = HttpProtocol(1024)
    protocol.feed(TRAILER_START)
    sent = 0
    started = time.process_time()
    while not protocol.refusal and sent < 8 * 1024 * 1024:
        protocol.feed(b"a" * piece)
        sent += piece
    assert protocol.refusal == 431
    assert piece > MAX_HEAD_BYTES or sent <= MAX_HEAD_BYTES + FEED_SLICE_BYTES + piece
    assert time.process_time() - started < 1.0
    assert not protocol.requests


def test_a_head_in_one_read_is_counted() -> None:
    """The read that begins a request counts: 50 fields of 3000 bytes (each field and
    their number within their limits), 150 KB of head in one read, never ending."""
    protocol = HttpProtocol(1024)
    protocol.feed(HEAD + b"".join(b"X-%d: " % i + b"a" * 3000 + b"\r\n" for i in range(50)))
    assert protocol.refusal == 431


def test_chunk_framing_is_bounded_by_the_body() -> None:
    """One-byte chunks with 200-byte extensions: refused once the framing is over twice
    MAX_HEAD_BYTES plus FRAMING_PER_BODY_BYTE per body byte."""
    protocol = HttpProtocol(1024 * 1024)
    protocol.feed(chunked(b""))
    chunks = 0
    while not protocol.refusal and chunks < 10_000:
        protocol.feed(b"1;e=" + b"x" * 200 + b"\r\na\r\n")
        chunks += 1
    assert protocol.refusal == 431
    framing = chunks * 206
    assert framing < 2 * MAX_HEAD_BYTES + FRAMING_PER_BODY_BYTE * chunks + 2 * FEED_SLICE_BYTES


@pytest.mark.parametrize("size_line", [b"1", b"00000001", b"1;a=b"])
def test_small_chunks_with_ordinary_framing_are_read(size_line: bytes) -> None:
    """Framing of a dozen bytes per one-byte chunk, for 50 000 chunks, in reads of any size."""
    data = chunked((size_line + b"\r\na\r\n") * 50_000 + b"0\r\nX-T: 1\r\n\r\n")
    for split in (0, 7, 100_000):
        protocol = feed(data, split, max_body=1024 * 1024)
        assert protocol.refusal == 0
        assert len(protocol.requests[0].body) == 50_000
