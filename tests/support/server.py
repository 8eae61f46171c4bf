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
    # Presented by tls_context() (and so connection/get/post_review) when set: for
    # servers started with --client-ca.
    client_cert: tuple[Path, Path] | None = None
    # The plain-HTTP health port, for servers started by running_server_with_health().
    health_port: int | None = None

    @property
    def ca_file(self) -> Path:
        return self.cert_dir / "ca.crt"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls_context(self, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        client_cert = client_cert or self.client_cert
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
        return stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout`` for a graceful exit, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


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
    port: int | None = None,
    client_cert: tuple[Path, Path] | None = None,
) -> Server:
    """Start the webhook as users do (``python -m webhook serve``) and wait until ready."""
    cert_dir = work_dir / "certs"
    if generate_certs:
        write_certificates(cert_dir, "pod-replace-guard", "pod-replace-guard")
    port = port or free_port()
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
    server = Server(process, port, cert_dir, log_path, full_env, client_cert)
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


@contextlib.contextmanager
def running_server_with_health(work_dir: Path, request_timeout: float) -> Iterator[Server]:
    """One worker, its plain-HTTP health port on (``Server.health_port``) and a short
    request timeout: what the hostile-request suites send their bytes to."""
    health = free_port()
    env = {"PRG_HEALTH_BIND": f"127.0.0.1:{health}", "PRG_REQUEST_TIMEOUT": f"{request_timeout:g}"}
    with running_server(work_dir, workers=1, env=env) as started:
        started.health_port = health
        yield started


def client_socket(server: Server, tls: bool, timeout: float = 5.0) -> socket.socket:
    """A connection to the admission port over TLS, or to the plain health port."""
    if tls:
        return tls_socket(server, timeout=timeout)
    assert server.health_port, "started without its health port"
    return socket.create_connection(("127.0.0.1", server.health_port), timeout=timeout)


# --- Raw HTTP, worker discovery and log reading for the process and reliability suites ---


@dataclass
class RawResponse:
    """An HTTP response read off a raw socket (see :func:`read_response`)."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    version: str = "HTTP/1.1"

    def json(self) -> Any:
        return json.loads(self.body)


class ResponseError(Exception):
    """The bytes on the socket are not an HTTP response (or the peer closed early)."""


def _read_line(reader: Any, limit: int = 65536) -> bytes:
    line: bytes = reader.readline(limit)
    if not line:
        raise ResponseError("connection closed before a complete response")
    return line


def read_response(reader: Any) -> RawResponse:
    """Read one HTTP/1.x response from a buffered binary reader (``sock.makefile("rb")``).

    Unlike http.client this neither retries nor hides anything, and several
    pipelined responses can be read one after another from the same reader.
    """
    status_line = _read_line(reader).decode("latin-1").rstrip("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ResponseError(f"not an HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = _read_line(reader).decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(_read_line(reader).split(b";")[0].strip(), 16)
            if size == 0:
                while _read_line(reader).strip():
                    pass
                break
            chunks.append(reader.read(size))
            reader.read(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        body = reader.read(length)
        if len(body) != length:
            raise ResponseError("connection closed inside the response body")
    elif headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
        body = reader.read()
    return RawResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body, parts[0])


def client_tls_context(
    ca_file: Path, client_cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    """A client context that trusts ``ca_file`` (what the API server's caBundle does)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if client_cert:
        context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return context


def tls_socket(
    server: Server, context: ssl.SSLContext | None = None, timeout: float = 10.0
) -> ssl.SSLSocket:
    """A TLS connection to ``server`` (handshake done)."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        return (context or server.tls_context()).wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def raw_exchange(
    server: Server,
    data: bytes,
    *,
    responses: int = 1,
    timeout: float = 20.0,
    context: ssl.SSLContext | None = None,
) -> list[RawResponse]:
    """Send ``data`` as is over a fresh TLS connection; read ``responses`` responses."""
    with tls_socket(server, context, timeout) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        try:
            return [read_response(reader) for _ in range(responses)]
        finally:
            reader.close()


def http_request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """The bytes of one request; Host and Content-Length are added unless given."""
    all_headers = {"Host": "127.0.0.1"}
    if body or method in ("POST", "PUT"):
        all_headers["Content-Length"] = str(len(body))
    all_headers.update(headers or {})
    lines = [f"{method} {path} {version}"]
    lines += [f"{name}: {value}" for name, value in all_headers.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def wait_workers(server: Server, count: int, timeout: float = 30.0) -> list[int]:
    """The worker pids, once ``count`` workers have booted (gunicorn boots them in turn)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = server.worker_pids()
        if len(pids) >= count and all(Path(f"/proc/{pid}").exists() for pid in pids):
            # gunicorn logs each worker's boot; until then its pid may still change.
            booted = {
                line.get("message", "").rsplit(" ", 1)[-1].rstrip(")")
                for line in server.log_lines()
                if str(line.get("message", "")).startswith("Booting worker with pid")
            }
            if all(str(pid) in booted for pid in pids):
                return sorted(pids)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers not up in {timeout}s (have {pids})")
        time.sleep(0.05)


def decision_lines(server: Server) -> list[dict[str, Any]]:
    """The server's admission-decision log lines (one per answered review)."""
    return [line for line in server.log_lines() if line.get("event") == "decision"]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


TCP_ESTABLISHED, TCP_TIME_WAIT = "01", "06"  # state codes of /proc/net/tcp


def tcp_sockets(state: str) -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of this host's TCP sockets in ``state``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == state:
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    found.append((local_port, remote_port, int(fields[9])))
    return found


def _server_socket_inodes(port: int) -> dict[int, int]:
    """Server-side TCP sockets on loopback ``port``: {client port: socket inode}."""
    return {remote: inode for local, remote, inode in tcp_sockets(TCP_ESTABLISHED) if local == port}


def connection_owners(server: Server, client_ports: list[int]) -> dict[int, int | None]:
    """Which worker pid holds the server end of each client connection (by client port)."""
    inodes = _server_socket_inodes(server.port)
    by_inode: dict[int, int] = {}
    for pid in server.worker_pids():
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        by_inode[int(target[8:-1])] = pid
    return {port: by_inode.get(inodes.get(port, -1)) for port in client_ports}


def established_client_ports(server: Server) -> list[int]:
    """Client ports of every established connection to ``server`` right now."""
    return sorted(_server_socket_inodes(server.port))
