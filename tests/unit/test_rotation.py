"""webhook.rotation.plan, on a simulated clock: the invariant that matters is that a
certificate is never served that the published caBundle does not trust."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509

from webhook.rotation import PROPAGATION_GRACE, Lifetimes, Material, plan

NAMES = ["pod-replace-guard", "pod-replace-guard.ns.svc"]
START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
MINUTES = Lifetimes(ca=datetime.timedelta(minutes=6), serving=datetime.timedelta(minutes=3))


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _trusted(bundle: bytes, serving_pem: bytes) -> bool:
    serving = _cert(serving_pem)
    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            serving.verify_directly_issued_by(ca)
            return True
        except Exception:
            continue
    return False


def test_an_empty_secret_gets_a_ca_and_a_serving_certificate_at_once() -> None:
    decision = plan(None, START, MINUTES, NAMES, published=None)
    material = decision.material
    assert _trusted(material.bundle, material.tls_cert)
    sans = _cert(material.tls_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == NAMES
    assert "made a CA" in decision.reason


def test_nothing_changes_while_certificates_are_young() -> None:
    material = plan(None, START, MINUTES, NAMES, None).material
    later = START + datetime.timedelta(minutes=1)
    decision = plan(material, later, MINUTES, NAMES, published=material.bundle)
    assert decision.material == material
    assert decision.reason == ""


@pytest.mark.parametrize("sync_seconds", [5, 10, 30])
def test_hours_of_rotations_never_serve_an_untrusted_certificate(sync_seconds: int) -> None:
    """Two hours of 6-minute CAs and 3-minute certificates. Each sync the controller
    plans, then publishes the bundle; the server serves what the Secret holds. The
    API server sees the bundle PROPAGATION_GRACE/3 after it is published."""
    now = START
    material = plan(None, now, MINUTES, NAMES, None).material
    published = material.bundle
    seen_by_api_server = published
    published_at = now
    cas, servings = {material.ca_cert}, {material.tls_cert}
    step = datetime.timedelta(seconds=sync_seconds)
    while now < START + datetime.timedelta(hours=2):
        now += step
        if now - published_at >= PROPAGATION_GRACE / 3:
            seen_by_api_server = published
        material = plan(material, now, MINUTES, NAMES, published).material
        # What the API server trusts at this instant must verify what is served.
        assert _trusted(seen_by_api_server, material.tls_cert), now
        serving = _cert(material.tls_cert)
        assert serving.not_valid_after_utc > now, "an expired certificate is served"
        if material.bundle != published:
            published, published_at = material.bundle, now
        cas.add(material.ca_cert)
        servings.add(material.tls_cert)
    # 120 minutes of 6-minute CAs renewed at a third left: a new CA every 4 minutes.
    assert len(cas) >= 25
    assert len(servings) >= 40


def test_a_new_ca_waits_for_the_published_bundle() -> None:
    now = START
    material = plan(None, now, MINUTES, NAMES, None).material
    step = datetime.timedelta(seconds=10)
    while True:  # sync, publishing each time, until the CA is renewed
        now += step
        rolled = plan(material, now, MINUTES, NAMES, published=material.bundle).material
        if rolled.ca_cert != material.ca_cert:
            break
        material = rolled
    old_bundle = material.bundle
    assert len(x509.load_pem_x509_certificates(rolled.bundle)) == 2
    # Not published yet: a minute later the certificate served is still the old CA's.
    for _ in range(6):
        now += step
        rolled = plan(rolled, now, MINUTES, NAMES, published=old_bundle).material
        assert _trusted(old_bundle, rolled.tls_cert)
        assert not _trusted(rolled.ca_cert, rolled.tls_cert)
    # Published, and the grace passed: the next certificate is the new CA's.
    now += PROPAGATION_GRACE
    issued = plan(rolled, now, MINUTES, NAMES, published=rolled.bundle).material
    while not _trusted(issued.ca_cert, issued.tls_cert):
        now += step
        issued = plan(issued, now, MINUTES, NAMES, published=issued.bundle).material
    assert now - START < datetime.timedelta(minutes=7), "the new CA was never used"


def test_expired_cas_leave_the_bundle() -> None:
    material = plan(None, START, MINUTES, NAMES, None).material
    now = START
    for _ in range(200):
        now += datetime.timedelta(seconds=10)
        material = plan(material, now, MINUTES, NAMES, material.bundle).material
    for ca in x509.load_pem_x509_certificates(material.bundle):
        assert ca.not_valid_after_utc > now


@pytest.mark.parametrize(
    "broken",
    [
        {"ca_key": b"not a key"},
        {"ca_cert": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        {"tls_key": b""},
    ],
)
def test_a_damaged_secret_is_repaired(broken: dict[str, bytes]) -> None:
    material = plan(None, START, MINUTES, NAMES, None).material
    damaged = Material(**{**material.__dict__, **broken})
    repaired = plan(damaged, START, MINUTES, NAMES, published=None).material
    assert _trusted(repaired.bundle, repaired.tls_cert)


def test_other_names_get_a_new_serving_certificate() -> None:
    material = plan(None, START, MINUTES, NAMES, None).material
    renamed = plan(material, START, MINUTES, [*NAMES, "other"], material.bundle).material
    assert renamed.tls_cert != material.tls_cert
    assert renamed.ca_cert == material.ca_cert


def _rolling(now: datetime.datetime) -> tuple[Material, datetime.datetime]:
    """Material in the middle of a CA renewal: the new CA is in the Secret's bundle,
    the serving certificate in service is still the old CA's."""
    material = plan(None, now, MINUTES, NAMES, None).material
    while True:
        now += datetime.timedelta(seconds=10)
        rolled = plan(material, now, MINUTES, NAMES, published=material.bundle).material
        if rolled.ca_cert != material.ca_cert:
            return rolled, now
        material = rolled


