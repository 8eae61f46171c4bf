"""A gunicorn worker in which a connection holds a thread only while its request runs.

gunicorn's ``gthread`` worker hands a new connection to a pool thread as soon as a byte
arrives; the thread then does the TLS handshake and reads the request head and body
with no deadline. A client that sends one byte and stops (or trickles its headers, or
its body) keeps that thread forever, and a few dozen such clients stop every pod update
in the cluster (with ``failurePolicy: Fail``) and fail the kubelet's probes.

:class:`GuardedWorker` keeps gunicorn's worker model (one selector loop, a thread pool,
the same request parsing and response writing) and moves everything a client controls
the pace of into the selector loop, where waiting costs no thread:

- the TLS handshake, non-blocking, within ``handshake_timeout``;
- the request head and body, read non-blocking into a buffer until complete, within
  ``request_timeout`` from the request's first byte (or from the handshake, for the
  first request of a connection);
- kept-alive connections wait in the loop as before.

A complete request is then answered from the buffer. An admission request of up to
ANSWER_IN_LOOP_BYTES (nearly all of them) is answered by the loop thread itself, and
the answer is sent without blocking (a client that does not read it waits alone, in
``Phase.WRITING``, until its request deadline): handing it to a pool thread and back
cost two thread wake-ups and GIL hand-overs, most of what a small review added to the
API server's latency. Larger bodies, and the plain-HTTP listener's /metrics and
probes, go to the pool as before: the loop goes on reading and answering small
reviews while a thread decodes a large one (they share the GIL, which Python hands
over every 5 ms).

New connections are spread over the workers by how many each holds
(webhook/balance.py): a worker holding more than another leaves a waiting connection
to it for a few milliseconds, so a client's kept-alive connections do not all land on
whichever worker was idle when they were opened.

Connections are bounded per worker (``max_connections``). At the bound a new connection
is still accepted, and another is closed to make room: one of the client address that
holds the most connections, one without a request under way before one being read,
one that has never completed a request before one that has, the least recently used
first. So a flood of idle or
stalled connections sheds itself, and a client with hundreds of connections cannot
lock out the API server or the kubelet, which hold a few.

Memory is bounded per worker: request bytes buffered in the loop are capped at twice
``inflight_bytes`` (the larger requests wait above that, the one furthest along
excepted; each request's first 64 KiB is always read), and bodies are handed to
threads only
while the bodies being decoded add up to at most ``inflight_bytes`` (one request is
always let through, so a maximum-size review is still answered). A decoded review
costs about nine times its size in Python objects.

Listeners: the admission listener speaks TLS; an optional health listener (the
kubelet's probes and the metrics scraper) speaks plain HTTP and serves no admission
requests (webhook/app.py refuses /validate there).

Shutdown (SIGTERM, after the pod's preStop delay): readiness fails at once, new
connections are still accepted and every response carries ``Connection: close``, so
each pooled connection of the API server is closed by the API server after its next
answer; idle connections are left for the API server to close (a server-side close
races a request the API server may be writing on it) until ``graceful_timeout``.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import threading
import time
from collections import Counter, deque
from enum import Enum
from typing import Any, Final

from gunicorn import http, util
from gunicorn import sock as gunicorn_sock
from gunicorn.workers.gthread import TConn, ThreadWorker

from webhook.balance import ConnectionTally
from webhook.settings import Settings, port_of

# Longest request head (request line and headers) read into the buffer. The API
# server's are a few hundred bytes; gunicorn's own limits apply when it parses.
MAX_HEAD_BYTES: Final = 64 * 1024
RECV_BYTES: Final = 256 * 1024
# Reads per readiness event, until the socket has nothing more: the API server writes
# a review in several TLS records, and taking those already arrived in one go saves a
# trip round the loop each; the bound keeps one fast sender from holding the loop.
READS_PER_WAKE: Final = 16
# How often the loop checks that the master is still there (gunicorn: every turn).
PARENT_CHECK_SECONDS: Final = 0.2
# Requests up to this size are read whatever the buffer budget (webhook reviews are
# mostly 10-50 KiB); only larger ones wait for budget.
SMALL_REQUEST_BYTES: Final = 64 * 1024
BAD_REQUEST: Final = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
HEADERS_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Connection: close\r\nContent-Length: 0\r\n\r\n"
)

# Complete requests up to this size are answered by the loop thread itself; larger ones
# (and plain-HTTP requests: /metrics, the probes) go to a pool thread. Handing a request
# to a thread and back costs two thread wake-ups and a GIL hand-over per request, which
# on a busy node is most of the latency a small review adds (docs/benchmarks.md).
ANSWER_IN_LOOP_BYTES: Final = 256 * 1024
# A worker holding more connections than another leaves a waiting connection to it
# (webhook/balance.py): it stops watching the listeners for ACCEPT_PAUSE_SECONDS at a
# time, and takes the connection itself once it has waited ACCEPT_DEFER_SECONDS (the
# other worker may be busy, stopped or gone).
ACCEPT_PAUSE_SECONDS: Final = 0.002
ACCEPT_DEFER_SECONDS: Final = 0.02
LOGGED_REFUSALS: Final = 10
# How long a connection whose client sent its close_notify waits for the client's FIN.
CLOSE_LINGER_SECONDS: Final = 1.0


class Phase(Enum):
    HANDSHAKE = "handshake"  # TLS handshake in progress
    READING = "reading"  # waiting for (the rest of) a request
    QUEUED = "queued"  # complete, waiting for a thread (memory budget)
    BUSY = "busy"  # a thread is answering it
    WRITING = "writing"  # answered in the loop; the response is still being sent
    IDLE = "idle"  # kept alive between requests
    CLOSING = "closing"  # the client sent its TLS close_notify; waiting for its FIN


class RequestFraming:
    """Where a buffered HTTP/1.1 request ends, without parsing it for real.

    ``complete`` is True once the head and the whole body are buffered, or once the
    request is known to be refused anyway (a body over the limit, framing gunicorn's
    parser will reject): the thread's parser and the app then answer it, from the
    buffer, and the connection is closed after (``must_close``).
    """

    __slots__ = ("body_bytes", "complete", "end", "expects_continue", "must_close")

    def __init__(self) -> None:
        self.complete = False
        self.must_close = False
        self.body_bytes = 0
        self.expects_continue = False
        # Where the request ends in the buffer, when its Content-Length says (what
        # follows is the next, pipelined request); None: the parser finds the end.
        self.end: int | None = None


def request_framing(buffer: bytes | bytearray, max_body: int) -> RequestFraming | None:
    """The framing of the request at the start of ``buffer``; None: head incomplete."""
    framing = RequestFraming()
    limit = MAX_HEAD_BYTES + 4
    # The blank line that ends the head; gunicorn also accepts bare LF line endings. A
    # bare one only counts before the first CRLF one: searching the whole buffer for it
    # scanned every body (a tenth of a small review's CPU).
    crlf_end = buffer.find(b"\r\n\r\n", 0, limit)
    lf_end = buffer.find(b"\n\n", 0, crlf_end + 2 if crlf_end >= 0 else limit)
    if lf_end >= 0 and (crlf_end < 0 or lf_end < crlf_end):
        head_end, width = lf_end, 2
    elif crlf_end >= 0:
        head_end, width = crlf_end, 4
    else:
        return None
    body_start = head_end + width
    length: int | None = None
    chunked = False
    for line in bytes(buffer[:head_end]).split(b"\n")[1:]:
        name, _, value = line.rstrip(b"\r").partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            text = value.strip()
            if not text.isdigit() or (length is not None and int(text) != length):
                framing.complete = framing.must_close = True  # the parser refuses it
                return framing
            length = int(text)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"expect":
            framing.expects_continue = value.strip().lower() == b"100-continue"
    if chunked:
        return _chunked_framing(buffer, body_start, max_body, framing)
    length = length or 0
    framing.body_bytes = length
    if length > max_body:
        # Refused from Content-Length alone (413); the body is never read.
        framing.complete = framing.must_close = True
        framing.body_bytes = 0
        return framing
    framing.complete = len(buffer) >= body_start + length
    framing.end = body_start + length
    return framing


def _chunked_framing(
    buffer: bytes | bytearray, position: int, max_body: int, framing: RequestFraming
) -> RequestFraming:
    """Complete once the last chunk and the trailers are in, or once more than
    ``max_body`` bytes of data are: the app reads that far and answers 413."""
    available_total = 0
    while True:
        line_end = buffer.find(b"\n", position)
        if line_end < 0:
            framing.body_bytes = available_total
            if len(buffer) - position > 1024:  # a chunk-size line this long is broken
                framing.complete = framing.must_close = True
            return framing
        size_text = bytes(buffer[position:line_end]).rstrip(b"\r").split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            framing.complete = framing.must_close = True  # the parser answers 400
            return framing
        data_start = line_end + 1
        if size == 0:
            # Optional trailers, then an empty line.
            rest = buffer[data_start:]
            framing.complete = rest.startswith((b"\r\n", b"\n")) or (
                b"\r\n\r\n" in rest or b"\n\n" in rest
            )
            framing.body_bytes = available_total
            return framing
        available = min(size, len(buffer) - data_start)
        available_total += available
        if available_total > max_body:
            framing.complete = framing.must_close = True
            framing.body_bytes = available_total
            return framing
        if available < size:
            framing.body_bytes = available_total
            return framing
        position = data_start + size
        # The CRLF after the chunk's data.
        if len(buffer) < position + 2:
            framing.body_bytes = available_total
            return framing
        position += 2 if buffer[position : position + 1] == b"\r" else 1


def drain_buffered_body(parser: Any) -> bool:
    """gunicorn's ``Parser.finish_body`` for a request the loop has read whole: the
    rest of its body comes from the parser's buffer, so the socket's timeout is not
    saved and restored around it (gunicorn does, an ioctl each way, and again when the
    next request is parsed). The drained message is then let go, so parsing the next
    request has nothing left to drain. False: the connection must close, as gunicorn's.
    """
    message = parser.mesg
    if not message:
        return True
    body = getattr(message, "body", None)
    if body is None:
        return bool(parser.finish_body())
    if getattr(body, "failed", False) is True:
        return False
    try:
        while body.read(8192):
            pass
    except ssl.SSLWantReadError:
        pass  # nothing more arrived: gunicorn's answer too
    except (TimeoutError, OSError):
        return False
    parser.mesg = None
    return True


class GuardedConnection(TConn):  # type: ignore[misc]
    """A client connection and where it is: phase, buffer and deadline."""

    def __init__(
        self, cfg: Any, sock: socket.socket, client: Any, server: Any, tls: bool, now: float
    ) -> None:
        super().__init__(cfg, sock, client, server)
        # TConn.init() would wrap the socket in TLS and block in the handshake; the
        # loop does both itself.
        self.initialized = True
        self.address = client[0] if isinstance(client, tuple) else str(client)
        self.tls = tls
        self.phase = Phase.HANDSHAKE if tls else Phase.READING
        self.buffer = bytearray()
        self.deadline = now
        self.last_used = now
        self.served = 0
        self.body_bytes = 0
        self.must_close = False
        self.continue_sent = False
        self.events = 0  # selector events registered for it
        # A response written by the loop thread, not yet sent (Phase.WRITING).
        self.outgoing = bytearray()
        self.keep_after_write = False
        self.request_end: int | None = None


class ResponseBuffer:
    """The socket gunicorn writes a response to when the loop thread answers: it keeps
    the bytes, which the loop then sends without blocking (a client that does not read
    its responses must not stop the loop)."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data: bytes) -> None:
        self.data += data

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def gettimeout(self) -> float:
        """Non-blocking, as far as gunicorn's error writer asks (it never waits)."""
        return 0.0

    def close(self) -> None:
        """Closing is the loop's business (it still holds the real socket)."""


class GuardedWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's threaded worker with deadlines, bounded connections and memory."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What webhook.gunicorn_app.WebhookApplication carries: the Settings, a TLS
        # context per connection and a draining flag that /readyz reports. Another
        # gunicorn application gets the defaults, gunicorn's TLS context and its own flag.
        carried: Settings | None = getattr(self.app, "settings", None)
        self.draining: threading.Event = getattr(self.app, "draining", None) or threading.Event()
        settings = carried or Settings()
        self.handshake_timeout = settings.handshake_timeout
        self.request_timeout = settings.request_timeout
        self.max_body = settings.max_body_bytes
        self.inflight_budget = settings.inflight_bytes
        self.max_connections = int(self.cfg.worker_connections)
        self.tls_port = int(port_of(carried.bind)) if carried else None
        self.connections: set[GuardedConnection] = set()
        self.per_address: Counter[str] = Counter()
        self.queued: deque[GuardedConnection] = deque()
        self.buffered_bytes = 0
        self.decoding_bytes = 0
        self.busy_threads = 0
        self.paused: set[GuardedConnection] = set()
        self._dispatching = False
        # Connections to read again on the next turn of the loop (_request_done).
        self.ready: deque[GuardedConnection] = deque()
        self.tally: ConnectionTally | None = getattr(self.app, "connection_tally", None)
        self._tally_index = -1
        self._closing = 0  # connections in Phase.CLOSING
        self._notified = 0.0
        self._parent_checked = 0.0
        self._paused_listeners: list[socket.socket] = []
        self._listeners_resume_at = 0.0
        self._defer_started = 0.0
        self._defer_seen = 0.0
        self._refusal_window = 0.0
        self._refusals = 0

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        self.poller.register(
            self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks
        )
        for listener in self.sockets:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, self._accept)
        self._accepting = True
        if self.tally is not None:
            self._tally_index = self.tally.claim(self.pid, self.age)
        while self.alive:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=self._wait_seconds())
            if not self._parent_alive():
                break
            self._advance_ready()
            self._expire(time.monotonic())
            self._resume_paused()
            self._resume_listeners()

        # Draining: keep accepting and answering (with Connection: close) until every
        # connection is gone or the graceful timeout ends.
        self.draining.set()
        ends = time.monotonic() + self.cfg.graceful_timeout
        for conn in list(self.connections):
            if conn.phase is Phase.IDLE:
                conn.deadline = max(conn.deadline, ends)
        while self.connections and time.monotonic() < ends:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=self._wait_seconds())
            self._advance_ready()
            self._expire(time.monotonic())
            self._resume_paused()
            self._resume_listeners()
        for conn in list(self.connections):
            self._close(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def notify(self) -> None:
        """gunicorn's liveness signal (a utime of its temporary file) at most once a
        second rather than on every turn of the loop; the master waits 30 s."""
        now = time.monotonic()
        if now - self._notified >= 1.0:
            self._notified = now
            super().notify()

    def _parent_alive(self) -> bool:
        """gunicorn's check that the master lives (a getppid() call) at most every
        PARENT_CHECK_SECONDS rather than on every turn of the loop, which is a turn per
        request; the master itself waits 30 s (``timeout``) for a silent worker."""
        now = time.monotonic()
        if now - self._parent_checked < PARENT_CHECK_SECONDS:
            return True
        self._parent_checked = now
        return bool(self.is_parent_alive())

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.draining.set()
        super().handle_exit(sig, frame)

    def _advance_ready(self) -> None:
        ready, self.ready = self.ready, deque()
        for conn in ready:
            if conn in self.connections and conn.phase in (Phase.READING, Phase.IDLE):
                self._advance(conn)

    def _wait_seconds(self) -> float:
        if self.ready:
            return 0.0
        waiting = [
            c.deadline
            for c in self.connections
            if c.phase not in (Phase.BUSY, Phase.QUEUED) and c not in self.paused
        ]
        if self._paused_listeners:
            waiting.append(self._listeners_resume_at)
        if not waiting:
            return 1.0
        return max(0.0, min(1.0, min(waiting) - time.monotonic()))

    # -- accepting, and shedding at the bound ----------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):  # a burst of connections is taken in one go
            if self._leaves_to_others():
                self._pause_listeners()
                return
            try:
                sock, client = listener.accept()
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self._shed_one()  # no descriptor left: make room, try next time
                return
            now = time.monotonic()
            self._defer_started = 0.0
            if len(self.connections) >= self.max_connections and not self._shed_one():
                util.close(sock)  # everything held is busy: refuse the newcomer
                continue
            self._open(sock, client, listener.getsockname(), now)

    def _leaves_to_others(self) -> bool:
        """Whether a waiting connection is better taken by a worker holding fewer,
        for up to ACCEPT_DEFER_SECONDS from when this worker first left it."""
        if self.tally is None:
            return False
        fewest = self.tally.fewest_elsewhere(self._tally_index)
        if fewest is None or self.held <= fewest:
            return False
        now = time.monotonic()
        if now - self._defer_seen > 2 * ACCEPT_PAUSE_SECONDS + 0.01:
            self._defer_started = 0.0  # a new connection, not the one left before
        self._defer_seen = now
        if not self._defer_started:
            self._defer_started = now
        return now - self._defer_started < ACCEPT_DEFER_SECONDS

    def _pause_listeners(self) -> None:
        if self._paused_listeners:
            return
        for listener in self.sockets:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(listener)
                self._paused_listeners.append(listener)
        self._listeners_resume_at = time.monotonic() + ACCEPT_PAUSE_SECONDS

    def _resume_listeners(self) -> None:
        if not self._paused_listeners or time.monotonic() < self._listeners_resume_at:
            return
        for listener in self._paused_listeners:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.register(listener, selectors.EVENT_READ, self._accept)
        self._paused_listeners = []

    @property
    def held(self) -> int:
        """Connections that can still carry a request (not those the client is closing),
        what the workers balance."""
        return len(self.connections) - self._closing

    def _publish_connections(self) -> None:
        if self.tally is not None and self._tally_index >= 0:
            self.tally.publish(self._tally_index, self.pid, self.held)

    def _open(self, sock: socket.socket, client: Any, server: Any, now: float) -> None:
        port = server[1] if isinstance(server, tuple) else None
        tls = bool(self.cfg.is_ssl) and (self.tls_port is None or port == self.tls_port)
        sock.setblocking(False)
        if tls:
            try:
                source = getattr(self.app, "tls_context", None)
                context = source() if source else gunicorn_sock.ssl_context(self.cfg)
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError, ValueError):
                util.close(sock)
                return
        conn = GuardedConnection(self.cfg, sock, client, server, tls, now)
        conn.deadline = now + (self.handshake_timeout if tls else self.request_timeout)
        self.connections.add(conn)
        self.per_address[conn.address] += 1
        self._publish_connections()
        self._advance(conn)

    def _shed_one(self) -> bool:
        """Close the connection that costs least to lose; False if there is none.

        From the client address that holds the most connections first, whatever state
        they are in (short of a request being answered): an attacker trickling
        hundreds of requests loses one of them before the API server or the kubelet,
        which hold a few, lose anything. Within an address: connections without a
        request under way (handshaking, idle, silent) before a request being read,
        never served before served, the least recently used first.
        """
        candidates = [c for c in self.connections if c.phase not in (Phase.BUSY, Phase.QUEUED)]
        if not candidates:
            return False
        per_address = self.per_address
        victim = min(
            candidates,
            key=lambda c: (
                -per_address[c.address],
                c.phase is Phase.READING and bool(c.buffer),
                c.served > 0,
                c.last_used,
            ),
        )
        self._close(victim)
        return True

    # -- the connection state machine (selector loop) ---------------------------------
    def _watch(self, conn: GuardedConnection, events: int) -> None:
        if conn.events == events:
            return
        try:
            if conn.events and events:
                self.poller.modify(conn.sock, events, self._on_ready(conn))
            elif events:
                self.poller.register(conn.sock, events, self._on_ready(conn))
            else:
                self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            self._close(conn)
            return
        conn.events = events

    def _on_ready(self, conn: GuardedConnection) -> Any:
        return lambda _fileobj: self._advance(conn)

    def _advance(self, conn: GuardedConnection) -> None:
        try:
            if conn.phase is Phase.HANDSHAKE:
                self._handshake(conn)
            if conn.phase is Phase.WRITING:
                self._write(conn)
                return
            if conn.phase in (Phase.READING, Phase.IDLE):
                self._read(conn)
        except ssl.SSLError as error:
            if conn.phase is Phase.HANDSHAKE and not isinstance(error, ssl.SSLEOFError):
                self._log_refused(conn, error)
            self._close(conn)
        except (OSError, ValueError):
            self._close(conn)

    def _log_refused(self, conn: GuardedConnection, error: ssl.SSLError) -> None:
        """A refused handshake (no or a wrong client certificate, an old protocol), at
        most LOGGED_REFUSALS per 10 s per worker, so a flood cannot flood the log."""
        now = time.monotonic()
        if now - self._refusal_window >= 10:
            if self._refusals > LOGGED_REFUSALS:
                self.log.warning("%d more TLS handshakes refused", self._refusals - LOGGED_REFUSALS)
            self._refusal_window, self._refusals = now, 0
        self._refusals += 1
        if self._refusals <= LOGGED_REFUSALS:
            reason = getattr(error, "reason", None) or str(error)
            self.log.warning("TLS handshake refused from %s: %s", conn.client, reason)

    def _handshake(self, conn: GuardedConnection) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        conn.phase = Phase.READING
        conn.deadline = time.monotonic() + self.request_timeout

    def _read(self, conn: GuardedConnection) -> None:
        if conn in self.paused:
            return
        received = False
        framing: RequestFraming | None = None  # of the buffer as it is now, if known
        for _ in range(READS_PER_WAKE):
            if self._over_budget(conn):
                # Over the buffer budget: stop reading this large request until others
                # are answered. The wait is ours, not the client's: its deadline stops
                # while it waits (_resume_paused gives back what was left).
                self.paused.add(conn)
                conn.deadline -= time.monotonic()
                self._watch(conn, 0)
                return
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            if not data:
                if conn.tls and conn.phase is not Phase.CLOSING:
                    # The client's TLS close_notify: it is closing (the API server
                    # does so after 90 s idle). Let its TCP FIN arrive before ours, so
                    # the TIME_WAIT is the client's and the close is plainly its own.
                    conn.phase = Phase.CLOSING
                    conn.deadline = time.monotonic() + CLOSE_LINGER_SECONDS
                    self._watch(conn, 0)
                    self._closing += 1
                    self._publish_connections()
                    return
                self._close(conn)
                return
            if not conn.buffer or conn.phase is Phase.IDLE:
                # A request starts: it has request_timeout to arrive whole.
                conn.phase = Phase.READING
                conn.deadline = time.monotonic() + self.request_timeout
            conn.buffer += data
            self.buffered_bytes += len(data)
            received = True
            if framing is not None and framing.end is not None:
                # The head is framed and gave the body's length: more body bytes only
                # change whether it is all there (the API server sends a review's head
                # and body in separate TLS records, so this saves framing it again).
                framing.complete = len(conn.buffer) >= framing.end
            else:
                framing = None
            if len(data) < RECV_BYTES and not (conn.tls and conn.sock.pending()):
                # All there is for now; one more recv only if the request is not whole
                # yet (its next records may have arrived meanwhile).
                if framing is None:
                    framing = request_framing(conn.buffer, self.max_body)
                if framing is not None and framing.complete:
                    break
        else:
            # Stopped by the bound with more perhaps waiting, possibly inside the TLS
            # object where the selector cannot see it: read again on the next turn.
            self.ready.append(conn)
        if received or conn.buffer:
            self._check_complete(conn, framing)
        if conn.phase in (Phase.READING, Phase.IDLE):
            self._watch(conn, selectors.EVENT_READ)

    def _over_budget(self, conn: GuardedConnection) -> bool:
        """Whether ``conn`` must wait before buffering more.

        Only the part of a request beyond SMALL_REQUEST_BYTES counts against the budget
        (small reviews, nearly all of them, are never held up). When nothing complete
        is waiting or being answered, the request furthest along goes on, so partly
        buffered requests cannot block each other for good.
        """
        if len(conn.buffer) < SMALL_REQUEST_BYTES:
            return False
        if self.buffered_bytes < 2 * self.inflight_budget:
            return False
        if self.queued or self.busy_threads:
            return True  # those free budget when answered
        furthest = max(
            (c for c in self.connections if c.phase is Phase.READING),
            key=lambda c: len(c.buffer),
        )
        return furthest is not conn

    def _check_complete(
        self, conn: GuardedConnection, framing: RequestFraming | None = None
    ) -> None:
        """``framing``: of the buffer as it is, when _read has just worked it out."""
        if not conn.tls and not conn.buffer[:1].isalpha():
            # Plain HTTP starts with a method; a TLS ClientHello (or anything else) on
            # the health listener is refused at once rather than left to its deadline.
            self._refuse(conn, BAD_REQUEST)
            return
        if framing is None:
            framing = request_framing(conn.buffer, self.max_body)
        if framing is None:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                self._refuse(conn, HEADERS_TOO_LARGE)
            return
        if framing.expects_continue and not framing.complete and not conn.continue_sent:
            conn.continue_sent = True
            conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not framing.complete:
            return
        conn.must_close = framing.must_close
        conn.body_bytes = framing.body_bytes
        conn.request_end = None if framing.must_close else framing.end
        conn.phase = Phase.QUEUED
        self.queued.append(conn)
        self._dispatch()
        if conn.phase is Phase.QUEUED:
            # Waiting for a thread or for memory budget: not read meanwhile. (One the
            # loop answers at once stays watched, saving two epoll_ctl calls.)
            self._watch(conn, 0)

    def _refuse(self, conn: GuardedConnection, response: bytes) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            conn.sock.send(response)
        self._close(conn)

    # -- handing complete requests to threads, within the memory budget ---------------
    def _dispatch(self) -> None:
        if self._dispatching:
            return  # called again from a request answered below: the loop goes on
        self._dispatching = True
        try:
            while self.queued:
                conn = self.queued[0]
                if self._answers_in_loop(conn):
                    self.queued.popleft()
                    self._take_buffer(conn)
                    self._answer_in_loop(conn)
                    continue
                if self.busy_threads >= self.cfg.threads:
                    break
                if (
                    self.decoding_bytes
                    and self.decoding_bytes + conn.body_bytes > self.inflight_budget
                ):
                    break  # answered once a thread frees budget
                self._watch(conn, 0)  # the thread owns the socket now
                if conn not in self.connections:
                    continue  # the selector refused it: closed, and out of the queue
                self.queued.popleft()
                self.decoding_bytes += conn.body_bytes
                self.busy_threads += 1
                self._take_buffer(conn)
                conn.phase = Phase.BUSY
                conn.sock.setblocking(True)
                # A thread never waits on the socket longer than this (a response the
                # client does not read, a request framing misjudged).
                conn.sock.settimeout(self.request_timeout)
                self.enqueue_req(conn)
        finally:
            self._dispatching = False
        self._resume_paused()

    def _answers_in_loop(self, conn: GuardedConnection) -> bool:
        """Small admission requests: decoding and judging one takes well under a
        millisecond, less than handing it to a thread and back."""
        return conn.tls and not conn.must_close and conn.body_bytes <= ANSWER_IN_LOOP_BYTES

    def _take_buffer(self, conn: GuardedConnection) -> None:
        """Move the buffered request into the connection's parser.

        Only that request, when its end is known: pipelined requests behind it stay in
        the buffer (gunicorn's unreader copies what it holds on every read, so a
        client that pipelines megabytes would make each request cost megabytes).
        """
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        end = conn.request_end if conn.request_end is not None else len(conn.buffer)
        conn.parser.unreader.unread(bytes(conn.buffer[:end]))
        del conn.buffer[:end]  # cheap: a bytearray drops its head in place
        self.buffered_bytes -= end

    def _answer_in_loop(self, conn: GuardedConnection) -> None:
        """Parse and answer a complete request here, then send the answer without
        blocking. The parser has the whole request, so it never waits on the socket
        (which stays non-blocking: a misjudged framing fails, it does not stall)."""
        conn.phase = Phase.BUSY
        written = ResponseBuffer()
        sock, conn.sock = conn.sock, written
        try:
            keep = bool(self.handle(conn))
        finally:
            conn.sock = sock
        conn.outgoing = written.data
        conn.keep_after_write = keep
        conn.phase = Phase.WRITING
        conn.deadline = time.monotonic() + self.request_timeout
        self._write(conn)

    def _write(self, conn: GuardedConnection) -> None:
        """Send what the loop answered; the request is done once all of it is sent."""
        outgoing = conn.outgoing
        while outgoing:
            try:
                sent = conn.sock.send(outgoing[:RECV_BYTES])
            except (ssl.SSLWantWriteError, BlockingIOError):
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._watch(conn, selectors.EVENT_READ)
                return
            except (OSError, ValueError):
                self._close(conn)
                return
            del outgoing[:sent]
        self._request_done(conn, conn.keep_after_write)

    def _resume_paused(self) -> None:
        """Read the paused requests again once there is budget, or once nothing else
        can free it (then _over_budget lets the one furthest along go on)."""
        idle = not self.queued and not self.busy_threads
        if self.paused and (self.buffered_bytes < 2 * self.inflight_budget or idle):
            for conn in list(self.paused):
                self.paused.discard(conn)
                conn.deadline += time.monotonic()
                if conn in self.connections:
                    self._watch(conn, selectors.EVENT_READ)
                    self._advance(conn)

    def finish_request(self, conn: GuardedConnection, fs: Any) -> None:
        """A thread is done with ``conn`` (runs in the loop)."""
        self.busy_threads -= 1
        self.decoding_bytes -= conn.body_bytes
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        if keep and conn in self.connections:
            conn.sock.setblocking(False)
        self._request_done(conn, keep)
        self._dispatch()

    def _request_done(self, conn: GuardedConnection, keep: bool) -> None:
        """A request on ``conn`` is answered: close it, or wait for the next one."""
        conn.body_bytes = 0
        conn.phase = Phase.IDLE
        if not keep or conn.must_close or conn not in self.connections:
            self._close(conn)
            return
        now = time.monotonic()
        conn.served += 1
        conn.last_used = now
        leftover = conn.parser.unreader.take_buffered()
        conn.continue_sent = False
        conn.deadline = now + self.cfg.keepalive
        if not self.alive:
            conn.deadline = max(conn.deadline, now + self.cfg.graceful_timeout)
        if leftover:  # read by the parser beyond the request: it comes first
            conn.buffer[:0] = leftover
            self.buffered_bytes += len(leftover)
        if conn.buffer:  # a pipelined request, already read
            conn.phase = Phase.READING
            conn.deadline = now + self.request_timeout
        self._watch(conn, selectors.EVENT_READ)
        if conn.buffer or (conn.tls and conn.sock.pending()):
            # Answer what is already there on the next turn of the loop, after the
            # other connections: a client that pipelines requests gets one answered
            # per turn, like everyone else, not all of them while the others wait.
            # (Bytes still in the socket wake the selector by themselves.)
            self.ready.append(conn)

    # -- threads ------------------------------------------------------------------------
    def handle(self, conn: GuardedConnection) -> Any:
        """Parse and answer the buffered request (a pool thread)."""
        req = None
        try:
            req = next(conn.parser)
            if not req:
                return False
            return self._keepalive_after(conn, self.handle_request(req, conn))
        except http.errors.NoMoreData:
            self.log.debug("client closed the connection")
        except StopIteration:
            self.log.debug("closing the connection")
        except (TimeoutError, ssl.SSLError, OSError) as error:
            self.log.debug("connection error: %s", error)
        except Exception as error:
            self.handle_error(req, conn.sock, conn.client, error)
        return False

    def _keepalive_after(self, conn: GuardedConnection, keepalive: bool) -> bool:
        if conn.must_close:
            # A body left unread (refused as too large, broken framing): close
            # gracefully, here in the thread (it lingers up to 2 s), so the unread
            # bytes do not turn the close into a reset that loses the response.
            util.close_graceful(conn.sock)
            return False
        if not keepalive:
            return False
        # Whatever body the app left unread is drained from the parser's buffer: the
        # loop read the whole request before it was parsed, so this never waits on the
        # socket (gthread's version bounds a socket drain, at two syscalls a request).
        return drain_buffered_body(conn.parser)

    # -- deadlines and closing ------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for conn in list(self.connections):
            if conn.phase in (Phase.BUSY, Phase.QUEUED) or conn in self.paused:
                continue
            if conn.deadline <= now:
                self._close(conn)

    def _close(self, conn: GuardedConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.per_address[conn.address] -= 1
        if not self.per_address[conn.address]:
            del self.per_address[conn.address]
        if conn.phase is Phase.CLOSING:
            self._closing -= 1
        self._publish_connections()
        self.paused.discard(conn)
        if conn.phase is Phase.QUEUED:
            self.queued.remove(conn)
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            conn.events = 0
        self.buffered_bytes -= len(conn.buffer)
        conn.buffer = bytearray()
        conn.outgoing = bytearray()
        if conn.phase is not Phase.BUSY:
            util.close(conn.sock)
        self._resume_paused()
