"""The shared table of connections per worker (webhook/balance.py)."""

from __future__ import annotations

import os

import pytest

from webhook.balance import ConnectionTally


def test_a_lone_worker_has_no_one_to_leave_connections_to() -> None:
    tally = ConnectionTally(4)
    index = tally.claim(pid=100, hint=1)
    tally.publish(index, 100, 7)
    assert tally.fewest_elsewhere(index) is None


def test_fewest_elsewhere_is_the_least_loaded_other_live_worker() -> None:
    tally = ConnectionTally(6)
    first, second, third = (tally.claim(pid, hint=pid) for pid in (1, 2, 3))
    assert len({first, second, third}) == 3
    tally.publish(first, 1, 9)
    tally.publish(second, 2, 4)
    tally.publish(third, 3, 6)
    assert tally.fewest_elsewhere(first) == 4
    assert tally.fewest_elsewhere(second) == 6
    tally.release(2)  # the master, when worker 2 exits
    assert tally.fewest_elsewhere(first) == 6


def test_claim_skips_entries_of_live_workers_and_reuses_freed_ones() -> None:
    tally = ConnectionTally(2)
    first = tally.claim(pid=10, hint=0)
    second = tally.claim(pid=11, hint=0)  # entry 0 is taken: the next free one
    assert (first, second) == (0, 1)
    tally.release(10)
    assert tally.claim(pid=12, hint=1) == 0  # entry 1 is live: the freed one
    # Full: a worker shares its hinted entry rather than failing.
    assert tally.claim(pid=13, hint=1) == 1


def test_a_new_claim_starts_at_zero_connections() -> None:
    tally = ConnectionTally(2)
    index = tally.claim(pid=5, hint=0)
    tally.publish(index, 5, 30)
    tally.release(5)
    again = tally.claim(pid=6, hint=0)
    other = tally.claim(pid=7, hint=1)
    assert again == 0
    assert tally.fewest_elsewhere(other) == 0


def test_workers_forked_from_the_master_see_each_others_counts() -> None:
    tally = ConnectionTally(4)  # made in the "master", before the fork
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the "worker"
        try:
            index = tally.claim(os.getpid(), hint=1)
            tally.publish(index, os.getpid(), 11)
            os.write(writer, b"x")
        finally:
            os._exit(0)
    os.read(reader, 1)
    os.waitpid(child, 0)
    mine = tally.claim(os.getpid(), hint=0)
    assert tally.fewest_elsewhere(mine) == 11
    tally.release(child)
    assert tally.fewest_elsewhere(mine) is None


def test_a_table_needs_an_entry() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        ConnectionTally(0)
