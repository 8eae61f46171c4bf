"""Taking new connections: within the caps (webhook/serving/admission.py), spread
over the workers (webhook/balance.py), wrapped in TLS on the admission listener."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Final

from webhook.serving import handshake
from webhook.serving.admission import ACCEPT_PAUSE_SECONDS, shed_candidate
from webhook.serving.connection import Connection

if TYPE_CHECKING:
    from webhook.serving.loop import Loop

ACCEPTS_PER_WAKE: Final = 64  # a burst of connections is taken in one go


class Acceptor:
    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.paused_until = 0.0  # the listeners are not watched until then

    def accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            if self.loop.deferral.leave_to_others(self.loop.held):
                self.listen(False)
                return
            try:
                sock, client = listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    victim = shed_candidate(self.loop.connections)  # make room for next time
                    if victim is not None:
                        self.loop.close(victim)
                return
            self.loop.deferral.taken()
            address = client[0] if isinstance(client, tuple) else "local"
            health = self._is_health(listener)
            admission = self.loop.health_admission if health else self.loop.admission
            admit, victim = admission.make_room(
                address, (c for c in self.loop.connections if c.health is health)
            )
            if victim is not None:
                self.loop.close(victim)
            if not admit:
                sock.close()  # every connection of this address is being answered
                continue
            self._open(sock, client, listener, health)

    def _is_health(self, listener: socket.socket) -> bool:
        """Whether ``listener`` is the health listener: the plain one beside the
        admission port (without a known admission port, none is)."""
        if self.loop.tls_port is None:
            return False
        name = listener.getsockname()
        return isinstance(name, tuple) and int(name[1]) != self.loop.tls_port

    def listen(self, on: bool) -> None:
        """Watch the listeners again, or leave new connections to the other workers
        for ACCEPT_PAUSE_SECONDS (webhook/balance.py)."""
        for listener in self.loop.listeners:
            with contextlib.suppress(KeyError, ValueError, OSError):
                if on:
                    self.loop.poller.register(listener, selectors.EVENT_READ, self.accept)
                else:
                    self.loop.poller.unregister(listener)
        self.paused_until = 0.0 if on else time.monotonic() + ACCEPT_PAUSE_SECONDS

    def _open(
        self, sock: socket.socket, client: Any, listener: socket.socket, health: bool
    ) -> None:
        name = listener.getsockname()
        server = (str(name[0]), str(name[1])) if isinstance(name, tuple) else (str(name), "")
        tls = self.loop.tls_context is not None and (
            self.loop.tls_port is None or server[1] == str(self.loop.tls_port)
        )
        peer = (str(client[0]), int(client[1])) if isinstance(client, tuple) else ("local", 0)
        sock.setblocking(False)
        if tls:
            assert self.loop.tls_context is not None
            try:
                sock = handshake.wrap(sock, self.loop.tls_context)
            except (OSError, ssl.SSLError, ValueError):
                sock.close()
                return
        now = time.monotonic()
        conn = Connection(sock, peer, server, tls, self.loop.limits.max_body, now)
        conn.health = health
        limits = self.loop.limits
        conn.deadline = now + (limits.handshake_timeout if tls else limits.request_timeout)
        conn.hard_deadline = conn.deadline + limits.request_timeout
        self.loop.connections.add(conn)
        (self.loop.health_admission if health else self.loop.admission).add(conn.address)
        self.loop.deferral.publish(self.loop.held)
        self.loop.advance(conn)
