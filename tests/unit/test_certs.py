"""Certificates (webhook.certs.write_certificates): files, modes, keys, SANs, CA reuse."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.certs import (
    CA_CERT,
    CA_KEY,
    TLS_CERT,
    TLS_KEY,
    CertificateError,
    has_serving_certificate,
    serving_names,
    write_certificates,
)

SERVICE, NAMESPACE = "pod-replace-guard", "guard-system"


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def issued_dir(tmp_path: Path) -> Path:
    out = tmp_path / "certs"
    write_certificates(out, SERVICE, NAMESPACE, ["webhook.example.com"], ["10.0.0.7", "::1"])
    return out


def test_writes_four_files_and_nothing_else(issued_dir: Path) -> None:
    assert sorted(path.name for path in issued_dir.iterdir()) == sorted(
        [CA_CERT, CA_KEY, TLS_CERT, TLS_KEY]
    )
    assert has_serving_certificate(issued_dir)


def test_keys_are_private_and_certificates_readable(issued_dir: Path) -> None:
    assert mode(issued_dir / CA_KEY) == 0o600
    assert mode(issued_dir / TLS_KEY) == 0o600
    assert mode(issued_dir / CA_CERT) == 0o644
    assert mode(issued_dir / TLS_CERT) == 0o644


def test_keys_are_ecdsa_p256_and_match_their_certificates(issued_dir: Path) -> None:
    for cert_name, key_name in ((CA_CERT, CA_KEY), (TLS_CERT, TLS_KEY)):
        cert = load_cert(issued_dir / cert_name)
        key = load_key(issued_dir / key_name)
        assert isinstance(key.curve, ec.SECP256R1)
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        assert public == key.public_key()


def test_subject_alternative_names(issued_dir: Path) -> None:
    cert = load_cert(issued_dir / TLS_CERT)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        SERVICE,
        f"{SERVICE}.{NAMESPACE}",
        f"{SERVICE}.{NAMESPACE}.svc",
        f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
        "localhost",
        "webhook.example.com",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("::1"),
    ]


def test_serving_names_are_deduplicated_in_order() -> None:
    assert serving_names("svc", "ns", ["localhost", "svc", "extra"]) == [
        "svc",
        "svc.ns",
        "svc.ns.svc",
        "svc.ns.svc.cluster.local",
        "localhost",
        "extra",
    ]


def test_ca_and_serving_certificate_extensions(issued_dir: Path) -> None:
    ca = load_cert(issued_dir / CA_CERT)
    serving = load_cert(issued_dir / TLS_CERT)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert serving.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert serving.issuer == ca.subject


def test_serving_certificate_is_signed_by_the_ca(issued_dir: Path) -> None:
    load_cert(issued_dir / TLS_CERT).verify_directly_issued_by(load_cert(issued_dir / CA_CERT))


def _handshake(cert_dir: Path, server_name: str) -> str:
    """A TLS handshake in memory: server with tls.crt/tls.key, client trusting ca.crt."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert_dir / TLS_CERT), str(cert_dir / TLS_KEY))
    client_ctx = ssl.create_default_context(cafile=str(cert_dir / CA_CERT))
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "handshake did not finish"
    version = client.version()
    assert version is not None
    return version


@pytest.mark.parametrize(
    "server_name",
    [
        f"{SERVICE}.{NAMESPACE}.svc",
        f"{SERVICE}.{NAMESPACE}.svc.cluster.local",
        "localhost",
        "webhook.example.com",
        "127.0.0.1",
        "10.0.0.7",
    ],
)
def test_tls_handshake_verifies_against_the_ca(issued_dir: Path, server_name: str) -> None:
    assert _handshake(issued_dir, server_name).startswith("TLS")


