"""Two or more versions of the webhook side by side, on the same machine at the same time.

Figures taken on different days are on different machines here (docs/benchmarks.md:
the same code gave 0.36 and 0.49 ms of CPU per review on two of them), so whether a
change helps is measured against the code before it, in one run:

    python -m benchmarks.compare 063f2c4 HEAD    # git revisions; WORKTREE: the files as they are
    python -m benchmarks.compare --out FILE --rounds 3 --cold 1500 main WORKTREE

Each revision is checked out into a temporary ``git worktree`` and served with
``python -m webhook serve`` (production settings) from there; the Go floor is served
beside them when Go is there. Two measures, the versions taking turns:

- **saturated**: wrk with 16 kept-alive connections on the ~20 KB review, a 2 s
  warm-up then ``--seconds``, one version after the other, ``--rounds`` times: req/s and
  server CPU per review;
- **one at a time** (``--cold``): one kept-alive connection per server, one review
  each in a shuffled turn with 10 ms pauses, so every review finds its server idle, as
  behind an API server at low load: p50/p90 latency and CPU per review.

Everything talks to 127.0.0.1, is bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import loadgen, payloads, servers
from benchmarks.common import REPO, log, median, percentile, rounded, tree_cpu_seconds
from webhook.certs import write_certificates

WORKTREE = "WORKTREE"
PAUSE_SECONDS = 0.01
JSON = "application/json"


@dataclass
class Served:
    label: str
    pid: int
    port: int
    connection: http.client.HTTPSConnection | None = None


@contextlib.contextmanager
def checkouts(revisions: Sequence[str], work: Path) -> Iterator[list[tuple[str, Path]]]:
    """A directory of each revision's files (WORKTREE: this checkout as it is)."""
    trees: list[tuple[str, Path]] = []
    added: list[Path] = []
    try:
        for index, revision in enumerate(revisions):
            if revision == WORKTREE:
                trees.append((revision, REPO))
                continue
            tree = work / f"tree-{index}"
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(tree), revision],
                cwd=REPO,
                check=True,
                timeout=120,
            )
            added.append(tree)
            trees.append((revision, tree))
        yield trees
    finally:
        for tree in added:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)],
                cwd=REPO,
                check=False,
                timeout=120,
            )


def _connect(port: int, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)


def _review(connection: http.client.HTTPSConnection, body: bytes) -> float:
    started = time.perf_counter()
    connection.request("POST", "/validate", body=body, headers={"Content-Type": JSON})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"answer {response.status}")
    return (time.perf_counter() - started) * 1000


def saturated(served: list[Served], body_file: Path, rounds: int, seconds: float) -> dict[str, Any]:
    figures: dict[str, dict[str, list[float]]] = {
        s.label: {"rps": [], "cpu_ms": []} for s in served
    }
    for round_index in range(rounds):
        for server in served:
            url = f"https://127.0.0.1:{server.port}/validate"
            loadgen.run(url, [body_file], connections=16, duration=2)
            before = tree_cpu_seconds(server.pid)
            result = loadgen.run(url, [body_file], connections=16, duration=seconds)
            cpu_ms = (tree_cpu_seconds(server.pid) - before) * 1000 / max(result.requests, 1)
            figures[server.label]["rps"].append(rounded(result.rps, 1))
            figures[server.label]["cpu_ms"].append(rounded(cpu_ms, 4))
            log(
                f"compare: round {round_index + 1} {server.label}: {result.rps:,.0f} req/s, "
                f"{cpu_ms:.3f} ms CPU per review"
            )
    return {
        label: {
            **values,
            "rps_median": median(values["rps"]),
            "cpu_ms_median": median(values["cpu_ms"]),
        }
        for label, values in figures.items()
    }


def one_at_a_time(served: list[Served], body: bytes, count: int) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {s.label: [] for s in served}
    for _ in range(20):  # warm-up
        for server in served:
            assert server.connection is not None
            _review(server.connection, body)
            time.sleep(PAUSE_SECONDS)
    before = {s.label: tree_cpu_seconds(s.pid) for s in served}
    for _ in range(count):
        for server in random.sample(served, len(served)):
            assert server.connection is not None
            latencies[server.label].append(_review(server.connection, body))
            time.sleep(PAUSE_SECONDS)
    after = {s.label: tree_cpu_seconds(s.pid) for s in served}
    return {
        s.label: {
            "p50_ms": rounded(median(latencies[s.label])),
            "p90_ms": rounded(percentile(latencies[s.label], 0.9)),
            "cpu_ms": rounded((after[s.label] - before[s.label]) * 1000 / count),
        }
        for s in served
    }


def run(revisions: Sequence[str], rounds: int, seconds: float, cold: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="prg-compare-") as temporary:
        work = Path(temporary)
        certs = work / "certs"
        write_certificates(certs, "pod-replace-guard", "pod-replace-guard")
        body = payloads.realistic_review()
        body_file = work / "review.json"
        body_file.write_bytes(body)
        running: list[servers.RunningServer] = []
        with checkouts(revisions, work) as trees:
            try:
                served: list[Served] = []
                for label, tree in trees:
                    server = servers.start(servers.WEBHOOK, work, certs, cwd=tree)
                    running.append(server)
                    served.append(Served(f"{len(served)}:{label}", server.pid, server.port))
                floor: servers.RunningServer | None = None
                with contextlib.suppress(servers.GoUnavailable):
                    floor = servers.start(servers.GO_FLOOR, work, certs)
                    running.append(floor)
                context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
                for entry in served:
                    entry.connection = _connect(entry.port, context)
                result: dict[str, Any] = {"revisions": list(revisions)}
                if rounds:
                    result["saturated"] = saturated(served, body_file, rounds, seconds)
                if cold:
                    cold_served = served + (
                        [Served("go_floor", floor.pid, floor.port, _connect(floor.port, context))]
                        if floor
                        else []
                    )
                    result["one_at_a_time"] = one_at_a_time(cold_served, body, cold)
                return result
            finally:
                for server in running:
                    server.stop(10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare")
    parser.add_argument("revisions", nargs="+", help=f"git revisions, or {WORKTREE}")
    parser.add_argument("--rounds", type=int, default=3, help="saturated rounds (0: none)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per saturated run")
    parser.add_argument("--cold", type=int, default=1500, help="reviews one at a time (0: none)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if not loadgen.available() and args.rounds:
        parser.error("wrk is not installed (apt-get install wrk); or --rounds 0")
    result = run(args.revisions, args.rounds, args.seconds, args.cold)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
