"""Hostile clients, as a pod in the cluster could be: each kind in its own process.

Every kind opens ``connections`` connections to 127.0.0.1:PORT (loopback only, from a
loopback address of its own, 127.0.1.N, as each attacking pod has its own) within
about a second and keeps them in its hostile state until ``seconds`` have passed,
opening a new one whenever the server closes one (an attacker would), so the pressure
lasts the whole attack. Everything stops by itself at the deadline; the counts
(connections opened, closed by the server) go back through a queue.

Kinds:
- ``one-byte``: the first byte of a TLS record, then silence;
- ``partial-hello``: the first half of a real ClientHello, then silence;
- ``handshake-then-silence``: a complete TLS handshake, then nothing;
- ``header-trickle``: a handshake, then the request head one byte a second;
- ``body-trickle``: a handshake, a whole head announcing 100 KB, then the body one byte
  a second;
- ``churn``: connections opened and abandoned (half with a reset) at a high rate.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import ssl
import struct
import threading
import time
from typing import Any

KINDS = (
    "one-byte",
    "partial-hello",
    "handshake-then-silence",
    "header-trickle",
    "body-trickle",
    "churn",
)

HEAD = (
    b"POST /validate HTTP/1.1\r\nHost: pod-replace-guard\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
)


def client_hello(ca_file: str) -> bytes:
    """The bytes of a real ClientHello (a TLS client on memory BIOs, no network)."""
    context = ssl.create_default_context(cafile=ca_file)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="pod-replace-guard")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class Attacker:
    """One kind of attack: ``connections`` threads, each holding one connection."""

    def __init__(
        self, kind: str, port: int, ca_file: str, connections: int, seconds: float, source: str
    ):
        self.kind = kind
        self.source = source
        self.port = port
        self.ca_file = ca_file
        self.connections = connections
        self.deadline = time.monotonic() + seconds
        self.context = ssl.create_default_context(cafile=ca_file)
        self.hello = client_hello(ca_file)
        self.lock = threading.Lock()
        self.opened = 0
        self.closed_by_server = 0
        self.errors = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(
            ("127.0.0.1", self.port), timeout=5, source_address=(self.source, 0)
        )
        with self.lock:
            self.opened += 1
        return sock

    def _tls(self) -> ssl.SSLSocket:
        raw = self._connect()
        return self.context.wrap_socket(raw, server_hostname="pod-replace-guard")

    def _hold(self, sock: socket.socket, trickle: bytes = b"") -> None:
        """Keep ``sock`` open until the deadline, sending ``trickle`` a byte a second;
        return early when the server closes it."""
        position = 0
        sock.settimeout(1.0)
        while self.remaining() > 0:
            if position < len(trickle):
                sock.send(trickle[position : position + 1])
                position += 1
            try:
                if sock.recv(4096) == b"":
                    break  # closed by the server
            except (TimeoutError, ssl.SSLWantReadError):
                continue
        else:
            return
        with self.lock:
            self.closed_by_server += 1

    def _one(self) -> None:
        kind = self.kind
        if kind == "one-byte":
            sock = self._connect()
            sock.sendall(b"\x16")
            self._hold(sock)
        elif kind == "partial-hello":
            sock = self._connect()
            sock.sendall(self.hello[: len(self.hello) // 2])
            self._hold(sock)
        elif kind == "handshake-then-silence":
            sock = self._tls()
            self._hold(sock)
        elif kind == "header-trickle":
            sock = self._tls()
            self._hold(sock, trickle=HEAD)
        elif kind == "body-trickle":
            sock = self._tls()
            sock.sendall(HEAD)
            self._hold(sock, trickle=b"{" + b" " * 99_999)
        elif kind == "churn":
            sock = self._connect()
            if self.opened % 2:
                # RST instead of FIN on close.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.sendall(self.hello)
            sock.close()
            time.sleep(0.1)
            return
        sock.close()

    def _loop(self) -> None:
        while self.remaining() > 0:
            try:
                self._one()
            except (OSError, ssl.SSLError, ValueError):
                with self.lock:
                    self.errors += 1
                time.sleep(0.05)

    def run(self) -> dict[str, Any]:
        threads = []
        # Churn opens a connection every 0.1 s per thread: a quarter of the threads make
        # a few hundred connections a second.
        count = self.connections // 4 if self.kind == "churn" else self.connections
        for _ in range(count):
            thread = threading.Thread(target=self._loop, daemon=True)
            thread.start()
            threads.append(thread)
            time.sleep(1.0 / count)  # all open within about a second
        for thread in threads:
            thread.join(max(self.remaining(), 0) + 10)
        return {
            "kind": self.kind,
            "opened": self.opened,
            "closed_by_server": self.closed_by_server,
            "errors": self.errors,
        }


def _attack_process(
    kind: str, port: int, ca_file: str, connections: int, seconds: float, results: Any
) -> None:
    # Each kind from its own loopback address, as each attacking pod has its own.
    source = f"127.0.1.{KINDS.index(kind) + 1}"
    results.put(Attacker(kind, port, ca_file, connections, seconds, source).run())


def launch(
    kinds: tuple[str, ...], port: int, ca_file: str, connections: int, seconds: float
) -> tuple[list[Any], Any]:
    """One process per kind, started now; join them and read the queue afterwards."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(
            target=_attack_process,
            args=(kind, port, ca_file, connections, seconds, results),
            daemon=True,
        )
        for kind in kinds
    ]
    for process in processes:
        process.start()
    return processes, results
