"""Issue 3 / issue 6 security: TLS versions, ciphers, plaintext, client certificates,
against a real ``python -m webhook serve``."""

from __future__ import annotations

import json
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clientcerts import write_ca, write_client
from tests.support.reviews import update_review
from tests.support.server import (
    Server,
    client_tls_context,
    http_request,
    raw_exchange,
    read_response,
    running_server,
    start_server,
)

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("tls"), workers=1, threads=4) as running:
        yield running


def _context(
    ca_file: Path,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(ca_file))
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    if ciphers is not None:
        # SECLEVEL=0 so that our client really offers what we want refused.
        context.set_ciphers(ciphers + ":@SECLEVEL=0")
    return context


def _handshake(server: Server, context: ssl.SSLContext) -> tuple[str, str]:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        version, cipher = tls.version(), tls.cipher()
        assert version is not None
        assert cipher is not None
        return version, cipher[0]


def _review_answered(server: Server, context: ssl.SSLContext) -> bool:
    review = update_review(lambda pod: pod["spec"].__setitem__("restartPolicy", "Never"))
    data = http_request(
        "POST", "/validate", json.dumps(review).encode(), {"Content-Type": "application/json"}
    )
    (response,) = raw_exchange(server, data, context=context)
    return response.status == 200 and response.json()["response"]["allowed"] is False


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_tls12_and_tls13_work(server: Server, version: str) -> None:
    pinned = ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
    context = _context(server.ca_file, pinned, pinned)
    negotiated, cipher = _handshake(server, context)
    assert negotiated == version
    if version == "TLSv1.2":
        assert cipher.startswith("ECDHE-"), "forward secrecy"
        assert "GCM" in cipher or "CHACHA20" in cipher, "AEAD only"
    assert _review_answered(server, context)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_refused(server: Server, version: str) -> None:
    old = getattr(ssl.TLSVersion, version)
    context = _context(server.ca_file, old, old, ciphers="DEFAULT")
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(server, context)
    # The server said no (a protocol_version alert), not our own client.
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value) or "UNSUPPORTED_PROTOCOL" in str(
        refused.value
    ), refused.value


@pytest.mark.parametrize(
    "cipher",
    [
        "AES128-SHA",  # static RSA key exchange, CBC
        "AES256-GCM-SHA384",  # static RSA key exchange
        "ECDHE-ECDSA-AES128-SHA",  # CBC with SHA-1
        "ECDHE-ECDSA-AES256-SHA384",  # CBC
        "ECDHE-ECDSA-NULL-SHA",  # no encryption at all
    ],
)
def test_weak_tls12_ciphers_refused(server: Server, cipher: str) -> None:
    context = _context(server.ca_file, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, cipher)
    try:
        offered = [entry["name"] for entry in context.get_ciphers()]
    except ssl.SSLError:
        offered = []
    if cipher not in offered:
        # This OpenSSL build cannot even offer it, so no server could accept it.
        with pytest.raises(ssl.SSLError):
            _handshake(server, context)
        return
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(server, context)
    assert "HANDSHAKE_FAILURE" in str(refused.value), refused.value


def test_plaintext_http_refused(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(http_request("GET", "/healthz"))
        try:
            answer = raw.recv(4096)  # a TLS alert, or nothing
        except ConnectionResetError:
            answer = b""  # closed with the request unread: a reset
    assert not answer.startswith(b"HTTP/"), answer[:100]
    assert server.get("/healthz")[0] == 200, "still serving TLS"


def test_tls_min_version_13_refuses_12(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=1, args=["--tls-min-version", "1.3"]) as server:
        tls12 = _context(server.ca_file, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError) as refused:
            _handshake(server, tls12)
        assert "ALERT_PROTOCOL_VERSION" in str(refused.value), refused.value
        assert _handshake(server, _context(server.ca_file))[0] == "TLSv1.3"


# --- client certificates ------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, Path]]:
    """A server with --client-ca, the right client's cert, and a stranger's cert."""
    work = tmp_path_factory.mktemp("mtls")
    trusted = write_ca(work / "client-ca", "apiserver-client-ca")
    stranger_ca = write_ca(work / "other-ca", "some-other-ca")
    right = write_client(work / "client-ca", trusted, "kube-apiserver")
    wrong = write_client(work / "other-ca", stranger_ca, "kube-apiserver")
    server = start_server(
        work,
        workers=1,
        args=["--client-ca", str(work / "client-ca" / "ca.crt")],
        client_cert=right,  # the readiness probe must present it too
    )
    try:
        yield server, right[0].parent, wrong[0].parent
    finally:
        server.stop()


def _mtls_review(server: Server, context: ssl.SSLContext) -> int:
    """HTTP status of a review over a fresh connection; raises if the TLS layer refuses."""
    review = json.dumps(update_review()).encode()
    data = http_request("POST", "/validate", review, {"Content-Type": "application/json"})
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(data)
        reader = tls.makefile("rb")
        try:
            return read_response(reader).status
        finally:
            reader.close()


REFUSED = (ssl.SSLError, ConnectionError, OSError)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_client_without_certificate_refused(mtls: tuple[Server, Path, Path], version: str) -> None:
    server, _, _ = mtls
    pinned = getattr(ssl.TLSVersion, version.replace(".", "_"))
    context = _context(server.ca_file, pinned, pinned)
    # TLS 1.3 reports the refusal after the client's side of the handshake: on first read.
    with pytest.raises(REFUSED):
        _mtls_review(server, context)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_client_with_certificate_from_another_ca_refused(
    mtls: tuple[Server, Path, Path], version: str
) -> None:
    server, _, wrong_dir = mtls
    pinned = getattr(ssl.TLSVersion, version.replace(".", "_"))
    context = _context(server.ca_file, pinned, pinned)
    context.load_cert_chain(
        str(wrong_dir / "kube-apiserver.crt"), str(wrong_dir / "kube-apiserver.key")
    )
    with pytest.raises(REFUSED):
        _mtls_review(server, context)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_client_with_right_certificate_accepted(
    mtls: tuple[Server, Path, Path], version: str
) -> None:
    server, right_dir, _ = mtls
    pinned = getattr(ssl.TLSVersion, version.replace(".", "_"))
    context = _context(server.ca_file, pinned, pinned)
    context.load_cert_chain(
        str(right_dir / "kube-apiserver.crt"), str(right_dir / "kube-apiserver.key")
    )
    assert _mtls_review(server, context) == 200


def test_refused_clients_are_logged_not_fatal(mtls: tuple[Server, Path, Path]) -> None:
    server, right_dir, _ = mtls
    reasons = " ".join(
        str(line.get("message")) for line in server.log_lines() if line.get("level") == "warning"
    )
    assert "CERTIFICATE" in reasons.upper(), reasons[-2000:]
    context = client_tls_context(
        server.ca_file, (right_dir / "kube-apiserver.crt", right_dir / "kube-apiserver.key")
    )
    assert _mtls_review(server, context) == 200
