"""Serving: the TLS context with certificate reload, and the gunicorn configuration.

gunicorn's ``gthread`` worker builds the server-side TLS context through the
``ssl_context`` hook for every new connection; :class:`CertificateReloader` hands out a
cached context and replaces it when the certificate files change (a Secret volume
update or a cert-manager renewal), so new connections get the new certificate
without a restart, while established keep-alive connections carry on.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from flask import Flask
from gunicorn import glogging

from webhook.observe import (
    MULTIPROC_ENV,
    certificate_expiry_gauge,
    certificate_reload_counter,
    configure_logging,
    gunicorn_logconfig,
)
from webhook.settings import Settings

log = logging.getLogger("pod_replace_guard.serving")

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
                "the serving certificate expires soon: renew it (make deploy, cert-manager)",
                extra={"event": "certificate-expiry", "days_left": round(days_left, 2)},
            )

    def ready(self) -> tuple[bool, str]:
        """Not ready while draining, or while the certificate served is not valid.

        A reload that failed keeps the previous certificate in service and is reported
        here and in the metrics, but does not fail readiness while that certificate is
        valid: a broken Secret update would otherwise take every replica out of the
        Service at once, and with failurePolicy Fail that refuses every pod update.
        """
        from webhook.worker import draining

        if draining.is_set():
            return False, "shutting down"
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
# alert in deploy/monitoring fires at the same point).
EXPIRY_WARNING_DAYS: Final = 30


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


_reloader: CertificateReloader | None = None
_reloader_lock = threading.Lock()


def process_reloader(settings: Settings) -> CertificateReloader:
    """One reloader per process (each gunicorn worker has its own)."""
    global _reloader  # noqa: PLW0603 - per-process singleton shared by the hook and /readyz
    with _reloader_lock:
        if _reloader is None:
            _reloader = CertificateReloader(settings)
        return _reloader


def worker_app(settings: Settings) -> Flask:
    """The app as each gunicorn worker loads it, with its own certificate reloader."""
    from webhook.app import create_app

    configure_logging(settings.log_level)
    reloader = process_reloader(settings)
    return create_app(settings, readiness=reloader.ready)


def prepare_metrics_dir() -> str:
    """A clean directory for prometheus_client's multiprocess mode, shared by workers.

    Stale files of an earlier run would add old counts, so they are removed. Called
    in the gunicorn master before any worker creates a metric.
    """
    from prometheus_client import values

    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        directory = tempfile.mkdtemp(prefix="pod-replace-guard-metrics-")
        os.environ[MULTIPROC_ENV] = directory
    # prometheus_client chooses its value storage when first imported; choose again
    # now that the directory is set, whatever imported it earlier.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The committed gunicorn configuration, derived from the settings.

    - a threaded worker, not sync: the sync worker closes the connection after every
      request, so each admission call would pay a new TLS handshake (measured 3-4x fewer
      requests/s, see docs/benchmarks.md); and gthread's model with the TLS handshake and
      request reading moved into its selector loop (webhook/worker.py), so a client that
      stalls holds no thread.
    - keepalive longer than the API server's idle timeout for webhook connections
      (Go's http.Transport, 90 s): the client closes idle connections first, so a
      request never races a server-side close.
    - graceful_timeout below the Deployment's terminationGracePeriodSeconds (30 s),
      so in-flight reviews finish before the kubelet sends SIGKILL.
    """
    binds = [settings.bind, *([settings.health_bind] if settings.health_bind else [])]
    return {
        "bind": binds,
        # gthread's model with deadlines, bounded connections and memory:
        # webhook/worker.py says why.
        "worker_class": "webhook.worker.GuardedWorker",
        "worker_connections": settings.max_connections,
        # A listening socket per worker (SO_REUSEPORT), so the kernel spreads new
        # connections over the workers. With one shared socket the first worker to wake
        # took a whole burst of the API server's kept-alive connections and kept them:
        # one core did the work of two (docs/benchmarks.md, "Where the time goes").
        "reuse_port": True,
        "workers": settings.workers,
        "threads": settings.threads,
        "keepalive": settings.keepalive,
        "graceful_timeout": settings.graceful_timeout,
        "timeout": 30,
        "certfile": str(settings.cert_file),
        "keyfile": str(settings.key_file),
        "ssl_context": _ssl_context_hook,
        "child_exit": _child_exit,
        "preload_app": False,
        "accesslog": None,
        "logger_class": _AppLogsDecisions,
        "errorlog": "-",
        "logconfig_dict": gunicorn_logconfig(settings.log_level),
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        # gunicorn's heartbeat file: tmpfs, so a read-only root filesystem is fine.
        "worker_tmp_dir": "/dev/shm" if Path("/dev/shm").is_dir() else None,  # noqa: S108
        "proc_name": "pod-replace-guard",
        # No runtime control socket: nothing should reconfigure an admission webhook
        # behind the API server's back, and the root filesystem is read-only.
        "control_socket_disable": True,
        "forwarded_allow_ips": "",
    }


class _AppLogsDecisions(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger without its access log.

    The app logs every admission decision once, with its uid; gunicorn would still
    build an access line for every request (whenever logconfig_dict is set) only to
    drop it, about 4 % of a worker's time in the benchmarks.
    """

    @property
    def access_log_enabled(self) -> bool:
        return False


def _ssl_context_hook(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    # The worker loaded the app (and so the reloader) before accepting connections.
    assert _reloader is not None, "the app is loaded before connections are accepted"
    return _reloader.context()


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def run_gunicorn(settings: Settings) -> None:
    """Run gunicorn in this process with :func:`gunicorn_options`."""
    from gunicorn.app.base import BaseApplication

    options = gunicorn_options(settings)
    settings_ = settings

    class WebhookApplication(BaseApplication):  # type: ignore[misc]
        # Read by the worker (webhook/worker.py) for its deadlines and budgets.
        settings = settings_

        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            return worker_app(settings)

    WebhookApplication().run()
