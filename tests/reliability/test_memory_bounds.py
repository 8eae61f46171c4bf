"""Memory under the worst reviews the limits allow: no mix gets the pod OOM-killed.

Every thread of every worker (production settings: 2 workers x 8 threads) busy with
maximum-size hostile reviews: just under the body limit, made of hundreds of thousands
of made-up keys, the costliest shape to decode and compare. The whole process tree's
resident memory (gunicorn's arbiter and its workers, what the container's memory limit
counts) is sampled throughout; its peak must stay under the memory limit of
deploy/base/deployment.yaml with a margin. Then the decision log line of such a review
is bounded like its denial message.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.support.reviews import example_pod, make_review
from tests.support.server import (
    Server,
    decision_lines,
    read_response,
    rss_kib,
    running_server,
    tls_socket,
    wait_workers,
)
from webhook.app import MAX_LOGGED_VIOLATIONS
from webhook.settings import Settings

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]
WORKERS, THREADS = 2, 8
ROUNDS = 2
MARGIN = 0.9  # of the limit: room for what a 20 ms sample can miss


def memory_limit_bytes() -> int:
    for doc in yaml.safe_load_all((REPO / "deploy/base/deployment.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            limit = str(container["resources"]["limits"]["memory"])
            assert limit.endswith("Mi"), limit
            return int(limit[:-2]) * 1024 * 1024
    raise AssertionError("no Deployment in deploy/base/deployment.yaml")


def hostile_review(max_body: int) -> bytes:
    """Just under the body limit, every byte spent on made-up keys, half of them changed."""
    old, new = example_pod(), example_pod()
    keys = (max_body - 40_000) // 16  # '"k00000000":"a",' is 16 bytes
    old["spec"]["nodeSelector"] = {f"k{index:08d}": "a" for index in range(keys // 2)}
    new["spec"]["nodeSelector"] = {f"k{index:08d}": "b" for index in range(keys // 2)}
    body = json.dumps(make_review(old, new, uid="UID"), separators=(",", ":")).encode()
    assert max_body * 0.9 < len(body) <= max_body, len(body)
    return body


def tree_rss_kib(server: Server) -> int:
    total = rss_kib(server.process.pid)
    for pid in server.worker_pids():
        with contextlib.suppress(OSError, RuntimeError):  # a worker that just exited
            total += rss_kib(pid)
    return total


def test_every_thread_busy_with_maximum_size_reviews(tmp_path: Path) -> None:
    limit = memory_limit_bytes()
    body = hostile_review(Settings().max_body_bytes)
    env = {"PRG_WORKERS": str(WORKERS), "PRG_THREADS": str(THREADS)}
    with running_server(tmp_path, workers=WORKERS, threads=THREADS, env=env) as server:
        wait_workers(server, WORKERS)
        baseline = tree_rss_kib(server)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, tree_rss_kib(server))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        statuses: list[int | str] = []
        uids: list[str] = []

        def client() -> None:
            for _ in range(ROUNDS):
                uid = str(uuid.uuid4())
                uids.append(uid)
                data = body.replace(b'"UID"', json.dumps(uid).encode(), 1)
                head = (
                    "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                ).encode()
                try:
                    with tls_socket(server, timeout=180) as sock:
                        sock.sendall(head + data)
                        statuses.append(read_response(sock.makefile("rb")).status)
                except Exception as error:  # recorded, asserted below
                    statuses.append(repr(error))

        started = time.monotonic()
        clients = [threading.Thread(target=client) for _ in range(WORKERS * THREADS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(600)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(5)
        lines = [line for line in decision_lines(server) if line.get("uid") in set(uids)]

    print(
        f"\n[memory] {WORKERS * THREADS} clients x {ROUNDS} reviews of {len(body) / 2**20:.2f} MiB"
        f" ({elapsed:.1f} s): process tree RSS {baseline / 1024:.0f} MiB at rest,"
        f" peak {peak / 1024:.0f} MiB; limit {limit / 2**20:.0f} MiB"
    )
    assert statuses == [200] * (WORKERS * THREADS * ROUNDS), statuses
    assert peak * 1024 < limit * MARGIN, f"peak {peak / 1024:.0f} MiB"
    assert len(lines) == len(uids), "every decision logged once"
    for line in lines:
        assert line["allowed"] is False
        assert len(line["violations"]) == MAX_LOGGED_VIOLATIONS
        assert line["violations_total"] > 100_000
        assert len(json.dumps(line)) < 10_000, "the log line is bounded"
