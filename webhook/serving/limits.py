"""What the loop is given: its limits, and the worker (the host) that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Host(Protocol):
    """What the loop needs of the gunicorn worker running it."""

    alive: bool

    def heartbeat(self) -> None: ...
    def parent_alive(self) -> bool: ...


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float
    request_timeout: float
    keepalive: float
    graceful_timeout: float
    max_body: int
    inflight_bytes: int
    max_connections: int
    threads: int
