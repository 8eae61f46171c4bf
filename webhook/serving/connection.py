"""One client connection as the loop holds it: phase, parser, deadline, pending output."""

from __future__ import annotations

import socket
from enum import Enum

from webhook.serving.protocol import HttpProtocol, Request


class Phase(Enum):
    HANDSHAKE = "handshake"  # TLS handshake in progress
    READING = "reading"  # a request under way, or the connection's first awaited
    QUEUED = "queued"  # complete, waiting for a pool thread (threads, memory budget)
    BUSY = "busy"  # a pool thread is running the application for it
    WRITING = "writing"  # the response is being sent
    IDLE = "idle"  # kept alive between requests
    CLOSING = "closing"  # closing: waiting for the client's FIN, discarding its bytes


# Phases in which a deadline runs: the others wait on the worker, not on the client.
TIMED = frozenset({Phase.HANDSHAKE, Phase.READING, Phase.WRITING, Phase.IDLE, Phase.CLOSING})


class Connection:
    __slots__ = (
        "address",
        "client",
        "close_after_write",
        "deadline",
        "events",
        "hard_deadline",
        "health",
        "held",
        "last_used",
        "opened",
        "outgoing",
        "paused_at",
        "phase",
        "protocol",
        "request",
        "request_started",
        "served",
        "server",
        "sock",
        "tls",
    )

    def __init__(
        self,
        sock: socket.socket,
        client: tuple[str, int],
        server: tuple[str, str],
        tls: bool,
        max_body: int,
        now: float,
    ) -> None:
        self.sock = sock
        self.client = client
        self.address = client[0]
        self.server = server
        self.tls = tls
        self.protocol = HttpProtocol(max_body)
        self.phase = Phase.HANDSHAKE if tls else Phase.READING
        self.deadline = now
        self.hard_deadline = now  # of the request awaited (Phase.READING)
        self.paused_at = 0.0  # when reading stopped for the buffer budget (0: reading)
        self.opened = now
        self.last_used = now
        self.served = 0  # requests answered on it
        self.request_started = now  # when the request awaited or under way was
        self.health = False  # taken on the health listener (its own allowance)
        self.events = 0  # selector events registered for it
        self.outgoing = bytearray()
        self.close_after_write = False
        self.held = 0  # request bytes counted in the worker's buffer budget
        self.request: Request | None = None  # queued for or run by a pool thread

    @property
    def idle(self) -> bool:
        return self.phase is Phase.IDLE

    @property
    def closing(self) -> bool:
        """Answered and closing: lingering for the client's FIN, carrying nothing."""
        return self.phase is Phase.CLOSING

    @property
    def answering(self) -> bool:
        """A request of it is being answered: never shed."""
        return self.phase in (Phase.QUEUED, Phase.BUSY, Phase.WRITING)

    @property
    def stalled_since(self) -> float:
        """When the next request of a served connection began to arrive, while it is
        incomplete and its reading waits on the client (0: none such)."""
        protocol = self.protocol
        if (
            self.served
            and self.phase is Phase.READING
            and protocol.started
            and not protocol.requests
            and not self.paused_at
        ):
            return self.request_started
        return 0.0
