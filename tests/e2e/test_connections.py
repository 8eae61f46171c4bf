"""Connections between a real API server and the webhook: idle keep-alive, restarts,
and a hung webhook.

With failurePolicy Fail, a pooled connection that the webhook closed must never turn
into a refused pod update, and a webhook that hangs must cost at most timeoutSeconds.
These tests need to control the webhook's processes, so they run on the local
control plane; tests/e2e/test_disruptions.py does the same to the webhook's pods on
a real cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import ControlPlane, install_webhook
from tests.e2e.conftest import Webhook, wait_for_enforcement
from tests.e2e.test_enforcement import create_pod
from tests.support.server import (
    TCP_TIME_WAIT,
    Server,
    established_client_ports,
    start_server,
    tcp_sockets,
)
from webhook.settings import API_SERVER_IDLE_TIMEOUT_SECONDS

# The make-test webhook closes idle connections itself after this many seconds; the
# product's 120 s is longer than the API server's own idle timeout.
KEEPALIVE = 3
SOAK = bool(os.environ.get("PRG_SOAK") or os.environ.get("SOAK"))


pytestmark = pytest.mark.local_plane


@pytest.fixture
def short_keepalive_webhook(
    plane: ControlPlane, webhook: Webhook, tmp_path: Path
) -> Iterator[Server]:
    """The shared webhook swapped for one with a short keep-alive, then restored.

    Yielded once the connections the enforcement probes opened are closed, so that no
    update of the test lands on the instant the webhook closes one of them."""
    webhook.stop()
    server = start_server(tmp_path, workers=2, threads=4, env={"PRG_KEEPALIVE": str(KEEPALIVE)})
    bundle = _bundle(server)
    install_webhook(plane, f"{server.url}/validate", bundle)
    wait_for_enforcement(plane)
    deadline = time.monotonic() + KEEPALIVE + 10
    while webhook_connections(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not webhook_connections(server), "the webhook closed its idle connections"
    time.sleep(0.3)  # and the API server has seen them close
    try:
        yield server
    finally:
        server.stop()
        webhook.restart("enforce")


def _bundle(server: Server) -> str:
    import base64

    return base64.b64encode(server.ca_file.read_bytes()).decode()


def _label(plane: ControlPlane, namespace: str, name: str, value: str) -> tuple[bool, str]:
    result = plane.kubectl(
        "-n", namespace, "label", "pod", name, "--overwrite", f"step={value}", check=False
    )
    return result.returncode == 0, result.stderr


def webhook_connections(server: Server) -> set[int]:
    """The API server's ports of the connections the webhook holds open."""
    return set(established_client_ports(server))


def closed_first_by(server: Server, client_port: int) -> str:
    """Which side closed a connection first: that side keeps it in TIME_WAIT."""
    waiting = {(local, remote) for local, remote, _ in tcp_sockets(TCP_TIME_WAIT)}
    if (server.port, client_port) in waiting:
        return "webhook"
    if (client_port, server.port) in waiting:
        return "api-server"
    return "unknown"


def test_idle_connection_closed_by_the_webhook_is_not_reused(
    plane: ControlPlane, short_keepalive_webhook: Server, namespace: str
) -> None:
    """Keep-alive 3 s: an update 0.5 s after the last reuses the API server's pooled
    connection; one KEEPALIVE + 3 s later (gunicorn checks expiry once a second) finds
    it closed by the webhook, and the API server dials anew instead of failing."""
    server = short_keepalive_webhook
    create_pod(plane, namespace, "idle")
    failures = []
    reused = fresh = 0
    ok, stderr = _label(plane, namespace, "idle", "warm")
    failures += [] if ok else [("warm", stderr)]
    for round_ in range(3):
        pooled = webhook_connections(server)
        assert len(pooled) == 1, f"one pooled connection to the webhook, not {pooled}"
        time.sleep(0.5)
        ok, stderr = _label(plane, namespace, "idle", f"r{round_}-soon")
        failures += [] if ok else [("soon", stderr)]
        assert webhook_connections(server) == pooled, "an update 0.5 s later reused it"
        reused += 1
        time.sleep(KEEPALIVE + 3)
        # Gone within seconds, far from Go's 90 s idle timeout: the webhook closed it.
        # (No TIME_WAIT to see here: the webhook's socket is gone when the API
        # server's TLS close_notify arrives, so the kernel answers with a reset.)
        assert webhook_connections(server) == set(), "the webhook closed the idle connection"
        ok, stderr = _label(plane, namespace, "idle", f"r{round_}-late")
        failures += [] if ok else [("late", stderr)]
        after = webhook_connections(server)
        assert len(after) == 1, after
        assert not after & pooled, "a new connection after the close"
        fresh += 1
    print(
        f"\nkeep-alive {KEEPALIVE} s: {reused} updates reused the connection, {fresh} "
        f"dialled anew after the webhook closed it; failed: {len(failures)}"
    )
    assert failures == [], failures
    judged = [
        line
        for line in short_keepalive_webhook.log_lines()
        if line.get("event") == "decision" and line.get("name") == "idle"
    ]
    assert len(judged) == 1 + 2 * 3, "every update reached the webhook"


