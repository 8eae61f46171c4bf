"""The selector loop: every socket operation of a worker, and nothing that waits.

One thread owns every client socket: it accepts (accepting.py, admission.py), does the
TLS handshake (handshake.py), feeds each byte read once into the connection's parser
(protocol.py), answers small admission requests itself (wsgi.py) and sends every
response without blocking. Pool threads (pool.py) only run the app for the rest and
hand the response's bytes back. Per turn a connection gets at most READS_PER_WAKE
reads and one request answered. Deadlines: the handshake, a request (408 once it has
started), the response's sending, keep-alive idleness; a request whose reading waits
for the buffer budget (twice ``inflight_bytes``, beyond each request's first
SMALL_REQUEST_BYTES) gets the wait back once, up to its own hard deadline (twice
``request_timeout`` from its start). docs/design.md ("Serving") says why.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from webhook.serving import handshake
from webhook.serving.accepting import Acceptor
from webhook.serving.admission import HEALTH_CONNECTIONS, AcceptDeferral, Admission
from webhook.serving.connection import TIMED, Connection, Phase
from webhook.serving.limits import Host, Limits
from webhook.serving.pool import AppPool
from webhook.serving.protocol import CONTINUE, Request, refusal_bytes
from webhook.serving.wsgi import WsgiApp, respond

RECV_BYTES: Final = 256 * 1024
READS_PER_WAKE: Final = 16
SMALL_REQUEST_BYTES: Final = 64 * 1024
# Admission requests up to this size are answered by the loop thread: handing one to a
# thread and back costs two wake-ups and a GIL hand-over (docs/benchmarks.md).
ANSWER_IN_LOOP_BYTES: Final = 256 * 1024
# How long a closing connection waits for the client's FIN (discarding what it sends).
CLOSE_LINGER_SECONDS: Final = 1.0


class Loop:
    def __init__(
        self,
        host: Host,
        app: WsgiApp,
        listeners: list[socket.socket],
        limits: Limits,
        tls_context: Callable[[], ssl.SSLContext] | None,
        tls_port: int | None,
        deferral: AcceptDeferral,
        log: Any,
    ) -> None:
        self.host = host
        self.app = app
        self.listeners = listeners
        self.limits = limits
        self.tls_context = tls_context
        self.tls_port = tls_port
        self.deferral = deferral
        self.log = log
        self.refusals = handshake.RefusalLog(log)
        self.poller = selectors.DefaultSelector()
        self.connections: set[Connection] = set()
        self.admission = Admission(limits.max_connections)
        # The health listener's own connections: probes get in whatever holds the
        # admission port, and a flood of the health port takes none of its slots.
        self.health_admission = Admission(HEALTH_CONNECTIONS)
        self.ready: deque[Connection] = deque()  # to advance on the next turn
        self.paused: set[Connection] = set()
        self.buffered = 0  # request bytes held by the parsers
        self.closing = 0  # connections in Phase.CLOSING
        self.budget_freed = False
        self.pool = AppPool(
            limits.threads, limits.inflight_bytes, self._respond, self._delivered, log
        )
        self.acceptor = Acceptor(self)

    # -- running ------------------------------------------------------------------------
    def run(self) -> None:
        self.poller.register(self.pool.wake_r, selectors.EVENT_READ, self.pool.on_wake)
        for listener in self.listeners:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, self.acceptor.accept)
        timeout = 0.0
        while self.host.alive:
            self.host.heartbeat()
            timeout = self._turn(timeout)
            if not self.host.parent_alive():
                break
        # Draining: still accepting and answering (with Connection: close) until every
        # connection is gone or graceful_timeout ends; idle ones are left to the client.
        ends = time.monotonic() + self.limits.graceful_timeout
        for conn in self.connections:
            if conn.phase is Phase.IDLE:
                conn.deadline = max(conn.deadline, ends)
        while self.connections and time.monotonic() < ends:
            self.host.heartbeat()
            timeout = self._turn(min(timeout, max(0.0, ends - time.monotonic())))
        for conn in list(self.connections):
            self.close(conn)
        self.pool.close()
        self.poller.close()
        for listener in self.listeners:
            listener.close()

    def _turn(self, timeout: float) -> float:
        """One turn; returns how long the next may wait."""
        for key, _events in self.poller.select(timeout):
            if isinstance(key.data, Connection):
                self.advance(key.data)
            else:
                key.data(key.fileobj)
        if self.tls_context is not None:
            # Reloads changed certificate files at most once per PRG_CERT_RELOAD_SECONDS
            # (a stat): an idle worker too keeps its expiry metric current.
            self.tls_context()
        ready, self.ready = self.ready, deque()
        for conn in ready:
            if conn in self.connections and conn.phase in (Phase.READING, Phase.IDLE):
                self.advance(conn)
        now = time.monotonic()
        nearest = now + 1.0
        for conn in list(self.connections):
            if conn.phase in TIMED:
                # A paused request waits on the worker, not the client: its own hard
                # deadline applies meanwhile (set when the request started).
                deadline = conn.hard_deadline if conn.paused_at else conn.deadline
                if deadline <= now:
                    self._expired(conn)
                elif deadline < nearest:
                    nearest = deadline
        if self.budget_freed:
            self._resume_paused()  # read on the next turn, which then does not wait
        resume_at = self.acceptor.paused_until
        if resume_at:
            if now >= resume_at:
                self.acceptor.listen(True)
            else:
                nearest = min(nearest, resume_at)
        return 0.0 if self.ready else max(0.0, nearest - now)

    @property
    def held(self) -> int:
        """Connections that can still carry a request: what the workers balance."""
        return len(self.connections) - self.closing

    # -- the connection state machine --------------------------------------------------
    def watch(self, conn: Connection, events: int) -> None:
        if conn.events == events:
            return
        try:
            if conn.events and events:
                self.poller.modify(conn.sock, events, conn)
            elif events:
                self.poller.register(conn.sock, events, conn)
            else:
                self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            conn.events = 0
            self.close(conn)
            return
        conn.events = events

    def advance(self, conn: Connection) -> None:
        try:
            if conn.phase is Phase.HANDSHAKE:
                assert isinstance(conn.sock, ssl.SSLSocket)
                waits = handshake.step(conn.sock)
                if waits:
                    self.watch(conn, waits)
                    return
                self._request_starts(conn, time.monotonic())
            if conn.phase is Phase.WRITING:
                self._write(conn)
            elif conn.phase in (Phase.READING, Phase.IDLE):
                self._read(conn)
            elif conn.phase is Phase.CLOSING:
                self._discard(conn)
        except ssl.SSLError as error:
            if conn.phase is Phase.HANDSHAKE and not isinstance(error, ssl.SSLEOFError):
                self.refusals.refused(conn.client, error)
            self.close(conn)
        except (OSError, ValueError):
            self.close(conn)

    def _read(self, conn: Connection) -> None:
        protocol = conn.protocol
        for _ in range(READS_PER_WAKE):
            if protocol.requests or protocol.refusal or protocol.ended:
                break  # answered first; nothing more is read meanwhile
            if self._over_budget(conn):
                self.paused.add(conn)  # read again once there is budget
                conn.paused_at = time.monotonic()
                self.watch(conn, 0)
                return
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            except ssl.SSLWantWriteError:
                self.watch(conn, selectors.EVENT_WRITE)
                return
            if not data:
                self._peer_closed(conn)
                return
            if conn.phase is Phase.IDLE:
                self._request_starts(conn, time.monotonic())
            protocol.feed(data)
            self._account(conn)
            if len(data) < RECV_BYTES and not (conn.tls and conn.sock.pending()):  # type: ignore[attr-defined]
                break
        else:
            self.ready.append(conn)  # stopped by the bound: more may be waiting
        self._after_input(conn)

    def _request_starts(self, conn: Connection, now: float) -> None:
        """A request is awaited: ``request_timeout`` of the client's time, and a hard
        deadline of twice that, whatever the worker makes it wait for budget."""
        conn.phase = Phase.READING
        conn.request_started = now
        conn.deadline = now + self.limits.request_timeout
        conn.hard_deadline = now + 2 * self.limits.request_timeout

    def _after_input(self, conn: Connection) -> None:
        protocol = conn.protocol
        if protocol.requests:
            self._answer(conn)
        elif protocol.refusal:
            self._send(conn, refusal_bytes(protocol.refusal), keep=False)
        elif protocol.ended:
            self._linger(conn)
        else:
            if protocol.wants_continue:
                protocol.continue_sent = True
                # Nothing else is in flight on the connection: 25 bytes fit its buffer.
                with contextlib.suppress(OSError, ssl.SSLError):
                    conn.sock.send(CONTINUE)
            self.watch(conn, selectors.EVENT_READ)

    def _account(self, conn: Connection) -> None:
        held = conn.protocol.held_bytes
        if held < conn.held:
            self.budget_freed = True
        self.buffered += held - conn.held
        conn.held = held

    def _over_budget(self, conn: Connection) -> bool:
        """Whether ``conn`` must wait before buffering more of its (large) request."""
        if conn.protocol.receiving < SMALL_REQUEST_BYTES:
            return False
        if self.buffered + self.pool.waiting < 2 * self.limits.inflight_bytes:
            return False
        if self.pool.queued or self.pool.busy:
            return True  # those free budget when answered
        furthest = max(
            (c for c in self.connections if c.phase is Phase.READING),
            key=lambda c: c.protocol.receiving,
        )
        return furthest is not conn

    def _resume_paused(self) -> None:
        """Called once a turn after budget was freed, never from within a read."""
        self.budget_freed = False
        now = time.monotonic()
        for conn in list(self.paused):
            self.paused.discard(conn)
            # The wait was the worker's: given back once, up to the hard deadline.
            waited, conn.paused_at = now - conn.paused_at, 0.0
            conn.deadline = min(conn.deadline + waited, conn.hard_deadline)
            if conn in self.connections:
                self.watch(conn, selectors.EVENT_READ)
                self.ready.append(conn)

    # -- answering ------------------------------------------------------------------------
    def _answer(self, conn: Connection) -> None:
        request = conn.protocol.pop()
        self._account(conn)
        if conn.tls and len(request.body) <= ANSWER_IN_LOOP_BYTES:
            conn.phase = Phase.BUSY
            data, keep = self._respond(conn, request)
            self._send(conn, data, keep)
            return
        self.watch(conn, 0)
        if conn in self.connections:
            self.pool.submit(conn, request)

    def _respond(self, conn: Connection, request: Request) -> tuple[bytes, bool]:
        return respond(
            self.app,
            request,
            server=conn.server,
            client=conn.client,
            tls=conn.tls,
            closing=not self.host.alive,
        )

    def _delivered(self, conn: Connection, response: tuple[bytes, bool]) -> None:
        """A pool thread answered ``conn`` (called in the loop)."""
        self.budget_freed = True
        if conn in self.connections:
            self._send(conn, *response)

    def _send(self, conn: Connection, data: bytes, keep: bool) -> None:
        conn.outgoing = bytearray(data)
        conn.close_after_write = not keep
        conn.phase = Phase.WRITING
        conn.deadline = time.monotonic() + self.limits.request_timeout
        self._write(conn)

    def _write(self, conn: Connection) -> None:
        outgoing = conn.outgoing
        while outgoing:
            try:
                sent = conn.sock.send(outgoing[:RECV_BYTES])
            except (ssl.SSLWantWriteError, BlockingIOError):
                self.watch(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self.watch(conn, selectors.EVENT_READ)
                return
            except (OSError, ValueError):
                self.close(conn)
                return
            del outgoing[:sent]
        self._written(conn)

    def _written(self, conn: Connection) -> None:
        """A response is sent: close, or go on with the next request."""
        protocol = conn.protocol
        if conn.close_after_write or (protocol.ended and not protocol.requests):
            self._linger(conn)
            return
        now = time.monotonic()
        conn.served += 1
        conn.last_used = now
        if protocol.requests or protocol.refusal or protocol.started:
            # Pipelined, already read: answered on the next turn, after the others.
            self._request_starts(conn, now)
            self.ready.append(conn)
        else:
            conn.phase = Phase.IDLE
            conn.deadline = now + self.limits.keepalive
            if not self.host.alive:
                conn.deadline = max(conn.deadline, now + self.limits.graceful_timeout)
            if conn.tls and conn.sock.pending():  # type: ignore[attr-defined]
                self.ready.append(conn)
        self.watch(conn, selectors.EVENT_READ)

    # -- deadlines and closing --------------------------------------------------------------
    def _expired(self, conn: Connection) -> None:
        if conn.phase is Phase.READING and (conn.protocol.started or conn.protocol.requests):
            with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                conn.sock.send(refusal_bytes(408))
        self.close(conn)

    def _peer_closed(self, conn: Connection) -> None:
        """The client closed. After a TLS close_notify (the API server sends one after
        90 s idle) its FIN follows: wait for it, so the TIME_WAIT is the client's."""
        if conn.tls and conn.phase is not Phase.CLOSING:
            self._enter_closing(conn, 0)
        else:
            self.close(conn)

    def _linger(self, conn: Connection) -> None:
        """Close after a last response: half-close, then discard what the client still
        sends until its FIN (closing at once with unread bytes would send a reset, which
        can destroy the response before the client reads it)."""
        with contextlib.suppress(OSError, ValueError):
            conn.sock.shutdown(socket.SHUT_WR)
        self._enter_closing(conn, selectors.EVENT_READ)

    def _enter_closing(self, conn: Connection, events: int) -> None:
        if conn.phase is not Phase.CLOSING:
            self.closing += 1
            conn.phase = Phase.CLOSING
            self.deferral.publish(self.held)
        conn.deadline = time.monotonic() + CLOSE_LINGER_SECONDS
        self.watch(conn, events)

    def _discard(self, conn: Connection) -> None:
        for _ in range(READS_PER_WAKE):
            try:
                if not conn.sock.recv(RECV_BYTES):
                    self.close(conn)
                    return
            except (ssl.SSLWantReadError, BlockingIOError):
                return

    def close(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        (self.health_admission if conn.health else self.admission).remove(conn.address)
        if conn.phase is Phase.CLOSING:
            self.closing -= 1
        self.paused.discard(conn)
        conn.paused_at = 0.0
        if conn.phase is Phase.QUEUED:
            self.pool.cancel(conn)
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            conn.events = 0
        self.buffered -= conn.held
        conn.held = 0
        conn.outgoing = bytearray()
        self.budget_freed = True
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.deferral.publish(self.held)
