"""When to renew the webhook's CA and serving certificate: a pure decision, no I/O.

The API server trusts the serving certificate only through the webhook
configuration's caBundle, so the order of a change matters:

1. A new CA is added to the bundle *beside* the old one; the serving certificate
   (signed by the old CA) stays in service.
2. Only once the bundle carrying the new CA is published in the webhook configuration
   (and ``PROPAGATION_GRACE`` has passed, for the API server to load it) is a serving
   certificate issued from the new CA.
3. The old CA leaves the bundle when it expires.

At no point is a certificate served that the published bundle does not trust. Each
certificate is renewed when a third of its lifetime is left (cert-manager's default
for renewBefore is the same third), so one failed attempt leaves a long time to retry.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.certs import BACKDATE, issue_serving_certificate, key_pem, make_ca

# How long a new CA must have been in the published caBundle before a serving
# certificate it signed is served: the API server reloads webhook configurations
# through an informer (well under a second); the margin covers a slow watch.
PROPAGATION_GRACE: Final = datetime.timedelta(seconds=15)
# A certificate is renewed when less than this part of its lifetime is left.
RENEW_WHEN_LEFT: Final = 1 / 3


@dataclass(frozen=True)
class Material:
    """What the certificate Secret holds, all PEM."""

    ca_cert: bytes
    ca_key: bytes
    tls_cert: bytes
    tls_key: bytes
    # Every CA the API server must trust: the current one first, then older ones
    # still valid (a serving certificate they signed may still be in service).
    bundle: bytes


@dataclass(frozen=True)
class Lifetimes:
    ca: datetime.timedelta
    serving: datetime.timedelta


@dataclass(frozen=True)
class Decision:
    material: Material
    # Why it changed, for the log ("" when it did not).
    reason: str


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem) if pem.strip() else []
    except ValueError:
        return []


def _left(cert: x509.Certificate, now: datetime.datetime) -> datetime.timedelta:
    return cert.not_valid_after_utc - now


def _due(cert: x509.Certificate, lifetime: datetime.timedelta, now: datetime.datetime) -> bool:
    """A third of its life is left, or it lives more than twice as long as configured
    (the lifetime was shortened: renewing applies it)."""
    full = cert.not_valid_after_utc - cert.not_valid_before_utc - BACKDATE
    return full > 2 * lifetime or _left(cert, now) < min(full, lifetime) * RENEW_WHEN_LEFT


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _usable_ca(
    material: Material | None, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The Secret's CA and its key, if they pair, the certificate is a CA and it has
    not expired (a certificate it signed now could not be valid)."""
    if material is None:
        return None
    certs = _certs(material.ca_cert)
    try:
        key = serialization.load_pem_private_key(material.ca_key, password=None)
    except (ValueError, TypeError):
        return None
    if len(certs) != 1 or not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if key.public_key() != certs[0].public_key() or not _is_ca(certs[0]):
        return None
    if _left(certs[0], now) <= datetime.timedelta(0):
        return None
    return certs[0], key


def _serving_ok(
    material: Material, names: list[str], ips: list[str], now: datetime.datetime
) -> x509.Certificate | None:
    """The serving certificate, if it pairs with its key, names ``names`` and ``ips``
    and is valid now."""
    certs = _certs(material.tls_cert)
    try:
        key = serialization.load_pem_private_key(material.tls_key, password=None)
    except (ValueError, TypeError):
        return None
    if len(certs) != 1 or not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    cert = certs[0]
    if key.public_key() != cert.public_key() or not cert.not_valid_before_utc <= now:
        return None
    if _left(cert, now) <= datetime.timedelta(0):
        return None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    if sans.get_values_for_type(x509.DNSName) != names:
        return None
    if [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] != ips:
        return None
    return cert


