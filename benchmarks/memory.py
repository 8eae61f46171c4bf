"""4. Memory over time: RSS per worker after 1k and after 100k requests.

The production server (``python -m webhook serve``, defaults) is fed a mix of the
~20 KB review allowed, the same review denied (a finalizer and an owner added: the
denial message, violation metrics and warning paths) and a CREATE that is skipped,
by wrk with a fixed number of keep-alive connections, stopping after an exact number
of responses. Quick mode stops at 10k instead of 100k and says so in the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import loadgen, servers
from benchmarks.common import log, quick, ratio, rounded
from benchmarks.http_tls import CONNECTIONS, running, write_bodies
from webhook.certs import write_certificates

FIRST = 1_000


def _snapshot(server: servers.RunningServer, served: int) -> dict[str, Any]:
    memory = server.worker_memory()
    return {
        "requests": served,
        "worker_rss_mib": [rounded(item["rss_kib"] / 1024, 2) for item in memory],
        "worker_pss_mib": [rounded(item["pss_kib"] / 1024, 2) for item in memory],
        "workers": server.workers(),
    }


def run(work_dir: Path) -> dict[str, Any]:
    total = 10_000 if quick() else 100_000
    cert_dir = work_dir / "certs"
    write_certificates(cert_dir, "pod-replace-guard", "pod-replace-guard")
    bodies = write_bodies(work_dir)
    mix = [bodies["realistic"], bodies["denied"], bodies["realistic"], bodies["create"]]
    log(f"memory: RSS per worker after {FIRST} and after {total} requests")
    with running(servers.WEBHOOK, work_dir, cert_dir) as server:
        first = loadgen.run_count(server.url, mix, connections=CONNECTIONS, count=FIRST, chunk_s=2)
        early = _snapshot(server, first.requests)
        rest = loadgen.run_count(
            server.url, mix, connections=CONNECTIONS, count=total - first.requests, chunk_s=5
        )
        late = _snapshot(server, first.requests + rest.requests)
        restarted = sorted(early["workers"]) != sorted(late["workers"])
    before = sum(early["worker_rss_mib"])
    after = sum(late["worker_rss_mib"])
    growth = ratio(after, before)
    per_worker = [
        rounded(ratio(b, a))
        for a, b in zip(early["worker_rss_mib"], late["worker_rss_mib"], strict=False)
    ]
    log(
        f"memory: {before:.1f} MiB -> {after:.1f} MiB "
        f"over {late['requests']} requests ({growth:.3f}x)"
    )
    return {
        "growth_ratio": rounded(growth),
        "growth_ratio_per_worker": per_worker,
        "requests_total": late["requests"],
        "requests_target": total,
        "quick_mode_fewer_requests": total < 100_000,
        "after_1k": early,
        "after_total": late,
        "workers_restarted": restarted,
        "non_200": first.non_200 + rest.non_200,
        "rps": rounded(rest.rps, 1),
        "mix": ["allowed ~20 KB UPDATE", "denied ~20 KB UPDATE", "allowed", "CREATE (skipped)"],
    }