@pytest.mark.parametrize("minutes", [7, 12, 60, 60 * 24 * 365])
def test_an_expired_ca_is_replaced_however_long_ago_it_expired(minutes: int) -> None:
    """A clock jump, a cluster switched off for longer than the CA lives, or a Secret
    restored from an old backup: plan made a serving certificate that would end before
    it began (ValueError, every sync, for ever)."""
    material = plan(None, START, MINUTES, NAMES, None).material
    now = START + datetime.timedelta(minutes=minutes)
    issued = plan(material, now, MINUTES, NAMES, published=material.bundle).material
    assert _trusted(issued.bundle, issued.tls_cert)
    assert _cert(issued.ca_cert).not_valid_after_utc > now
    assert _cert(issued.tls_cert).not_valid_after_utc > now


def test_a_certificate_that_is_not_a_ca_is_not_used_as_one() -> None:
    material = plan(None, START, MINUTES, NAMES, None).material
    # The serving certificate and its key, put where the CA belongs.
    hostile = Material(
        material.tls_cert, material.tls_key, material.tls_cert, material.tls_key, material.bundle
    )
    repaired = plan(hostile, START, MINUTES, NAMES, published=None).material
    ca = _cert(repaired.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _trusted(repaired.bundle, repaired.tls_cert)


@pytest.mark.parametrize(
    "broken",
    [
        {"ca_key": b"not a key"},
        {"ca_key": b""},
        {"ca_cert": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
    ],
)
def test_a_damaged_ca_does_not_replace_the_certificate_the_published_bundle_trusts(
    broken: dict[str, bytes],
) -> None:
    """The serving certificate in service stays until a new CA's bundle is published:
    a damaged CA must not make plan serve a certificate the API server cannot verify."""
    material = plan(None, START, MINUTES, NAMES, None).material
    published = material.bundle
    now = START + datetime.timedelta(seconds=30)
    damaged = Material(**{**material.__dict__, **broken})
    repaired = plan(damaged, now, MINUTES, NAMES, published=published).material
    assert _trusted(published, repaired.tls_cert), "served a certificate nobody trusts yet"
    assert _trusted(repaired.bundle, repaired.tls_cert)
    # The new CA joins the bundle, and its certificate is served once that is published.
    assert _cert(repaired.ca_cert) in x509.load_pem_x509_certificates(repaired.bundle)
    later = plan(repaired, now + PROPAGATION_GRACE * 2, MINUTES, NAMES, repaired.bundle).material
    assert _trusted(repaired.ca_cert, later.tls_cert)


def test_a_damaged_bundle_keeps_the_ca_of_the_certificate_in_service() -> None:
    rolled, now = _rolling(START)
    published = rolled.bundle
    damaged = Material(**{**rolled.__dict__, "bundle": b"garbage"})
    now += datetime.timedelta(seconds=1)
    repaired = plan(damaged, now, MINUTES, NAMES, published=published).material
    assert _trusted(repaired.bundle, repaired.tls_cert), "the bundle lost the serving CA"
    assert _trusted(published, repaired.tls_cert)
