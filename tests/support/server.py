"""A real ``python -m webhook serve`` (gunicorn over TLS) on a free loopback port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webhook.certs import write_certificates

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.crt"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls_context(self, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert:
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        return context

    def connection(self, timeout: float = 10.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.tls_context(), timeout=timeout
        )

    def post_review(
        self, review: Any, conn: http.client.HTTPSConnection | None = None
    ) -> tuple[int, dict[str, Any]]:
        own = conn is None
        conn = conn or self.connection()
        try:
            body = review if isinstance(review, bytes) else json.dumps(review).encode()
            conn.request("POST", "/validate", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else {}
        finally:
            if own:
                conn.close()

    def get(self, path: str) -> tuple[int, bytes]:
        conn = self.connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_path.read_text()[-3000:]}")
        try:
            status, _ = server.get("/readyz")
            if status == 200:
                return
        except (OSError, ssl.SSLError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in {timeout}s:\n{server.log_path.read_text()[-3000:]}")


def start_server(
    work_dir: Path,
    *,
    workers: int = 2,
    threads: int = 4,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    generate_certs: bool = True,
) -> Server:
    """Start the webhook as users do (``python -m webhook serve``) and wait until ready."""
    cert_dir = work_dir / "certs"
    if generate_certs:
        write_certificates(cert_dir, "pod-replace-guard", "pod-replace-guard")
    port = free_port()
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PRG_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    full_env.update(
        {
            "PRG_WORKERS": str(workers),
            "PRG_THREADS": str(threads),
            "PROMETHEUS_MULTIPROC_DIR": str(work_dir / "metrics"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    log_path = work_dir / f"server-{port}.log"
    command = [
        sys.executable, "-m", "webhook", "serve",
        "--bind", f"127.0.0.1:{port}", "--cert-dir", str(cert_dir), *(args or []),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO
        )
    server = Server(process, port, cert_dir, log_path, full_env)
    try:
        wait_ready(server)
    except BaseException:
        server.stop(5)
        raise
    return server


@contextlib.contextmanager
def running_server(work_dir: Path, **kwargs: Any) -> Iterator[Server]:
    server = start_server(work_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop()