def plan(
    current: Material | None,
    now: datetime.datetime,
    lifetimes: Lifetimes,
    names: list[str],
    published: bytes | None,
    ips: list[str] | None = None,
) -> Decision:
    """The material the Secret should hold now.

    ``names`` are the serving certificate's DNS names; ``published`` is the caBundle
    the webhook configuration carries (PEM), or None when no entry is registered yet
    (nothing depends on the bundle, so any change is safe). ``ips`` are its IP
    addresses (default 127.0.0.1).
    """
    ips = ips or ["127.0.0.1"]
    usable = _usable_ca(current, now)
    reasons: list[str] = []
    # Every CA the Secret's bundle still trusts: a serving certificate one of them
    # signed may be in service.
    trusted = [
        c
        for c in _certs(current.bundle if current else b"")
        if _is_ca(c) and _left(c, now) > datetime.timedelta(0)
    ]
    if usable is None or current is None:
        # The serving certificate in service (if any) stays until the bundle with the
        # new CA is published, like after a renewal: the new CA joins the bundle.
        ca_key, ca_cert = make_ca("pod-replace-guard CA", lifetimes.ca, now)
        tls_cert, tls_key = (current.tls_cert, current.tls_key) if current else (b"", b"")
        material = Material(_pem(ca_cert), key_pem(ca_key), tls_cert, tls_key, b"")
        trusted.insert(0, ca_cert)
        # A Secret emptied while the entry is registered: the replicas still serve a
        # certificate the published CAs signed, so those stay trusted meanwhile.
        trusted += [
            c
            for c in _certs(published or b"")
            if _is_ca(c) and _left(c, now) > datetime.timedelta(0) and c not in trusted
        ]
        reasons.append("no usable CA in the Secret: made a CA")
    else:
        ca_cert, ca_key = usable
        material = current
        if ca_cert not in trusted:
            trusted.insert(0, ca_cert)
        if _due(ca_cert, lifetimes.ca, now):
            # One last serving certificate from the old CA, with all the life that CA
            # has left: it stays in service while the bundle with the new CA propagates.
            key, cert = issue_serving_certificate(
                ca_key,
                ca_cert,
                names,
                ips,
                _serving_lifetime(ca_cert, lifetimes, now),
                now,
            )
            ca_key, ca_cert = make_ca("pod-replace-guard CA", lifetimes.ca, now)
            trusted.insert(0, ca_cert)
            material = Material(_pem(ca_cert), key_pem(ca_key), _pem(cert), key_pem(key), b"")
            reasons.append("the CA is due for renewal: a new CA joins the bundle")
    serving = _serving_ok(material, names, ips, now)
    if serving is not None:
        # The CA that verifies the certificate in service stays in the bundle (a bundle
        # damaged in the Secret is completed from the published one); a certificate no
        # CA at hand verifies is as good as none.
        issuer = next(
            (
                c
                for c in [*trusted, *_certs(published or b"")]
                if _is_ca(c) and _left(c, now) > datetime.timedelta(0) and _signed_by(serving, c)
            ),
            None,
        )
        if issuer is None:
            serving = None
        elif issuer not in trusted:
            trusted.append(issuer)
    bundle = b"".join(_pem(c) for c in dict.fromkeys(trusted))
    if bundle != material.bundle:
        material = Material(
            material.ca_cert, material.ca_key, material.tls_cert, material.tls_key, bundle
        )
        if not reasons:
            reasons.append("the bundle changed: expired CAs left it")
    # Every CA has the same subject: "issued by the current CA" is a signature check.
    renew = (
        serving is None or _due(serving, lifetimes.serving, now) or not _signed_by(serving, ca_cert)
    )
    if renew and (serving is None or _safe_to_issue(ca_cert, published, now)):
        key, cert = issue_serving_certificate(
            ca_key, ca_cert, names, ips, _serving_lifetime(ca_cert, lifetimes, now), now
        )
        material = Material(material.ca_cert, material.ca_key, _pem(cert), key_pem(key), bundle)
        reasons.append(
            "no valid serving certificate: issued one"
            if serving is None
            else "the serving certificate is due for renewal: issued one from the current CA"
        )
    return Decision(material, "; ".join(reasons))


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def safe_to_serve(cert_pem: bytes, published: bytes | None, now: datetime.datetime) -> bool:
    """The serving certificate may be served now: nothing is registered yet, or the
    published bundle holds a CA that signed it, published long enough ago."""
    if published is None:
        return True
    certs = _certs(cert_pem)
    if len(certs) != 1:
        return False
    return any(
        _signed_by(certs[0], ca) and _safe_to_issue(ca, published, now) for ca in _certs(published)
    )


def _safe_to_issue(ca: x509.Certificate, published: bytes | None, now: datetime.datetime) -> bool:
    """A serving certificate from ``ca`` may be served: the published bundle trusts it."""
    if published is None:
        return True
    if ca not in _certs(published):
        return False
    return now - (ca.not_valid_before_utc + BACKDATE) >= PROPAGATION_GRACE


def _serving_lifetime(
    ca: x509.Certificate, lifetimes: Lifetimes, now: datetime.datetime
) -> datetime.timedelta:
    # Never outlive the signing CA: the CA leaves the bundle when it expires.
    return min(lifetimes.serving, _left(ca, now))
