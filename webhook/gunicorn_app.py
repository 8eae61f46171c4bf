"""gunicorn: the committed configuration and the application object workers load.

Nothing here imports prometheus_client at module level: the CLI sets up the metrics
directory (:func:`prepare_metrics_dir`) first, and prometheus_client decides between
in-memory and file-backed values when it is first imported.
"""

from __future__ import annotations

import os
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from webhook.balance import ConnectionTally
from webhook.logs import configure_logging, gunicorn_logconfig
from webhook.settings import MULTIPROC_ENV, Settings

if TYPE_CHECKING:
    from flask import Flask

    from webhook.tls import CertificateReloader

Readiness = Callable[[], tuple[bool, str]]
AppFactory = Callable[[Settings, Readiness], "Flask"]


def prepare_metrics_dir() -> str:
    """A clean directory for prometheus_client's multiprocess mode, shared by workers.

    Stale files of an earlier run would add old counts, so they are removed. Called in
    the gunicorn master before any worker, and anything else, creates a metric.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory and "prometheus_client" in sys.modules:
        # Its values were already chosen in memory: each worker would count alone.
        raise RuntimeError("prometheus_client was imported before the metrics directory was set up")
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        directory = tempfile.mkdtemp(prefix="pod-replace-guard-metrics-")
        os.environ[MULTIPROC_ENV] = directory
    return directory


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """The committed gunicorn configuration, derived from the settings.

    - a threaded worker, not sync: the sync worker closes the connection after every
      request, so each admission call would pay a new TLS handshake (measured 3-4x fewer
      requests/s, see docs/benchmarks.md); the worker's selector loop does every socket
      operation (webhook/serving/), so a client that stalls holds no thread, and a pool
      of ``threads`` runs the app for large reviews and the health listener.
    - keepalive longer than the API server's idle timeout for webhook connections
      (Go's http.Transport, 90 s): the client closes idle connections first, so a
      request never races a server-side close.
    - graceful_timeout below the Deployment's terminationGracePeriodSeconds (30 s),
      so in-flight reviews finish before the kubelet sends SIGKILL.
    - certfile/keyfile only switch gunicorn's TLS on; the worker takes every
      connection's context from this worker's CertificateReloader.
    """
    binds = [settings.bind, *([settings.health_bind] if settings.health_bind else [])]
    return {
        "bind": binds,
        # One loop per worker for all client I/O, with deadlines, bounded connections
        # and memory: webhook/serving/ says why.
        "worker_class": "webhook.serving.worker.GuardedWorker",
        "worker_connections": settings.max_connections,
        # One listening socket shared by the workers, not one each (reuse_port): with
        # SO_REUSEPORT a connection the kernel queues for a worker that then dies is
        # reset, so a crashed worker cost its clients a second failure on reconnect
        # (tests/reliability/test_load.py, docs/benchmarks.md "Tried and not kept").
        "reuse_port": False,
        "workers": settings.workers,
        "threads": settings.threads,
        "keepalive": settings.keepalive,
        "graceful_timeout": settings.graceful_timeout,
        "timeout": 30,
        "certfile": str(settings.cert_file),
        "keyfile": str(settings.key_file),
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


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
    tally = getattr(server.app, "connection_tally", None)
    if isinstance(tally, ConnectionTally):
        tally.release(worker.pid)


def webhook_app(settings: Settings, readiness: Readiness) -> Flask:
    from webhook.app import create_app

    return create_app(settings, readiness=readiness)


class WebhookApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn's application object, made in the master and copied into each worker.

    :meth:`load` runs in each worker after the fork and gives it its own Flask app and
    certificate reloader. The worker (webhook/serving/) reads ``settings`` for its
    deadlines and budgets, calls :meth:`tls_context` for each new connection, and sets
    ``draining`` on SIGTERM, which :meth:`readiness` reports, and publishes the
    connections it holds in ``connection_tally`` (shared memory made here, before the
    fork) so that the workers share kept-alive connections evenly (webhook/balance.py).
    """

    def __init__(
        self,
        settings: Settings,
        options: dict[str, Any] | None = None,
        app_factory: AppFactory = webhook_app,
    ) -> None:
        self.settings = settings
        self.options = gunicorn_options(settings) if options is None else options
        self.app_factory = app_factory
        self.draining = threading.Event()
        # Room for the workers and their replacements while the old ones drain.
        self.connection_tally = ConnectionTally(2 * settings.workers + 2)
        self._reloader: CertificateReloader | None = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        from webhook.tls import CertificateReloader

        configure_logging(self.settings.log_level)
        self._reloader = CertificateReloader(self.settings)
        return self.app_factory(self.settings, self.readiness)

    def tls_context(self) -> ssl.SSLContext:
        if self._reloader is None:
            raise RuntimeError("no TLS context before the worker has loaded the app")
        return self._reloader.context()

    def readiness(self) -> tuple[bool, str]:
        """Not ready while draining, nor while the certificate served is not valid."""
        if self.draining.is_set():
            return False, "shutting down"
        if self._reloader is None:
            return False, "the serving certificate is not loaded yet"
        return self._reloader.ready()


def run_gunicorn(settings: Settings) -> None:
    """Serve the webhook with gunicorn in this process, with :func:`gunicorn_options`."""
    WebhookApplication(settings).run()
