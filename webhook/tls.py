"""The server's TLS context, reloaded when the certificate files change.

The worker (webhook/serving/) asks :meth:`CertificateReloader.context` for a context
on every new connection; it hands out a cached one and replaces it when the files
change (a Secret volume update or a cert-manager renewal), so new connections get the
new certificate without a restart while established keep-alive connections carry on.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from webhook.metrics import certificate_expiry_gauge, certificate_reload_counter
from webhook.settings import Settings

log = logging.getLogger("pod_replace_guard.tls")

# Forward secrecy and AEAD only for TLS 1.2 (TLS 1.3 suites are fixed and strong).
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
FileSignature = tuple[tuple[int, int, int], ...]


def build_tls_context(
    cert_file: Path, key_file: Path, client_ca: str, min_version: str
) -> ssl.SSLContext:
    """A server context: TLS 1.2+ (or 1.3+), strong ciphers, optional client certs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    if client_ca:
        # Only clients with a certificate from this CA (the API server's
        # --proxy-client or admission-control kubeconfig identity) may call us.
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class CertificateReloader:
    """The current TLS context, reloaded when the certificate files change.

    The files are checked at most once per ``interval`` seconds, on a new
    connection. A pair that cannot be loaded (for example the key written before the
    certificate) keeps the previous context in service and is retried next time.
    """

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._reloads = certificate_reload_counter()
        self._expiry = certificate_expiry_gauge()
        self._checked_at = clock()
        self._signature = self._stat()
        self._context = self._build()
        self.reload_error = ""
        self._loaded(_certificate_validity(settings.cert_file))

    def _paths(self) -> list[Path]:
        paths = [self._settings.cert_file, self._settings.key_file]
        if self._settings.client_ca:
            paths.append(Path(self._settings.client_ca))
        return paths

    def _stat(self) -> FileSignature:
        signature = []
        for path in self._paths():
            try:
                # stat() follows the ..data symlink that Secret volumes swap atomically.
                info = path.stat()
                signature.append((info.st_ino, info.st_mtime_ns, info.st_size))
            except OSError:
                signature.append((0, 0, 0))
        return tuple(signature)

    def _build(self) -> ssl.SSLContext:
        settings = self._settings
        return build_tls_context(
            settings.cert_file, settings.key_file, settings.client_ca, settings.tls_min_version
        )

    def context(self) -> ssl.SSLContext:
        if self._clock() - self._checked_at < self._settings.cert_reload_seconds:
            return self._context
        with self._lock:
            # Handshakes that arrive while a new pair is being loaded wait here for
            # it, rather than being handed the old certificate.
            if self._clock() - self._checked_at >= self._settings.cert_reload_seconds:
                self._reload_if_changed()
                self._checked_at = self._clock()
            return self._context

    def _reload_if_changed(self) -> None:
        signature = self._stat()
        if signature == self._signature:
            return
        try:
            context = self._build()
            validity = _certificate_validity(self._settings.cert_file)
        except (OSError, ssl.SSLError, ValueError) as error:
            self._reloads.labels(result="failure").inc()
            self.reload_error = str(error) or type(error).__name__
            log.warning(
                "serving certificate changed but could not be loaded; keeping the old one",
                extra={"event": "certificate-reload", "result": "failure", "error": str(error)},
            )
            return
        self._context = context
        self._signature = signature
        self.reload_error = ""
        self._loaded(validity)
        self._reloads.labels(result="success").inc()
        log.info(
            "serving certificate reloaded",
            extra={
                "event": "certificate-reload",
                "result": "success",
                "serial": f"{self.serial:x}",
            },
        )

    def _loaded(self, validity: tuple[int, float, float]) -> None:
        self.serial, self.not_before, self.not_after = validity
        self._expiry.set(self.not_after)
        days_left = (self.not_after - self._wall_clock()) / 86400
        if days_left < EXPIRY_WARNING_DAYS:
            log.warning(
                "the serving certificate expires soon and was not renewed: see the "
                "controller's (or cert-manager's) log",
                extra={"event": "certificate-expiry", "days_left": round(days_left, 2)},
            )

    def ready(self) -> tuple[bool, str]:
        """Not ready while the certificate served is not valid.

        A reload that failed keeps the previous certificate in service and is reported
        here and in the metrics, but does not fail readiness while that certificate is
        valid: a broken Secret update would otherwise take every replica out of the
        Service at once, and with failurePolicy Fail that refuses every pod update.
        """
        self.context()  # probes check the files too: a renewed certificate is noticed
        now = self._wall_clock()
        if now >= self.not_after:
            return False, f"serving certificate expired at {_utc(self.not_after)}"
        if now < self.not_before:
            return False, f"serving certificate not valid before {_utc(self.not_before)}"
        reason = f"certificate valid until {_utc(self.not_after)}"
        if self.reload_error:
            reason += f"; the changed certificate files could not be loaded: {self.reload_error}"
        return True, reason


# A warning in the log from this many days before the serving certificate expires (the
# alert in deploy/monitoring fires at the same point): ten days after the controller
# (renewing a 90-day certificate with 30 days left) or cert-manager should have.
EXPIRY_WARNING_DAYS: Final = 20


def _certificate_validity(cert_file: Path) -> tuple[int, float, float]:
    """(serial, not before, not after) of the PEM certificate, as Unix times."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return (
        cert.serial_number,
        cert.not_valid_before_utc.timestamp(),
        cert.not_valid_after_utc.timestamp(),
    )


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
