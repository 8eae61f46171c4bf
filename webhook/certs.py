"""A CA and a serving certificate for the webhook, made with ``cryptography``.

The API server verifies the webhook's certificate against the configuration's
caBundle, so the CA is kept and reused across serving-certificate rotations: the
bundle stays valid while the serving certificate changes.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
TLS_CERT: Final = "tls.crt"
TLS_KEY: Final = "tls.key"
# The API server's client identity, when only it may call (PRG_CLIENT_CA).
CLIENT_CA_CERT: Final = "client-ca.crt"
CLIENT_CA_KEY: Final = "client-ca.key"
CLIENT_CERT: Final = "client.crt"
CLIENT_KEY: Final = "client.key"


class CertificateError(ValueError):
    """Existing files cannot be used (unreadable CA, a key that does not match)."""


@dataclass(frozen=True)
class Issued:
    out_dir: Path
    ca_bundle: str  # base64 of ca.crt, for clientConfig.caBundle
    reused_ca: bool


def serving_names(service: str, namespace: str, hosts: list[str]) -> list[str]:
    names = [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        "localhost",
        *hosts,
    ]
    return list(dict.fromkeys(names))


def write_file(path: Path, data: bytes, private: bool) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# Certificates start this long before they are made: a node whose clock runs a little
# behind still accepts them.
BACKDATE: Final = datetime.timedelta(minutes=5)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(
    common_name: str, lifetime: datetime.timedelta, now: datetime.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = now or _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load_ca(out_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    cert_path, key_path = out_dir / CA_CERT, out_dir / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        return None
    if not cert_path.exists() or not key_path.exists():
        # Making a new CA here would silently invalidate every caBundle in use.
        present, absent = (CA_CERT, CA_KEY) if cert_path.exists() else (CA_KEY, CA_CERT)
        raise CertificateError(
            f"{out_dir}: {present} without {absent}; restore it or pass --new-ca"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as error:
        raise CertificateError(
            f"{out_dir}: {CA_CERT} or {CA_KEY} is not a PEM certificate/key"
        ) from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateError(f"{out_dir}: {CA_KEY} does not match {CA_CERT}")
    return key, cert


def issue_serving_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    dns_names: list[str],
    ips: list[str],
    lifetime: datetime.timedelta,
    now: datetime.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or _now()
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_certificates(
    out_dir: str | Path,
    service: str,
    namespace: str,
    hosts: list[str] | None = None,
    ips: list[str] | None = None,
    new_ca: bool = False,
    days: float = 365,
) -> Issued:
    """Write ca.crt/ca.key (reused unless ``new_ca``) and tls.crt/tls.key to out_dir."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for ip in ips or []:
        try:
            ipaddress.ip_address(ip)
        except ValueError as error:
            raise CertificateError(f"--ip: {ip!r} is not an IP address") from error
    existing = None if new_ca else _load_ca(directory)
    ca_key, ca_cert = existing or make_ca(
        f"pod-replace-guard CA ({namespace})", datetime.timedelta(days=3650)
    )
    if existing is None:
        write_file(directory / CA_KEY, key_pem(ca_key), private=True)
        write_file(
            directory / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), private=False
        )
    key, cert = issue_serving_certificate(
        ca_key,
        ca_cert,
        serving_names(service, namespace, hosts or []),
        list(dict.fromkeys(["127.0.0.1", *(ips or [])])),
        datetime.timedelta(days=days),
    )
    # Key first, then certificate: a reloader that sees a mismatched pair keeps the
    # old one and tries again (see serving.CertificateReloader).
    write_file(directory / TLS_KEY, key_pem(key), private=True)
    write_file(directory / TLS_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False)
    bundle = base64.b64encode((directory / CA_CERT).read_bytes()).decode()
    return Issued(directory, bundle, existing is not None)


def has_serving_certificate(cert_dir: str | Path) -> bool:
    directory = Path(cert_dir)
    return (directory / TLS_CERT).is_file() and (directory / TLS_KEY).is_file()


def write_client_certificate(out_dir: str | Path, name: str, days: float = 365) -> Path:
    """A client CA (client-ca.crt/.key, reused) and a client certificate for ``name``
    (client.crt/.key): the identity the API server presents to the webhook through its
    admission-control kubeconfig. Returns the client CA's path, for PRG_CLIENT_CA."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = directory / CLIENT_CA_CERT, directory / CLIENT_CA_KEY
    if ca_path.is_file() and ca_key_path.is_file():
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{ca_key_path} is not an EC key")
        ca_key = loaded
    else:
        ca_key, ca_cert = make_ca("pod-replace-guard client CA", datetime.timedelta(days=3650))
        write_file(ca_key_path, key_pem(ca_key), private=True)
        write_file(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_file(directory / CLIENT_KEY, key_pem(key), private=True)
    write_file(
        directory / CLIENT_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False
    )
    return ca_path
