"""webhook/tls.py's CertificateReloader, driven by its injected clocks.

The certificate directory is laid out as the kubelet lays out a Secret volume: the
files are symlinks into a ``..data`` symlink that points at a timestamped directory,
and an update writes a new directory and swaps ``..data`` atomically.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from webhook.certs import write_certificates
from webhook.settings import Settings
from webhook.tls import CertificateReloader


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SecretVolume:
    """A directory like a mounted Secret: tls.crt -> ..data/tls.crt -> ..2026_x/..."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.generation = 0
        self.source = root.parent / "issuer"

    def publish(self, files: dict[str, bytes]) -> None:
        self.generation += 1
        target = self.root / f"..2026_11_29_{self.generation:04d}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        staging = self.root / "..data_tmp"
        staging.symlink_to(target.name)
        os.replace(staging, self.root / "..data")  # the atomic swap the kubelet does
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def issue(self, days: float = 365) -> dict[str, bytes]:
        write_certificates(self.source, "pod-replace-guard", "pod-replace-guard", days=days)
        return {name: (self.source / name).read_bytes() for name in ("tls.crt", "tls.key")}


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    secret = SecretVolume(tmp_path / "tls")
    secret.publish(secret.issue())
    return secret


def reloader_for(volume: SecretVolume, monotonic: Clock, wall: Clock) -> CertificateReloader:
    settings = Settings(cert_dir=str(volume.root), cert_reload_seconds=5.0)
    return CertificateReloader(settings, clock=monotonic, wall_clock=wall)


def test_files_are_checked_only_once_the_interval_has_passed(volume: SecretVolume) -> None:
    monotonic, wall = Clock(100.0), Clock(time.time())
    reloader = reloader_for(volume, monotonic, wall)
    first = reloader.serial
    volume.publish(volume.issue())
    monotonic.now += 4.9
    reloader.context()
    assert reloader.serial == first, "not before certReloadSeconds"
    monotonic.now += 0.2
    reloader.context()
    assert reloader.serial != first, "the swapped ..data is followed"


def test_a_mismatched_pair_keeps_the_old_certificate(volume: SecretVolume) -> None:
    monotonic, wall = Clock(100.0), Clock(time.time())
    reloader = reloader_for(volume, monotonic, wall)
    served = reloader.serial
    context = reloader.context()
    new = volume.issue()
    old_key = (volume.root / "tls.key").read_bytes()
    volume.publish({"tls.crt": new["tls.crt"], "tls.key": old_key})  # key not yet updated
    monotonic.now += 10
    assert reloader.context() is context, "the old context stays in service"
    assert reloader.serial == served
    ready, reason = reloader.ready()
    assert ready, "the old certificate is still valid"
    assert "could not be loaded" in reason
    volume.publish(new)  # the matching key arrives
    monotonic.now += 10
    assert reloader.context() is not context
    assert reloader.serial != served
    ready, reason = reloader.ready()
    assert ready
    assert "could not be loaded" not in reason


def test_readiness_follows_the_wall_clock_through_expiry(volume: SecretVolume) -> None:
    monotonic, wall = Clock(100.0), Clock(time.time())
    reloader = reloader_for(volume, monotonic, wall)
    assert reloader.ready()[0]
    wall.now = reloader.not_after + 1
    ready, reason = reloader.ready()
    assert not ready
    assert "expired at" in reason
    wall.now = reloader.not_before - 1
    ready, reason = reloader.ready()
    assert not ready
    assert "not valid before" in reason


def test_a_probe_notices_a_renewed_certificate(volume: SecretVolume) -> None:
    """Readiness checks the files too, so an expired pod recovers without a TLS client."""
    monotonic = Clock(100.0)
    volume.publish(volume.issue(days=1 / 86400))
    wall = Clock(time.time())
    reloader = reloader_for(volume, monotonic, wall)
    wall.now = reloader.not_after + 5
    assert not reloader.ready()[0]
    volume.publish(volume.issue(days=1))
    monotonic.now += 10
    assert reloader.ready()[0]
