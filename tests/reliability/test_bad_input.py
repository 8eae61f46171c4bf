"""Issue 6, bad input: a corpus of malformed and hostile requests sent to a real server
over TLS. Each gets a deliberate 4xx (or the correct verdict where the review is
valid), never a 5xx, never a worker death, and a valid review is answered correctly
right after each one.

One server for the module (2 workers, default 7 MiB body limit).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.reliability import oracle
from tests.support.reviews import example_pod, make_review, update_review
from tests.support.server import (
    RawResponse,
    ResponseError,
    Server,
    http_request,
    read_response,
    start_server,
    tls_socket,
    wait_workers,
)

pytestmark = pytest.mark.process

LIMIT = 7 * 1024 * 1024  # the default body limit (PRG_MAX_BODY_BYTES)
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Expect:
    """What a case must get: ``statuses`` (any 4xx if empty and not ``verdict``), or a
    valid review's verdict (HTTP 200, allowed as given, uid echoed)."""

    statuses: tuple[int, ...] = ()
    verdict: bool | None = None
    uid: str = ""
    verdict_or_4xx: bool = False
    no_response_ok: bool = False


ANY_4XX = Expect()


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Server], list[RawResponse | None]]
    expect: Expect | tuple[Expect, ...]


# --- building requests ----------------------------------------------------------------


def post(body: bytes, headers: dict[str, str] | None = None, path: str = "/validate") -> bytes:
    return http_request("POST", path, body, {**JSON_HEADERS, **(headers or {})})


def review_bytes(review: Any) -> bytes:
    return json.dumps(review).encode()


def valid(change: Callable[[dict[str, Any]], None] | None = None, **kwargs: Any) -> Any:
    return update_review(change, **kwargs)


def deny_change(pod: dict[str, Any]) -> None:
    pod["spec"]["restartPolicy"] = "Never"


