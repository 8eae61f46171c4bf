"""Which connections a worker holds: the caps, and whom to shed at them.

The API server keeps a few connections to each webhook pod alive and sends every
review over them; an attacker can open hundreds, from one address or many. So:

- each client address holds at most ``per_address`` connections (half the worker's
  bound): one address alone cannot take them all;
- at the worker's bound a new connection is still taken, and another is closed to make
  room: first one that is already closing (answered, lingering for the client's FIN);
  then one that has never carried a request (handshaking, silent, or reading its
  first request), the oldest first; then one that has carried a request and whose next
  request has been arriving, incomplete, for STALL_GRACE_SECONDS or more (the API server
  sends a review in one go), the longest stalled first; a connection that has carried a
  request is otherwise closed only when neither is left, and only while idle, the least
  recently used first. If none exists (every connection is having a request answered
  or has just begun its next one), the newcomer is refused.
- the health listener has its own HEALTH_CONNECTIONS (and per-address cap), apart from
  the admission port's: kubelet probes get in however full the admission port is, and
  a flood of the health port takes no admission slot.

Why not "the address holding the most loses one" (the rule before issue 22): an
attacker with one connection per address makes the API server, with its few kept-alive
connections from one address, the heaviest holder, and loses nothing. A served
connection is one the API server (or a kubelet probe that keeps alive) has already
used: keeping it saves the next review a TLS handshake and cannot be held by a client
that never sends a request. Oldest first among the never-served: a connection is
normally served within milliseconds of opening, so the old ones are the stalled ones
(docs/design.md, "Connection admission").

And the spreading of new connections over the workers (webhook/balance.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Final, Protocol, TypeVar

from webhook.balance import ConnectionTally

# A worker holding more connections than another leaves a waiting connection to it for
# ACCEPT_PAUSE_SECONDS at a time, and takes it itself once it has waited
# ACCEPT_DEFER_SECONDS (the other worker may be busy, stopped or gone).
ACCEPT_PAUSE_SECONDS: Final = 0.002
ACCEPT_DEFER_SECONDS: Final = 0.02
# A served connection whose next request has been incomplete this long can be shed,
# after every never-served one: one byte of a request then silence must not hold a slot
# (issue 22 review, F2).
STALL_GRACE_SECONDS: Final = 1.0
# Connections a worker holds on the health listener (probes, the metrics scraper).
HEALTH_CONNECTIONS: Final = 32


class Held(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def served(self) -> int: ...
    @property
    def opened(self) -> float: ...
    @property
    def last_used(self) -> float: ...
    @property
    def idle(self) -> bool: ...
    @property
    def answering(self) -> bool: ...
    @property
    def stalled_since(self) -> float: ...
    @property
    def closing(self) -> bool: ...


H = TypeVar("H", bound=Held)


def per_address_cap(max_connections: int) -> int:
    return max(1, max_connections // 2)


def shed_candidate(held: Iterable[H], now: float | None = None) -> H | None:
    """The connection to close to make room (None: none may be closed)."""
    if now is None:
        now = time.monotonic()
    stalled_before = now - STALL_GRACE_SECONDS
    closing: H | None = None
    never_served: H | None = None
    stalled: H | None = None
    idle_served: H | None = None
    for conn in held:
        if conn.answering:
            continue
        if conn.closing:
            # Answered and on its way out (lingering for the client's FIN): it still
            # counts against the caps, and a client opening a connection per request
            # fills them with these within a second. Shedding a newcomer in their stead
            # dropped reviews (test_rotation_under_load_zero_failures).
            if closing is None or conn.opened < closing.opened:
                closing = conn
        elif not conn.served:
            if never_served is None or conn.opened < never_served.opened:
                never_served = conn
        elif conn.idle:
            if idle_served is None or conn.last_used < idle_served.last_used:
                idle_served = conn
        else:
            since = conn.stalled_since
            if (
                since
                and since <= stalled_before
                and (stalled is None or since < stalled.stalled_since)
            ):
                stalled = conn
    if closing is not None:
        return closing
    if never_served is not None:
        return never_served
    return stalled if stalled is not None else idle_served


class Admission:
    """The caps of one worker; :meth:`make_room` picks whom a newcomer replaces."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.per_address_max = per_address_cap(max_connections)
        self.per_address: Counter[str] = Counter()
        self.total = 0

    def make_room(self, address: str, held: Iterable[H]) -> tuple[bool, H | None]:
        """(admit the newcomer from ``address``, the connection to close first)."""
        if self.per_address[address] >= self.per_address_max:
            victim = shed_candidate(c for c in held if c.address == address)
            return victim is not None, victim
        if self.total >= self.max_connections:
            victim = shed_candidate(held)
            return victim is not None, victim
        return True, None

    def add(self, address: str) -> None:
        self.per_address[address] += 1
        self.total += 1

    def remove(self, address: str) -> None:
        self.total -= 1
        self.per_address[address] -= 1
        if not self.per_address[address]:
            del self.per_address[address]


class AcceptDeferral:
    """Whether this worker leaves a waiting connection to a worker holding fewer."""

    def __init__(self, tally: ConnectionTally | None, pid: int, age: int) -> None:
        self.tally = tally
        self.index = tally.claim(pid, age) if tally is not None else -1
        self.pid = pid
        self._started = 0.0
        self._seen = 0.0

    def publish(self, held: int) -> None:
        if self.tally is not None and self.index >= 0:
            self.tally.publish(self.index, self.pid, held)

    def taken(self) -> None:
        self._started = 0.0

    def leave_to_others(self, held: int) -> bool:
        """For up to ACCEPT_DEFER_SECONDS from when this worker first left it."""
        if self.tally is None:
            return False
        fewest = self.tally.fewest_elsewhere(self.index)
        if fewest is None or held <= fewest:
            return False
        now = time.monotonic()
        if now - self._seen > 2 * ACCEPT_PAUSE_SECONDS + 0.01:
            self._started = 0.0  # a new connection, not the one left before
        self._seen = now
        if not self._started:
            self._started = now
        return now - self._started < ACCEPT_DEFER_SECONDS
