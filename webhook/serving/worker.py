"""The gunicorn worker: gunicorn runs the processes, webhook/serving/loop.py the sockets.

gunicorn's arbiter forks, watches, restarts and signals the workers as for any worker
class (its ``timeout``, ``graceful_timeout``, SIGTERM/SIGQUIT/SIGHUP); this worker class
replaces only what a worker does inside: its selector loop (webhook/serving/loop.py)
accepts, reads, parses (llhttp, webhook/serving/protocol.py) and writes every
connection, and runs the Flask app, itself for small reviews or on a thread pool.

gunicorn's own threaded worker hands a connection to a pool thread that reads the
request with no deadline: a client that trickles, or never finishes, holds that thread.
Here no thread ever waits on a client (docs/design.md, "Serving").

Shutdown (SIGTERM, after the pod's preStop delay): readiness fails at once (``draining``,
which /readyz reports), new connections are still accepted and every response carries
``Connection: close``, so each pooled connection of the API server is closed by the API
server after its next answer; idle connections are left for the API server to close (a
server-side close races a request it may be writing) until ``graceful_timeout``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Final

from gunicorn.workers import base

from webhook.serving.admission import AcceptDeferral
from webhook.serving.limits import Limits
from webhook.serving.loop import Loop
from webhook.settings import Settings, port_of

# How often the loop checks that the master is still there (gunicorn: every turn).
PARENT_CHECK_SECONDS: Final = 0.2


class GuardedWorker(base.Worker):  # type: ignore[misc]
    """A gunicorn worker whose selector loop does all client I/O."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What webhook.gunicorn_app.WebhookApplication carries: the Settings, a TLS
        # context per connection and a draining flag that /readyz reports. Another
        # gunicorn application gets the defaults, gunicorn's TLS context and its own flag.
        carried: Settings | None = getattr(self.app, "settings", None)
        self.draining: threading.Event = getattr(self.app, "draining", None) or threading.Event()
        self.settings = carried or Settings()
        self.tls_port = int(port_of(carried.bind)) if carried else None
        self._notified = 0.0
        self._parent_checked = 0.0

    def run(self) -> None:
        cfg = self.cfg
        settings = self.settings
        limits = Limits(
            handshake_timeout=settings.handshake_timeout,
            request_timeout=settings.request_timeout,
            keepalive=float(cfg.keepalive),
            graceful_timeout=float(cfg.graceful_timeout),
            max_body=settings.max_body_bytes,
            inflight_bytes=settings.inflight_bytes,
            max_connections=int(cfg.worker_connections),
            threads=max(1, int(cfg.threads)),
        )
        tls_context = None
        if cfg.is_ssl:
            tls_context = getattr(self.app, "tls_context", None) or self._gunicorn_context
        deferral = AcceptDeferral(getattr(self.app, "connection_tally", None), self.pid, self.age)
        Loop(
            self,
            self.wsgi,
            list(self.sockets),
            limits,
            tls_context,
            self.tls_port,
            deferral,
            self.log,
        ).run()

    def _gunicorn_context(self) -> Any:
        from gunicorn import sock

        return sock.ssl_context(self.cfg)

    def heartbeat(self) -> None:
        """gunicorn's liveness signal (a utime of its temporary file) at most once a
        second rather than on every turn of the loop; the master waits 30 s."""
        now = time.monotonic()
        if now - self._notified >= 1.0:
            self._notified = now
            self.notify()

    def parent_alive(self) -> bool:
        """Whether the master lives, checked at most every PARENT_CHECK_SECONDS."""
        now = time.monotonic()
        if now - self._parent_checked < PARENT_CHECK_SECONDS:
            return True
        self._parent_checked = now
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            return False
        return True

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.draining.set()
        super().handle_exit(sig, frame)
