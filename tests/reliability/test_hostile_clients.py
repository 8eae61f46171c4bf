"""Hostile clients against the real server (gunicorn over TLS, production settings).

Several processes attack at once with hundreds of connections of each kind
(tests/reliability/attack.py: one byte then silence, half a ClientHello, a handshake
then silence, headers and bodies trickled a byte a second, connections opened and
abandoned at a high rate) while legitimate clients keep sending reviews over kept-alive
and new connections and the probes poll /healthz and /readyz. Every legitimate review
must be answered correctly and quickly, every probe must answer, and once the attack
stops the workers' threads, descriptors and memory return to where they were.

Loopback only, bounded in connections and time, stops by itself.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

import pytest

from tests.process.load import LoadClient, join_clients, merged, percentile, run_clients
from tests.reliability import attack
from tests.support.server import Server, free_port, rss_kib, running_server, wait_workers

pytestmark = pytest.mark.process

ATTACK_SECONDS = 20.0
CONNECTIONS_PER_KIND = 200
# Legitimate reviews' p99 during the attack. What matters to the API server is its
# timeoutSeconds (3 s in deploy/): 0.5 s keeps six times that margin and still fails a
# starved server (over 1 s in runs where the attack won). On this 2-core machine the
# p99 measured 180-260 ms, so the earlier 250 ms limit failed a healthy run in CI.
P99_LIMIT = 0.500


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def resources(pids: list[int]) -> dict[int, tuple[int, int, int]]:
    """(descriptors, threads, RSS KiB) of each worker."""
    return {pid: (open_descriptors(pid), thread_count(pid), rss_kib(pid)) for pid in pids}


class Prober(threading.Thread):
    """The kubelet's probes: /healthz and /readyz every 0.5 s, 2 s timeout, over TLS on
    the admission port or plain HTTP on the health port."""

    def __init__(self, server: Server, stop: threading.Event, health_port: int = 0) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.health_port = health_port
        self.stop_event = stop
        self.answers: list[tuple[str, int | str, float]] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            for path in ("/healthz", "/readyz"):
                started = time.monotonic()
                try:
                    conn: http.client.HTTPConnection = (
                        http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=2.0)
                        if self.health_port
                        else self.server.connection(timeout=2.0)
                    )
                    conn.request("GET", path)
                    status: int | str = conn.getresponse().status
                    conn.close()
                except Exception as error:  # a probe that failed, recorded
                    status = repr(error)
                self.answers.append((path, status, time.monotonic() - started))
            self.stop_event.wait(0.5)


def test_connection_exhaustion_attack(tmp_path: Path) -> None:
    health_port = free_port()
    env = {"PRG_HEALTH_BIND": f"127.0.0.1:{health_port}"}
    with running_server(tmp_path, workers=2, threads=8, env=env) as server:
        pids = wait_workers(server, 2)
        # Warm up: the workers' thread pools and first requests.
        warm = threading.Event()
        warmers = [LoadClient(server, warm, max_requests=50) for _ in range(4)]
        run_clients(warmers)
        join_clients(warmers)
        time.sleep(1)
        before = resources(pids)

        processes, results = attack.launch(
            attack.KINDS, server.port, str(server.ca_file), CONNECTIONS_PER_KIND, ATTACK_SECONDS
        )
        time.sleep(3)  # the connections are up
        stop = threading.Event()
        kept_alive = [LoadClient(server, stop, pause=0.02) for _ in range(2)]
        fresh = [LoadClient(server, stop, keepalive=False, pause=0.2)]
        # The probes as deploy/ sends them (the health port), and over the attacked
        # TLS port as well.
        prober = Prober(server, stop, health_port)
        tls_prober = Prober(server, stop)
        run_clients([*kept_alive, *fresh])
        prober.start()
        tls_prober.start()
        time.sleep(ATTACK_SECONDS - 6)
        during = resources(pids)
        stop.set()
        join_clients([*kept_alive, *fresh])
        prober.join(10)
        tls_prober.join(10)
        reports = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(30)

        # Deadlines close what is left within request_timeout (10 s).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            after = resources(pids)
            if all(after[pid][0] <= before[pid][0] + 2 for pid in pids):
                break
            time.sleep(0.5)

    stats = merged([*kept_alive, *fresh])
    kept = merged(kept_alive)
    new = merged(fresh)
    answers = prober.answers + tls_prober.answers
    probes_failed = [answer for answer in answers if answer[1] != 200]
    print(
        f"\n[hostile] attackers: {reports}"
        f"\n[hostile] legitimate reviews: {stats.ok} answered, {len(stats.failures)} failed;"
        f" kept-alive p50 {percentile(kept.latencies, 0.5) * 1000:.1f} ms,"
        f" p99 {percentile(kept.latencies, 0.99) * 1000:.1f} ms;"
        f" new connection p99 {percentile(new.latencies, 0.99) * 1000:.1f} ms"
        f"\n[hostile] probes: {len(answers)}, failed {len(probes_failed)},"
        f" slowest {max(a[2] for a in answers) * 1000:.0f} ms"
        f"\n[hostile] workers (descriptors, threads, RSS KiB): before {before},"
        f" during {during}, after {after}"
    )
    assert sum(r["opened"] for r in reports) >= len(attack.KINDS) * CONNECTIONS_PER_KIND // 2
    assert stats.failures == [], stats.failures[:5]
    assert kept.ok > 100, "the kept-alive clients were served throughout"
    assert new.ok > 10, "new connections got in throughout"
    assert percentile(kept.latencies, 0.99) < P99_LIMIT
    assert percentile(new.latencies, 0.99) < P99_LIMIT
    assert probes_failed == [], probes_failed[:5]
    for pid in pids:
        fds, threads, rss = after[pid]
        assert fds <= before[pid][0] + 2, f"worker {pid}: descriptors {before[pid][0]} -> {fds}"
        # The main thread and at most the pool's 8, created on demand by legitimate
        # requests: no stalled connection ever got a thread of its own.
        assert threads <= 1 + 8, f"worker {pid}: threads {before[pid][1]} -> {threads}"
        assert rss <= before[pid][2] + 40 * 1024, f"worker {pid}: RSS {before[pid][2]} -> {rss}"