@pytest.mark.timeout(1200)
def test_soak_updates_around_the_api_servers_idle_timeout(
    plane: ControlPlane, webhook: Webhook, namespace: str
) -> None:
    """With the product's keep-alive (120 s), the API server's 90 s idle timeout comes
    first: it closes the pooled connection itself (race-free, inside Go's pool), so an
    update never meets a connection the webhook is closing. ``make test`` waits past the
    timeout once; ``make soak`` spaces updates just under, at and just over it."""
    assert webhook.server is not None
    server = webhook.server
    idle = API_SERVER_IDLE_TIMEOUT_SECONDS
    gaps = [idle - 5, idle - 0.5, idle, idle + 0.5, idle + 5] if SOAK else [idle + 5]
    create_pod(plane, namespace, "idle-default")
    failures = []
    closers = []
    ok, stderr = _label(plane, namespace, "idle-default", "warm")
    failures += [] if ok else [("warm", stderr)]
    for index, gap in enumerate(gaps):
        pooled = webhook_connections(server)
        assert pooled, "the API server keeps a connection to the webhook"
        time.sleep(gap)
        still_open = webhook_connections(server)
        if gap > idle + 1:
            assert not still_open & pooled, f"idle {gap} s: the API server closed it"
        closers += [closed_first_by(server, client) for client in pooled - still_open]
        ok, stderr = _label(plane, namespace, "idle-default", f"gap-{index}")
        failures += [] if ok else [(f"{gap} s", stderr)]
    print(
        f"\nupdates {gaps} s apart with the default keep-alive: {len(failures)} failed; "
        f"idle connections closed first by: {closers}"
    )
    assert failures == [], failures
    # "unknown": closed more than TIME_WAIT's 60 s ago (an older pooled connection).
    assert "api-server" in closers, closers
    assert "webhook" not in closers, closers


def test_updates_across_worker_restart_and_full_restart(
    plane: ControlPlane, short_keepalive_webhook: Server, namespace: str, tmp_path: Path
) -> None:
    create_pod(plane, namespace, "restarts")
    failures = []
    for step in range(3):
        ok, stderr = _label(plane, namespace, "restarts", f"warm-{step}")
        failures += [] if ok else [stderr]
    # Graceful reload of every worker (what a config reload does), with updates right
    # away: a draining worker keeps its idle connections (closing one races a request
    # the API server may be writing on it) and answers what arrives on them with
    # "Connection: close", so the API server closes each after its answer. Nothing
    # fails, and the old workers' connections are gone once used.
    server = short_keepalive_webhook
    pooled = webhook_connections(server)
    assert pooled
    os.kill(short_keepalive_webhook.process.pid, signal.SIGHUP)
    for step in range(3):
        ok, stderr = _label(plane, namespace, "restarts", f"hup-{step}")
        failures += [] if ok else [stderr]
        time.sleep(0.2)
    used = pooled - webhook_connections(server)
    assert used, "a pooled connection to an old worker was used and then closed"
    # A whole restart on the same port (a rolling update behind a Service): the
    # API server's pooled connections all point at a process that is gone.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copytree(short_keepalive_webhook.cert_dir, again / "certs")
    short_keepalive_webhook.stop()
    replacement = start_server(
        again,
        workers=2,
        threads=4,
        env={"PRG_KEEPALIVE": str(KEEPALIVE)},
        port=short_keepalive_webhook.port,
        generate_certs=False,
    )
    try:
        for step in range(3):
            ok, stderr = _label(plane, namespace, "restarts", f"new-{step}")
            failures += [] if ok else [stderr]
    finally:
        replacement.stop()
    assert failures == [], failures


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_hung_webhook_is_bounded_by_timeout_seconds(
    plane: ControlPlane, webhook: Webhook, namespace: str, policy: str
) -> None:
    create_pod(plane, namespace, "hung")
    timeout_seconds = 2
    webhook.failure_policy = policy
    webhook.install(timeout_seconds=timeout_seconds)
    time.sleep(2)
    assert webhook.server is not None
    pids = [webhook.server.process.pid, *webhook.server.worker_pids()]
    for pid in pids:  # the process is there, accepts TCP, and never answers
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        ok, stderr = _label(plane, namespace, "hung", policy.lower())
        elapsed = time.monotonic() - started
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        webhook.failure_policy = "Fail"
        webhook.install()
    print(f"\nhung webhook, failurePolicy {policy}: kubectl answered after {elapsed:.2f}s, ok={ok}")
    assert elapsed < timeout_seconds + 5, f"the API server waited {elapsed:.1f}s"
    assert elapsed >= timeout_seconds - 0.5, (
        f"answered in {elapsed:.1f}s: the webhook was not waited for"
    )
    if policy == "Fail":
        assert not ok
        assert "failed calling webhook" in stderr, stderr
        assert "deadline" in stderr or "timeout" in stderr.lower(), stderr
    else:
        assert ok, stderr
    wait_for_enforcement(plane)