def test_tls_handshake_refuses_a_name_not_in_the_certificate(issued_dir: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(issued_dir, "evil.example.com")


def test_ca_bundle_is_base64_of_ca_crt(tmp_path: Path) -> None:
    issued = write_certificates(tmp_path, SERVICE, NAMESPACE)
    assert base64.b64decode(issued.ca_bundle, validate=True) == (tmp_path / CA_CERT).read_bytes()
    assert issued.out_dir == tmp_path
    assert issued.reused_ca is False


def test_second_run_reuses_the_ca_and_issues_a_new_serving_certificate(tmp_path: Path) -> None:
    first = write_certificates(tmp_path, SERVICE, NAMESPACE)
    ca_before = (tmp_path / CA_CERT).read_bytes()
    ca_key_before = (tmp_path / CA_KEY).read_bytes()
    tls_before = (tmp_path / TLS_CERT).read_bytes()
    key_before = (tmp_path / TLS_KEY).read_bytes()
    second = write_certificates(tmp_path, SERVICE, NAMESPACE)
    assert second.reused_ca is True
    assert (tmp_path / CA_CERT).read_bytes() == ca_before
    assert (tmp_path / CA_KEY).read_bytes() == ca_key_before
    assert second.ca_bundle == first.ca_bundle
    assert (tmp_path / TLS_CERT).read_bytes() != tls_before
    assert (tmp_path / TLS_KEY).read_bytes() != key_before
    load_cert(tmp_path / TLS_CERT).verify_directly_issued_by(load_cert(tmp_path / CA_CERT))


def test_new_ca_replaces_the_ca(tmp_path: Path) -> None:
    first = write_certificates(tmp_path, SERVICE, NAMESPACE)
    second = write_certificates(tmp_path, SERVICE, NAMESPACE, new_ca=True)
    assert second.reused_ca is False
    assert second.ca_bundle != first.ca_bundle
    assert base64.b64decode(second.ca_bundle) == (tmp_path / CA_CERT).read_bytes()
    load_cert(tmp_path / TLS_CERT).verify_directly_issued_by(load_cert(tmp_path / CA_CERT))


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    write_certificates(tmp_path, SERVICE, NAMESPACE)
    write_certificates(tmp_path, SERVICE, NAMESPACE)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_validity_period(tmp_path: Path) -> None:
    write_certificates(tmp_path, SERVICE, NAMESPACE, days=30)
    serving = load_cert(tmp_path / TLS_CERT)
    now = datetime.datetime.now(datetime.UTC)
    assert serving.not_valid_before_utc <= now
    lifetime = serving.not_valid_after_utc - now
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)
    ca = load_cert(tmp_path / CA_CERT)
    assert ca.not_valid_after_utc - now > datetime.timedelta(days=365 * 5)


def test_creates_missing_directories(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    write_certificates(out, SERVICE, NAMESPACE)
    assert has_serving_certificate(out)


def test_has_serving_certificate_needs_both_files(tmp_path: Path) -> None:
    assert not has_serving_certificate(tmp_path)
    (tmp_path / TLS_CERT).write_text("x")
    assert not has_serving_certificate(tmp_path)
    (tmp_path / TLS_KEY).write_text("x")
    assert has_serving_certificate(tmp_path)


@pytest.mark.parametrize("ip", ["not-an-ip", "300.1.1.1", "10.0.0.1/24", ""])
def test_bad_ip_is_a_certificate_error(tmp_path: Path, ip: str) -> None:
    with pytest.raises(CertificateError) as caught:
        write_certificates(tmp_path, SERVICE, NAMESPACE, ips=[ip])
    assert str(caught.value).startswith("--ip: ")
    assert not (tmp_path / TLS_CERT).exists()


def test_corrupt_ca_is_a_certificate_error(tmp_path: Path) -> None:
    write_certificates(tmp_path, SERVICE, NAMESPACE)
    (tmp_path / CA_CERT).write_text("not a certificate")
    with pytest.raises(CertificateError) as caught:
        write_certificates(tmp_path, SERVICE, NAMESPACE)
    assert "not a PEM certificate/key" in str(caught.value)


def test_ca_key_that_does_not_match_is_a_certificate_error(tmp_path: Path) -> None:
    write_certificates(tmp_path / "one", SERVICE, NAMESPACE)
    write_certificates(tmp_path / "two", SERVICE, NAMESPACE)
    (tmp_path / "one" / CA_KEY).write_bytes((tmp_path / "two" / CA_KEY).read_bytes())
    with pytest.raises(CertificateError) as caught:
        write_certificates(tmp_path / "one", SERVICE, NAMESPACE)
    assert "does not match" in str(caught.value)


def test_corrupt_ca_is_replaced_when_asked(tmp_path: Path) -> None:
    write_certificates(tmp_path, SERVICE, NAMESPACE)
    (tmp_path / CA_CERT).write_text("not a certificate")
    issued = write_certificates(tmp_path, SERVICE, NAMESPACE, new_ca=True)
    assert issued.reused_ca is False
    load_cert(tmp_path / TLS_CERT).verify_directly_issued_by(load_cert(tmp_path / CA_CERT))


@pytest.mark.parametrize("kept", ["ca.crt", "ca.key"])
def test_half_a_ca_is_an_error_not_a_new_ca(tmp_path: Path, kept: str) -> None:
    write_certificates(tmp_path, "svc", "ns")
    bundle_before = (tmp_path / "ca.crt").read_bytes()
    (tmp_path / ("ca.key" if kept == "ca.crt" else "ca.crt")).unlink()
    with pytest.raises(CertificateError, match="without"):
        write_certificates(tmp_path, "svc", "ns")
    if kept == "ca.crt":
        assert (tmp_path / "ca.crt").read_bytes() == bundle_before
    assert write_certificates(tmp_path, "svc", "ns", new_ca=True).reused_ca is False
