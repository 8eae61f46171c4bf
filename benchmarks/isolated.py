"""Run the loopback parts (HTTP, memory) in a private network namespace.

In a namespace of its own (``unshare --net``, root only) the benchmark's loopback
carries nothing but its own traffic, so the kernel's TCP counters give the exact
number of connections (TLS handshakes) the servers accepted, and no port or load
from other tests on the machine can collide with ours. Where a namespace cannot be
made, the same code runs in the current one and the handshake count comes from wrk.

    python -m benchmarks.isolated --sections http,memory --out FILE [--netns]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, log

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def loopback_up() -> None:
    """``ip link set lo up`` without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def can_unshare() -> bool:
    if os.environ.get("BENCH_NO_NETNS", "") not in ("", "0") or shutil.which("unshare") is None:
        return False
    try:
        result = subprocess.run(
            ["unshare", "--net", "--", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _sections(names: Sequence[str], work_dir: Path, isolated: bool) -> dict[str, Any]:
    from benchmarks import http_tls, memory

    results: dict[str, Any] = {}
    for name in names:
        section_dir = work_dir / name
        section_dir.mkdir(parents=True, exist_ok=True)
        if name == "http":
            results[name] = http_tls.run(section_dir, isolated)
        elif name == "memory":
            results[name] = memory.run(section_dir)
        else:
            raise ValueError(f"unknown section {name}")
    return results


def run_sections(names: Sequence[str], work_dir: Path, timeout: float) -> dict[str, Any]:
    """Run ``names`` in a child process, in a private network namespace if possible."""
    out = work_dir / "isolated.json"
    isolated = can_unshare()
    prefix = ["unshare", "--net", "--"] if isolated else []
    command = [
        *prefix, sys.executable, "-m", "benchmarks.isolated",
        "--sections", ",".join(names), "--out", str(out), "--work-dir", str(work_dir),
    ]  # fmt: skip
    if isolated:
        command.append("--netns")
    else:
        log(
            "no private network namespace (unshare --net unavailable, or BENCH_NO_NETNS): "
            "sharing loopback"
        )
    # Its own process group, so that a timeout stops the child and every server it started.
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        raise RuntimeError(f"benchmark sections {names} did not finish in {timeout:.0f}s") from None
    if code != 0 or not out.exists():
        raise RuntimeError(f"benchmark sections {names} failed (exit {code})")
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.isolated")
    parser.add_argument("--sections", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--netns", action="store_true", help="already in a private namespace")
    args = parser.parse_args(argv)
    if args.netns:
        loopback_up()
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work_dir = Path(args.work_dir)
        else:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prg-bench-")))
        results = _sections(args.sections.split(","), work_dir, args.netns)
    Path(args.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
