"""TLS for the loop: wrapping a new connection, the non-blocking handshake, and a
bounded log of refused handshakes."""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

# Refused handshakes logged per 10 s per worker: a flood cannot flood the log.
LOGGED_REFUSALS: Final = 10


def wrap(sock: socket.socket, context: Callable[[], ssl.SSLContext]) -> ssl.SSLSocket:
    """The server side of TLS on ``sock``; the handshake is left to :func:`step`."""
    return context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def step(sock: ssl.SSLSocket) -> int:
    """Advance the handshake: 0 when done, else the selector event it waits for."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    return 0


class RefusalLog:
    """A refused handshake (no or a wrong client certificate, an old protocol), at most
    LOGGED_REFUSALS per 10 s."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._window = 0.0
        self._count = 0

    def refused(self, client: object, error: ssl.SSLError) -> None:
        now = time.monotonic()
        if now - self._window >= 10:
            if self._count > LOGGED_REFUSALS:
                self.log.warning("%d more TLS handshakes refused", self._count - LOGGED_REFUSALS)
            self._window, self._count = now, 0
        self._count += 1
        if self._count <= LOGGED_REFUSALS:
            reason = getattr(error, "reason", None) or str(error)
            self.log.warning("TLS handshake refused from %s: %s", client, reason)
