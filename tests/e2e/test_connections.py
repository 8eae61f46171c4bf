"""Connections between a real API server and the webhook: idle keep-alive, restarts,
and a hung webhook.

With failurePolicy Fail, a pooled connection that the webhook closed must never turn
into a refused pod update, and a webhook that hangs must cost at most timeoutSeconds.
These tests need to control the webhook's processes, so they run on the local
control plane.
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
from tests.support.server import Server, start_server

KEEPALIVE = 2  # seconds; the product default is 120 (longer than Go's 90 s idle timeout)


@pytest.fixture
def local_only(plane: ControlPlane) -> None:
    if not plane.local:
        pytest.skip("needs to start and signal the webhook process: local control plane only")


@pytest.fixture
def short_keepalive_webhook(
    plane: ControlPlane, webhook: Webhook, local_only: None, tmp_path: Path
) -> Iterator[Server]:
    """The shared webhook swapped for one with a short keep-alive, then restored."""
    webhook.stop()
    server = start_server(tmp_path, workers=2, threads=4, env={"PRG_KEEPALIVE": str(KEEPALIVE)})
    bundle = _bundle(server)
    install_webhook(plane, f"{server.url}/validate", bundle)
    wait_for_enforcement(plane)
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


def test_updates_spaced_around_the_keepalive_timeout(
    plane: ControlPlane, short_keepalive_webhook: Server, namespace: str
) -> None:
    create_pod(plane, namespace, "idle")
    failures = []
    gaps = [KEEPALIVE - 0.1, KEEPALIVE, KEEPALIVE + 0.1, KEEPALIVE - 0.05, KEEPALIVE + 0.05]
    for round_ in range(3):
        for index, gap in enumerate(gaps):
            time.sleep(gap)
            ok, stderr = _label(plane, namespace, "idle", f"r{round_}-{index}")
            if not ok:
                failures.append((gap, stderr))
    print(f"\n{3 * len(gaps)} updates spaced {gaps} s apart: {len(failures)} failed")
    assert failures == [], failures
    judged = [
        line for line in short_keepalive_webhook.log_lines() if line.get("event") == "decision"
    ]
    assert len(judged) >= 3 * len(gaps), "the updates did reach the webhook"


def test_updates_across_worker_restart_and_full_restart(
    plane: ControlPlane, short_keepalive_webhook: Server, namespace: str, tmp_path: Path
) -> None:
    create_pod(plane, namespace, "restarts")
    failures = []
    for step in range(3):
        ok, stderr = _label(plane, namespace, "restarts", f"warm-{step}")
        failures += [] if ok else [stderr]
    # Graceful reload of every worker (what a config reload does): pooled
    # connections to the old workers are closed.
    os.kill(short_keepalive_webhook.process.pid, signal.SIGHUP)
    time.sleep(1.5)
    for step in range(3):
        ok, stderr = _label(plane, namespace, "restarts", f"hup-{step}")
        failures += [] if ok else [stderr]
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
    plane: ControlPlane, webhook: Webhook, local_only: None, namespace: str, policy: str
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