def allow_change(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["image"] = "beego:v2"


def without(review: Any, *path: str) -> Any:
    holder = review
    for step in path[:-1]:
        holder = holder[step]
    del holder[path[-1]]
    return review


def replaced(review: Any, value: Any, *path: str) -> Any:
    holder = review
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return review


def judged(old: dict[str, Any], new: dict[str, Any]) -> tuple[bytes, Expect]:
    """A valid review of old -> new and its correct verdict (the independent oracle's)."""
    uid = str(uuid.uuid4())
    body = review_bytes(make_review(old, new, uid=uid))
    return body, Expect(verdict=oracle.allowed(old, new), uid=uid)


def pod_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    pod = example_pod()
    change(pod)
    return pod


def nested_text(depth: int) -> str:
    """JSON text of objects nested ``depth`` deep (json.dumps would recurse too far)."""
    return '{"n":' * depth + '"x"' + "}" * depth


def sized_review(target: int, deny: bool) -> tuple[bytes, str]:
    """A valid review whose JSON is exactly ``target`` bytes (padding in annotations)."""
    uid = str(uuid.uuid4())

    def build(pad: int) -> bytes:
        old, new = example_pod(), example_pod()
        old["metadata"]["annotations"] = {"pad": "o" * (pad // 2)}
        new["metadata"]["annotations"] = {"pad": "n" * (pad - pad // 2)}
        if deny:
            deny_change(new)
        return review_bytes(make_review(old, new, uid=uid))

    base = len(build(0))
    body = build(target - base)
    assert len(body) == target
    return body, uid


# --- sending them ---------------------------------------------------------------------


def exchange(
    data: bytes, responses: int = 1, timeout: float = 30.0, send_only: int | None = None
) -> Callable[..., Any]:
    """Send ``data`` over a fresh TLS connection, then read ``responses`` answers.

    ``send_only``: send just that many bytes and then read. For a body over the limit,
    the answer (413) comes before the body is read; Go's http.Transport (the API
    server's client) reads that early answer while still writing. One thread must not
    read and write the same TLS connection at once, so this stops writing instead.
    """

    def send(server: Server) -> list[RawResponse | None]:
        with tls_socket(server, timeout=timeout) as sock:
            sock.sendall(data if send_only is None else data[:send_only])
            reader = sock.makefile("rb")
            found: list[RawResponse | None] = []
            try:
                while len(found) < responses:
                    response = read_response(reader)
                    if response.status != 100:  # an interim "100 Continue"
                        found.append(response)
            finally:
                reader.close()
            return found

    return send


def send_then_close(data: bytes, pause: float = 0.5) -> Callable[..., Any]:
    """Send part of a request, then hang up: nothing to answer, nothing must break."""

    def send(server: Server) -> list[RawResponse | None]:
        with tls_socket(server) as sock:
            sock.sendall(data)
            time.sleep(pause)
        return [None]

    return send


def send_chunked(body: bytes, size: int = 700, trailer: bool = False) -> bytes:
    head = http_request("POST", "/validate", b"", {**JSON_HEADERS, "Transfer-Encoding": "chunked"})
    head = head.replace(b"Content-Length: 0\r\n", b"")
    chunks = b"".join(
        b"%x\r\n" % len(body[i : i + size]) + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    )
    return head + chunks + (b"0\r\nX-Trailer: 1\r\n\r\n" if trailer else b"0\r\n\r\n")


def slow_loris(body: bytes, slow_bytes: int, complete: bool) -> Callable[..., Any]:
    """One byte a second for ``slow_bytes`` seconds, then the rest (or hang up); while it
    dribbles, another client's review is answered normally."""

    def send(server: Server) -> list[RawResponse | None]:
        data = post(body)
        side: list[int] = []

        def other_client() -> None:
            time.sleep(1.0)
            status, payload = server.post_review(valid(deny_change))
            side.append(status if payload.get("response", {}).get("allowed") is False else -1)

        helper = threading.Thread(target=other_client)
        with tls_socket(server, timeout=30) as sock:
            helper.start()
            for index in range(slow_bytes):
                sock.sendall(data[index : index + 1])
                time.sleep(1.0)
            helper.join(20)
            assert side == [200], "another client was not served during the slow loris"
            if not complete:
                return [None]
            sock.sendall(data[slow_bytes:])
            reader = sock.makefile("rb")
            try:
                return [read_response(reader)]
            finally:
                reader.close()

    return send


# --- the corpus -----------------------------------------------------------------------


def _corpus() -> list[Case]:
    cases: list[Case] = []

    def add(name: str, data: bytes, expect: Expect | tuple[Expect, ...] = ANY_4XX) -> None:
        cases.append(Case(name, exchange(data), expect))

    def add_body(name: str, body: bytes, expect: Expect = Expect((400,))) -> None:
        add(name, post(body), expect)

    def add_review(name: str, review: Any, expect: Expect = Expect((400,))) -> None:
        add_body(name, review_bytes(review), expect)

    def add_judged(name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        body, expect = judged(old, new)
        add_body(name, body, expect)

    # Not JSON, not UTF-8, not an object.
    add_body("empty-body", b"")
    add_body("not-json", b"hello, webhook")
    add_body("truncated-json", review_bytes(valid())[:100])
    add_body("invalid-utf8", b'{"apiVersion": "\xff\xfe\xfd"}')
    add_body("invalid-utf8-in-valid-review", review_bytes(valid()).replace(b"alice", b"al\xc3ce"))
    add_body("utf16-review", json.dumps(valid()).encode("utf-16"))
    add_body("utf8-bom-review", b"\xef\xbb\xbf" + review_bytes(valid()))
    add_body("nan-literal", b'{"apiVersion": NaN}')
    add_body("infinite-number", review_bytes(valid()).replace(b'"restartCount": 0', b'"x": 1e400'))
    add_body("top-level-array", b"[]")
    add_body("top-level-array-of-review", review_bytes([valid()]))
    add_body("top-level-string", b'"AdmissionReview"')
    add_body("top-level-number", b"42")
    add_body("top-level-null", b"null")
    add_body("top-level-true", b"true")
    add_body("empty-object", b"{}")
    add_body("whitespace-only", b"  \r\n\t ")
    # The envelope.
    add_review("apiversion-missing", without(valid(), "apiVersion"))
    add_review("apiversion-wrong", replaced(valid(), "admission.k8s.io/v2", "apiVersion"))
    add_review("apiversion-number", replaced(valid(), 1, "apiVersion"))
    add_review("kind-missing", without(valid(), "kind"))
    add_review("kind-wrong", replaced(valid(), "Pod", "kind"))
    add_review("request-missing", without(valid(), "request"))
    add_review("request-null", replaced(valid(), None, "request"))
    add_review("request-array", replaced(valid(), [valid()["request"]], "request"))
    add_review("request-string", replaced(valid(), "request", "request"))
    add_review("uid-missing", without(valid(), "request", "uid"))
    add_review("uid-empty", replaced(valid(), "", "request", "uid"))
    add_review("uid-number", replaced(valid(), 12345, "request", "uid"))
    add_review("uid-object", replaced(valid(), {"id": "x"}, "request", "uid"))
    add_review("operation-unknown", replaced(valid(), "PATCH", "request", "operation"))
    add_review("operation-lowercase", replaced(valid(), "update", "request", "operation"))
    add_review("operation-missing", without(valid(), "request", "operation"))
    add_review("update-without-oldobject", without(valid(), "request", "oldObject"))
    add_review("update-oldobject-null", replaced(valid(), None, "request", "oldObject"))
    add_review("update-without-object", without(valid(), "request", "object"))
    add_review("object-array", replaced(valid(), [example_pod()], "request", "object"))
    add_review("object-number", replaced(valid(), 7, "request", "object"))
    add_review("oldobject-string", replaced(valid(), "pod", "request", "oldObject"))
    add_review("userinfo-string", replaced(valid(), "alice", "request", "userInfo"))
    add_review("groups-not-list", replaced(valid(), "admins", "request", "userInfo", "groups"))
    add_review("username-number", replaced(valid(), 7, "request", "userInfo", "username"))
    add_review("namespace-number", replaced(valid(), 7, "request", "namespace"))
    add_review("resource-string", replaced(valid(), "pods", "request", "resource"))
    add_review("request-kind-list", replaced(valid(), ["Pod"], "request", "kind"))
    # Valid envelopes around pods with wrongly typed fields: the correct verdict.
    old = example_pod()

    def containers_map(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"] = {"hello-world": pod["spec"]["containers"][0]}

    def labels_list(pod: dict[str, Any]) -> None:
        pod["metadata"]["labels"] = ["name", "brace"]

    def image_number(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["image"] = 42

    def env_string(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["env"] = "cy=cy"

    def spec_string(pod: dict[str, Any]) -> None:
        pod["spec"] = "spec"

    add_judged("pod-containers-as-map", old, pod_with(containers_map))
    add_judged("pod-labels-as-list", old, pod_with(labels_list))
    add_judged("pod-image-as-number", old, pod_with(image_number))
    add_judged("pod-env-as-string", old, pod_with(env_string))
    add_judged("pod-spec-as-string", old, pod_with(spec_string))
    add_judged("pod-both-containers-as-map", pod_with(containers_map), pod_with(containers_map))
    add_judged("pod-object-empty", old, {})
    # Duplicated keys: answered as the last value says (Go's encoding/json does the same),
    # or refused; never judged on one copy and answered on another.
    uid = str(uuid.uuid4())
    same = json.dumps(example_pod())
    changed = json.dumps(pod_with(deny_change))
    envelope = (
        '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{'
        f'"uid":"{uid}","kind":{{"group":"","version":"v1","kind":"Pod"}},'
        '"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"default",'
        '"operation":"UPDATE","userInfo":{"username":"alice"},'
        '"oldObject":' + same + ',"object":%s,"object":%s}}'
    )
    add_body(
        "duplicate-key-last-allows",
        (envelope % (changed, same)).encode(),
        Expect(verdict=True, uid=uid, verdict_or_4xx=True),
    )
    add_body(
        "duplicate-key-last-denies",
        (envelope % (same, changed)).encode(),
        Expect(verdict=False, uid=uid, verdict_or_4xx=True),
    )
    # Nesting.
    add_body("nesting-10000-arrays", b"[" * 10000 + b"]" * 10000)
    add_body("nesting-10000-objects", b'{"a":' * 10000 + b"1" + b"}" * 10000)
    deep = review_bytes(valid())[:-2] + b',"deep":' + b"[" * 10000 + b"]" * 10000 + b"}}"
    add_body("nesting-10000-inside-request", deep)
    deep_uid = str(uuid.uuid4())

    def deep_review(old_pod: dict[str, Any], new_pod: dict[str, Any], depth: int) -> bytes:
        text = review_bytes(make_review(old_pod, new_pod, uid=deep_uid)).decode()
        return text.replace('"__DEEP__"', nested_text(depth)).encode()

    marked = pod_with(lambda pod: pod["spec"].__setitem__("x", "__DEEP__"))
    marked_labels = pod_with(lambda pod: pod["metadata"]["labels"].__setitem__("x", "__DEEP__"))
    add_body(
        "nesting-1000-frozen-field",
        deep_review(old, marked, 1000),
        Expect(verdict=False, uid=deep_uid, verdict_or_4xx=True),
    )
    add_body(
        "nesting-1020-equal-both",
        deep_review(marked, marked, 1020),
        Expect(verdict=True, uid=deep_uid, verdict_or_4xx=True),
    )
    add_body(
        "nesting-1000-in-labels",
        deep_review(old, marked_labels, 1000),
        Expect(verdict=True, uid=deep_uid, verdict_or_4xx=True),
    )
    # Many changes at once: denied, with a bounded message.
    many_old = pod_with(
        lambda pod: pod["spec"]["containers"][0].__setitem__(
            "env", [{"name": f"V{i}", "value": "a"} for i in range(5000)]
        )
    )
    many_new = pod_with(
        lambda pod: pod["spec"]["containers"][0].__setitem__(
            "env", [{"name": f"V{i}", "value": "b"} for i in range(5000)]
        )
    )
    add_judged("five-thousand-violations", many_old, many_new)
    # Sizes around the limit.
    body, uid = sized_review(LIMIT, deny=True)
    add_body("body-exactly-at-limit", body, Expect(verdict=False, uid=uid))
    body, uid = sized_review(LIMIT - 1, deny=False)
    add_body("body-just-under-limit", body, Expect(verdict=True, uid=uid))
    body, uid = sized_review(LIMIT + 1, deny=False)
    cases.append(
        Case("body-just-over-limit", exchange(post(body), send_only=65536), Expect((413,)))
    )
    over_limit_headers = {**JSON_HEADERS, "Content-Length": str(LIMIT + 1)}
    add(
        "content-length-over-limit-no-body",
        http_request("POST", "/validate", b"", over_limit_headers),
        Expect((413,)),
    )
    # A valid review padded with whitespace past the limit, sent chunked (no
    # Content-Length to refuse it by): still over the limit, so 413, not a verdict.
    padded = review_bytes(valid(deny_change)) + b" " * (LIMIT + 1024)
    add("chunked-body-over-limit", send_chunked(padded, size=65536), Expect((413,)))
    # Content types, methods, paths.
    good = valid(deny_change, uid="11111111-1111-1111-1111-111111111111")
    good_expect = Expect(verdict=False, uid="11111111-1111-1111-1111-111111111111")
    add_body("content-type-charset", review_bytes(good), good_expect)
    add(
        "content-type-text",
        post(review_bytes(good), {"Content-Type": "text/plain"}),
        Expect((415,)),
    )
    add(
        "content-type-missing",
        http_request("POST", "/validate", review_bytes(good)),
        Expect((415,)),
    )
    add(
        "content-type-form",
        post(b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}),
        Expect((415,)),
    )
    add("method-get", http_request("GET", "/validate"), Expect((405,)))
    add(
        "method-put",
        http_request("PUT", "/validate", review_bytes(good), JSON_HEADERS),
        Expect((405,)),
    )
    add("method-unknown", http_request("BREW", "/validate"), ANY_4XX)
    add("path-unknown", post(review_bytes(good), path="/mutate"), Expect((404,)))
    # HTTP framing.
    add(
        "http-1.0",
        http_request("POST", "/validate", review_bytes(good), JSON_HEADERS, "HTTP/1.0"),
        good_expect,
    )
    add(
        "http-1.0-no-host",
        post(review_bytes(good))
        .replace(b"HTTP/1.1", b"HTTP/1.0")
        .replace(b"Host: 127.0.0.1\r\n", b""),
        good_expect,
    )
    add("http-0.9-style", b"GET /healthz\r\n\r\n", ANY_4XX)
    add("http-version-2.5", post(review_bytes(good)).replace(b"HTTP/1.1", b"HTTP/2.5"), ANY_4XX)
    add("chunked-body", send_chunked(review_bytes(good)), good_expect)
    add("chunked-body-with-trailer", send_chunked(review_bytes(good), trailer=True), good_expect)
    add(
        "chunked-one-byte-chunks",
        send_chunked(review_bytes(valid(deny_change, uid=good_expect.uid)), size=1),
        good_expect,
    )
    add(
        "chunked-bad-size",
        send_chunked(review_bytes(good)).replace(b"2bc\r\n", b"zz\r\n", 1),
        ANY_4XX,
    )
    add(
        "content-length-and-chunked",
        post(review_bytes(good), {"Transfer-Encoding": "chunked"}),
        ANY_4XX,
    )
    two_lengths = post(review_bytes(good)).replace(
        b"Content-Length:", b"Content-Length: 5\r\nContent-Length:"
    )
    add("two-content-lengths", two_lengths, ANY_4XX)
    add("content-length-negative", post(b"{}", {"Content-Length": "-1"})[:-2], ANY_4XX)
    add("content-length-not-a-number", post(b"{}", {"Content-Length": "two"}), ANY_4XX)
    add(
        "many-headers",
        post(review_bytes(good), {f"X-Header-{i}": "v" for i in range(200)}),
        ANY_4XX,
    )
    add("huge-header-line", post(review_bytes(good), {"X-Huge": "h" * 20000}), ANY_4XX)
    add("huge-request-line", post(review_bytes(good), path="/validate?" + "q" * 20000), ANY_4XX)
    add("header-null-byte", post(review_bytes(good), {"X-Null": "a\x00b"}), ANY_4XX)
    add("header-without-colon", post(review_bytes(good)).replace(b"Host:", b"Host"), ANY_4XX)
    add(
        "bare-lf-line-endings",
        post(review_bytes(good)).replace(b"\r\n", b"\n"),
        Expect(verdict=False, uid=good_expect.uid, verdict_or_4xx=True),
    )
    add("expect-100-continue", post(review_bytes(good), {"Expect": "100-continue"}), good_expect)
    add("pipelined-two-reviews", b"", ())  # replaced below
    cases.pop()
    allow_uid, deny_uid = str(uuid.uuid4()), str(uuid.uuid4())
    pipelined = post(review_bytes(valid(allow_change, uid=allow_uid))) + post(
        review_bytes(valid(deny_change, uid=deny_uid))
    )
    cases.append(
        Case(
            "pipelined-two-reviews",
            exchange(pipelined, responses=2),
            (Expect(verdict=True, uid=allow_uid), Expect(verdict=False, uid=deny_uid)),
        )
    )
    # Clients that stop half way or dribble.
    cases.append(
        Case("hang-up-mid-headers", send_then_close(post(b"{}")[:20]), Expect(no_response_ok=True))
    )
    cases.append(
        Case(
            "hang-up-mid-body",
            send_then_close(post(review_bytes(good))[:-100]),
            Expect(no_response_ok=True),
        )
    )
    cases.append(
        Case("tls-then-nothing", send_then_close(b"", pause=1.0), Expect(no_response_ok=True))
    )
    loris_body = review_bytes(good)
    cases.append(
        Case("slow-loris-completes", slow_loris(loris_body, 4, complete=True), good_expect)
    )
    cases.append(
        Case(
            "slow-loris-abandons",
            slow_loris(loris_body, 3, complete=False),
            Expect(no_response_ok=True),
        )
    )
    return cases


CORPUS = _corpus()


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[int]]]:
    server = start_server(tmp_path_factory.mktemp("bad-input"), workers=2, threads=4)
    try:
        yield server, wait_workers(server, 2)
    finally:
        server.stop()


def _check(expect: Expect, response: RawResponse | None) -> None:
    if response is None:
        assert expect.no_response_ok, "no response"
        return
    assert response.status < 500, (response.status, response.body[:300])
    if expect.verdict is not None and (response.status == 200 or not expect.verdict_or_4xx):
        assert response.status == 200, (response.status, response.body[:300])
        answer = json.loads(response.body)["response"]
        assert answer["allowed"] is expect.verdict, answer
        assert answer["uid"] == expect.uid
        if not expect.verdict:
            assert answer["status"]["code"] == 403
            assert len(answer["status"]["message"]) < 20000, "the message is bounded"
        return
    if expect.statuses:
        assert response.status in expect.statuses, (response.status, response.body[:300])
    else:
        assert 400 <= response.status < 500, (response.status, response.body[:300])


def test_bad_input_corpus_is_large_enough() -> None:
    names = [case.name for case in CORPUS]
    assert len(set(names)) == len(names)
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_bad_input(corpus_server: tuple[Server, list[int]], case: Case) -> None:
    server, workers = corpus_server
    expects = case.expect if isinstance(case.expect, tuple) else (case.expect,)
    failure = ""
    try:
        responses = case.send(server)
    except (TimeoutError, ResponseError, ssl.SSLError, ConnectionError) as error:
        # The server hung up without an answer: only acceptable where no answer is due.
        failure = repr(error)
        responses = [None]
    assert not failure or all(e.no_response_ok for e in expects), f"no answer: {failure}"
    assert len(responses) == len(expects)
    for expect, response in zip(expects, responses, strict=True):
        _check(expect, response)
    # No worker died or was replaced, and a valid review is answered correctly now.
    assert server.process.poll() is None
    assert sorted(server.worker_pids()) == workers, "a worker died"
    uid = str(uuid.uuid4())
    status, payload = server.post_review(valid(deny_change, uid=uid))
    assert status == 200
    assert payload["response"]["allowed"] is False
    assert payload["response"]["uid"] == uid


def test_bad_input_left_no_internal_error(corpus_server: tuple[Server, list[int]]) -> None:
    server, workers = corpus_server
    lines = server.log_lines()
    assert not [line for line in lines if line.get("event") == "error"]
    assert not [line for line in lines if "traceback" in line]
    assert not [
        line
        for line in lines
        if "WORKER TIMEOUT" in str(line.get("message")) or "was sent" in str(line.get("message"))
    ]
    assert sorted(server.worker_pids()) == workers
