"""webhook/serving/admission.py: whom a new connection replaces at the caps."""

from __future__ import annotations

from dataclasses import dataclass

from webhook.serving.admission import STALL_GRACE_SECONDS, Admission, shed_candidate


@dataclass
class Conn:
    address: str
    opened: float
    served: int = 0
    last_used: float = 0.0
    idle: bool = False
    answering: bool = False
    stalled_since: float = 0.0
    closing: bool = False


def admit(admission: Admission, held: list[Conn], address: str) -> tuple[bool, Conn | None]:
    return admission.make_room(address, held)


def test_under_the_caps_nothing_is_shed() -> None:
    admission = Admission(8)
    admission.add("a")
    assert admit(admission, [Conn("a", 1)], "b") == (True, None)


def test_closing_connections_go_before_any_newcomer_is_refused_or_shed() -> None:
    """A client that opens a connection per request leaves each lingering in CLOSING for
    a second: at its address's cap, the oldest of those goes, not a connection still
    handshaking (which dropped a review, test_rotation_under_load_zero_failures)."""
    handshaking = Conn("a", 5)
    lingering = [Conn("a", 1 + i, served=1, closing=True) for i in range(3)]
    admission = Admission(8)
    for conn in [handshaking, *lingering]:
        admission.add(conn.address)
    assert admit(admission, [handshaking, *lingering], "a") == (True, lingering[0])


def test_never_served_go_first_oldest_first_whatever_their_address() -> None:
    api_server = [Conn("10.0.0.1", 0, served=5, last_used=9, idle=True) for _ in range(3)]
    attackers = [Conn(f"10.1.0.{i}", 10 + i) for i in range(5)]
    admission = Admission(8)
    for conn in api_server + attackers:
        admission.add(conn.address)
    assert admit(admission, api_server + attackers, "10.1.0.99") == (True, attackers[0])


def test_served_connections_go_only_when_idle_and_none_never_served_is_left() -> None:
    busy = Conn("a", 0, served=1, last_used=1, answering=True)
    reading = Conn("a", 0, served=1, last_used=0)  # reading its next request
    idle_old = Conn("b", 0, served=2, last_used=3, idle=True)
    idle_new = Conn("b", 0, served=2, last_used=5, idle=True)
    assert shed_candidate([busy, reading, idle_new, idle_old]) is idle_old
    assert shed_candidate([busy, reading]) is None
    first_request_answered = Conn("c", 0, answering=True)
    assert shed_candidate([busy, first_request_answered]) is None


def test_an_address_at_its_cap_replaces_its_own_connections() -> None:
    admission = Admission(8)  # 4 per address
    own = [Conn("a", index) for index in range(4)]
    other = [Conn("b", 100)]
    for conn in own + other:
        admission.add(conn.address)
    assert admit(admission, own + other, "a") == (True, own[0])
    for conn in own:
        conn.answering = True
    assert admit(admission, own + other, "a") == (False, None)


def test_counts_follow_add_and_remove() -> None:
    admission = Admission(4)
    admission.add("a")
    admission.add("a")
    admission.remove("a")
    assert admission.per_address == {"a": 1}
    admission.remove("a")
    assert admission.per_address == {}
    assert admission.total == 0


def test_a_stalled_next_request_goes_after_the_never_served_before_the_idle() -> None:
    """Issue 22 review, F2: a served connection whose next request has been incomplete
    for STALL_GRACE_SECONDS is shed after every never-served one, the longest stalled
    first, before any idle one; within the grace it is not shed."""
    now = 100.0
    idle = Conn("api", 0, served=3, last_used=1, idle=True)
    young = Conn("x", 0, served=1, last_used=99, stalled_since=now - STALL_GRACE_SECONDS / 2)
    stalled_new = Conn("x", 0, served=1, last_used=50, stalled_since=now - 5)
    stalled_old = Conn("y", 0, served=1, last_used=60, stalled_since=now - 9)
    never = Conn("z", 99)
    held = [idle, young, stalled_new, stalled_old]
    assert shed_candidate([*held, never], now) is never
    assert shed_candidate(held, now) is stalled_old
    assert shed_candidate([idle, young, stalled_new], now) is stalled_new
    assert shed_candidate([idle, young], now) is idle
    assert shed_candidate([young], now) is None
