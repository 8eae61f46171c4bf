"""Spreading kept-alive connections evenly over gunicorn's workers.

The workers share one listening socket and each accepts whatever arrives while it
waits in its selector. A client that opens its connections in a burst (the API server
when load rises, a load generator) often finds one worker idle and the other busy, and
the idle one takes them all; as connections are kept alive for minutes, that worker
then answers every request while the other idles (6 of 16 benchmark runs).
SO_REUSEPORT would spread them but resets connections queued for a worker that dies
(docs/benchmarks.md, "Tried and not kept").

So each worker publishes how many connections it holds in a small table of shared
memory made by the master before it forks, and a worker that holds more than another
live worker leaves a waiting connection to that one for a few milliseconds
(webhook/serving/). The table is advisory: a stale or torn entry only makes a worker
accept a connection it could have left, and the master clears the entry of a worker
that exits.
"""

from __future__ import annotations

import mmap
import struct
from typing import Final

# One entry per worker: its pid (0: free) and the connections it holds.
_ENTRY: Final = struct.Struct("=qq")


class ConnectionTally:
    """Connections held per worker, in memory shared by the master and its workers."""

    def __init__(self, entries: int) -> None:
        if entries < 1:
            raise ValueError("a connection tally needs at least one entry")
        self.entries = entries
        self._memory = mmap.mmap(-1, entries * _ENTRY.size)

    def _read(self, index: int) -> tuple[int, int]:
        pid, count = _ENTRY.unpack_from(self._memory, index * _ENTRY.size)
        return pid, count

    def claim(self, pid: int, hint: int) -> int:
        """An entry for worker ``pid``: the one at ``hint`` (the worker's age) modulo the
        table size, or the next free one. The master spawns one worker at a time and
        frees the entry of each that exits, so two live workers never share one."""
        for step in range(self.entries):
            index = (hint + step) % self.entries
            owner, _ = self._read(index)
            if owner in (0, pid):
                _ENTRY.pack_into(self._memory, index * _ENTRY.size, pid, 0)
                return index
        # More live workers than entries (not with the committed sizing): share the
        # hinted entry; balancing is then approximate, never wrong.
        return hint % self.entries

    def publish(self, index: int, pid: int, connections: int) -> None:
        _ENTRY.pack_into(self._memory, index * _ENTRY.size, pid, connections)

    def release(self, pid: int) -> None:
        """The master, when worker ``pid`` has exited."""
        for index in range(self.entries):
            if self._read(index)[0] == pid:
                _ENTRY.pack_into(self._memory, index * _ENTRY.size, 0, 0)

    def fewest_elsewhere(self, index: int) -> int | None:
        """The fewest connections another live worker holds (None: no other worker)."""
        fewest: int | None = None
        for other in range(self.entries):
            if other == index:
                continue
            pid, count = self._read(other)
            if pid and (fewest is None or count < fewest):
                fewest = count
        return fewest
