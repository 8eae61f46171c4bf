"""The servers of the HTTP benchmark, as real processes over TLS.

- ``webhook``: pod-replace-guard as shipped, ``python -m webhook serve`` with the
  default settings (gthread, 2 workers x 8 threads, keep-alive 120 s).
- ``allow_all``: the same gunicorn options and per-worker certificate reloader,
  serving a Flask app that allows everything without looking
  (:mod:`benchmarks.allow_all`): the framework ceiling.
- ``sync``: the webhook app with the same options under gunicorn's ``sync`` worker
  (one request at a time per worker, the connection closed after every response):
  what naive Flask webhooks ship.
- ``go_floor``: the least a webhook can do (benchmarks/gofloor/, Go ``net/http``, same
  certificate): decode the review, echo its uid, allow. The physical floor.
"""

from __future__ import annotations

import http.client
import itertools
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, children, memory_kib, tree_cpu_seconds
from tests.support.server import free_port, stop_process
from webhook.settings import Settings

WORKERS = Settings().workers


@dataclass(frozen=True)
class ServerKind:
    key: str
    description: str
    module: str  # a Python module run with ``-m``, or GO_FLOOR_MODULE
    extra: tuple[str, ...] = ()

    @property
    def gunicorn(self) -> bool:
        return self.module != GO_FLOOR_MODULE


GO_FLOOR_MODULE = "gofloor"
GO_FLOOR_BUILD = REPO / "benchmarks" / "gofloor" / "build.sh"


WEBHOOK = ServerKind(
    "webhook", "pod-replace-guard, production settings (gthread)", "webhook", ("serve",)
)
ALLOW_ALL = ServerKind(
    "allow_all",
    "allow-all Flask app, same gunicorn options and TLS (gthread)",
    "benchmarks.launcher",
    ("--app", "allow-all"),
)
SYNC = ServerKind(
    "sync",
    "pod-replace-guard app under gunicorn's sync worker",
    "benchmarks.launcher",
    ("--app", "webhook", "--worker-class", "sync"),
)
GO_FLOOR = ServerKind(
    "go_floor", "minimal Go net/http allow-all webhook, same TLS certificate", GO_FLOOR_MODULE
)
KINDS = (WEBHOOK, ALLOW_ALL, SYNC, GO_FLOOR)


class GoUnavailable(RuntimeError):
    """The Go floor could not be built (no Go toolchain)."""


def go_floor_binary() -> str:
    """The Go floor's binary, built (or found cached) by benchmarks/gofloor/build.sh."""
    result = subprocess.run(
        [str(GO_FLOOR_BUILD)], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        raise GoUnavailable(result.stderr.strip() or f"build.sh exit {result.returncode}")
    return result.stdout.strip().splitlines()[-1]


@dataclass
class RunningServer:
    kind: ServerKind
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/validate"

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        """gunicorn's worker processes; the Go floor is one process and its own worker."""
        return children(self.pid) if self.kind.gunicorn else [self.pid]

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def worker_memory(self) -> list[dict[str, int]]:
        return [memory_kib(pid) for pid in self.workers()]

    def get(self, path: str) -> int:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)


def _environment(work_dir: Path, name: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PRG_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["PROMETHEUS_MULTIPROC_DIR"] = str(work_dir / f"metrics-{name}")
    return env


def start(
    kind: ServerKind, work_dir: Path, cert_dir: Path, timeout: float = 60.0, cwd: Path = REPO
) -> RunningServer:
    """Start ``kind`` on a free loopback port; return once every worker is up.

    ``cwd``: the checkout whose ``webhook`` package a gunicorn server imports (``-m``
    puts it first on the path), another revision's for :mod:`benchmarks.compare`."""
    port = free_port()
    log_path = work_dir / f"{kind.key}-{port}.log"
    if kind.gunicorn:
        command = [
            sys.executable, "-m", kind.module, *kind.extra,
            "--bind", f"127.0.0.1:{port}", "--cert-dir", str(cert_dir),
        ]  # fmt: skip
        workers = WORKERS
    else:
        command = [
            go_floor_binary(), "-bind", f"127.0.0.1:{port}",
            "-cert", str(cert_dir / "tls.crt"), "-key", str(cert_dir / "tls.key"),
        ]  # fmt: skip
        workers = 1
    # The decision log goes to a file, as a container runtime's log pipe would take it.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(work_dir, f"{kind.key}-{port}"),
            cwd=cwd,
        )
    server = RunningServer(kind, process, port, cert_dir / "ca.crt", log_path)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{kind.key} exited early:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind.key} not ready:\n{log_path.read_text()[-3000:]}")
            try:
                if server.get("/readyz") == 200 and len(server.workers()) >= workers:
                    return server
            except (OSError, ssl.SSLError, http.client.HTTPException):
                pass
            time.sleep(0.1)
    except BaseException:
        server.stop(5)
        raise


def tcp_counters() -> dict[str, int]:
    """The TCP counters of this network namespace (/proc/net/snmp)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    for header, values in itertools.pairwise(lines):
        if header[0] == "Tcp:" and values[0] == "Tcp:" and not values[1].isalpha():
            return {key: int(value) for key, value in zip(header[1:], values[1:], strict=True)}
    return {}


def describe(server: RunningServer) -> dict[str, Any]:
    return {"server": server.kind.key, "description": server.kind.description}
