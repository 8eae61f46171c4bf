"""Load clients for the process and reliability suites: plain http.client over TLS in
threads, each checking every answer (status, uid echo, verdict)."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from tests.support.reviews import update_review
from tests.support.server import Server

UID_MARK = "00000000-0000-4000-8000-000000000000"


def _allow(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["image"] = "beego:v2"


def _deny(pod: dict[str, Any]) -> None:
    pod["spec"]["restartPolicy"] = "Never"


def review_templates(pad_bytes: int = 0) -> list[tuple[bytes, bool]]:
    """(AdmissionReview JSON with UID_MARK as uid, expected allowed) pairs.

    ``pad_bytes`` adds that much to both pods (in an annotation), for slow requests.
    """
    templates = []
    for change, allowed in ((_allow, True), (_deny, False)):
        review = update_review(change, uid=UID_MARK)
        if pad_bytes:
            for pod in (review["request"]["object"], review["request"]["oldObject"]):
                pod["metadata"]["annotations"] = {"pad": "p" * (pad_bytes // 2)}
        templates.append((json.dumps(review).encode(), allowed))
    return templates


def peer_serial(sock: Any) -> int:
    der = sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number if der else 0


@dataclass
class Failure:
    at: float  # time.monotonic()
    sent: bool  # False: the connection could not be made (nothing was sent)
    error: str
    port: int  # the client's local port at the time (0 if none)


@dataclass
class Connection:
    """One TLS connection a client made: when it started, its local port, its cert."""

    started: float
    port: int
    serial: int
    requests: int = 0


@dataclass
class LoadStats:
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)

    @property
    def lost(self) -> list[Failure]:
        return [failure for failure in self.failures if failure.sent]

    @property
    def refused(self) -> list[Failure]:
        return [failure for failure in self.failures if not failure.sent]


class LoadClient(threading.Thread):
    """Sends reviews in a loop until ``stop`` is set (or ``max_requests`` are done).

    ``keepalive``: reuse one connection (reconnect only after a failure or a
    ``Connection: close``); otherwise a new TLS connection per request.
    """

    def __init__(
        self,
        server: Server,
        stop: threading.Event,
        *,
        keepalive: bool = True,
        templates: list[tuple[bytes, bool]] | None = None,
        context: ssl.SSLContext | None = None,
        max_requests: int = 0,
        pause: float = 0.0,
        timeout: float = 30.0,
        stop_on_refused: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop_event = stop
        self.keepalive = keepalive
        self.templates = templates or review_templates()
        self.context = context or server.tls_context()
        self.max_requests = max_requests
        self.pause = pause
        self.timeout = timeout
        self.stop_on_refused = stop_on_refused
        self.stats = LoadStats()
        self.port = 0
        self.in_flight = threading.Event()
        self._conn: http.client.HTTPSConnection | None = None

    def _connect(self) -> http.client.HTTPSConnection:
        started = time.monotonic()
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.server.port, context=self.context, timeout=self.timeout
        )
        conn.connect()
        assert conn.sock is not None
        self.port = conn.sock.getsockname()[1]
        self.stats.connections.append(Connection(started, self.port, peer_serial(conn.sock)))
        return conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def run(self) -> None:
        count = 0
        while not self.stop_event.is_set():
            if self.max_requests and count >= self.max_requests:
                break
            template, allowed = self.templates[count % len(self.templates)]
            count += 1
            if self._conn is None:
                try:
                    self._conn = self._connect()
                except (OSError, ssl.SSLError) as error:
                    self.stats.failures.append(Failure(time.monotonic(), False, repr(error), 0))
                    if self.stop_on_refused:
                        break
                    time.sleep(0.05)
                    continue
            uid = str(uuid.uuid4())
            body = template.replace(UID_MARK.encode(), uid.encode())
            started = time.monotonic()
            self.in_flight.set()
            try:
                self._conn.request("POST", "/validate", body, {"Content-Type": "application/json"})
                response = self._conn.getresponse()
                data = response.read()
                closing = response.getheader("Connection", "").lower() == "close"
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
                answer = json.loads(data)["response"]
                if answer["uid"] != uid or answer["allowed"] is not allowed:
                    raise RuntimeError(f"wrong answer {answer} for {uid} allowed={allowed}")
            except (OSError, ssl.SSLError, http.client.HTTPException, RuntimeError) as error:
                self.stats.failures.append(Failure(time.monotonic(), True, repr(error), self.port))
                self._close()
                continue
            finally:
                self.in_flight.clear()
            self.stats.latencies.append(time.monotonic() - started)
            self.stats.ok += 1
            self.stats.uids.append(uid)
            self.stats.connections[-1].requests += 1
            if closing or not self.keepalive:
                self._close()
            if self.pause:
                time.sleep(self.pause)
        self._close()


def run_clients(clients: list[LoadClient]) -> None:
    for client in clients:
        client.start()


def join_clients(clients: list[LoadClient], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for client in clients:
        client.join(max(deadline - time.monotonic(), 0.1))
        assert not client.is_alive(), "a load client did not finish"


def merged(clients: list[LoadClient]) -> LoadStats:
    total = LoadStats()
    for client in clients:
        total.ok += client.stats.ok
        total.latencies += client.stats.latencies
        total.failures += client.stats.failures
        total.connections += client.stats.connections
        total.uids += client.stats.uids
    return total


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]
