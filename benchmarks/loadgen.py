"""The load generator: wrk (a separate C process) with a fixed number of keep-alive
connections, bounded in time, driven by a generated Lua script.

The script sends the given request bodies in turn, counts responses that close the
connection (``Connection: close``, after which wrk opens a new connection and so a
new TLS handshake) and non-200 answers, can stop after a number of responses, can
pace each connection with exponentially distributed think times, and prints one JSON
line with the summary and latency percentiles (as measured by wrk, from the first
byte written to the last byte read).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "WRK_JSON "

_SCRIPT_HEAD = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  stop_after = tonumber(args[1])
  mean_delay = tonumber(args[2])
  requests_ = {}
  for i = 3, #args do
    local file = assert(io.open(args[i], "rb"))
    local body = file:read("*a")
    file:close()
    requests_[#requests_ + 1] = wrk.format(
      "POST", "/validate", {["Content-Type"] = "application/json"}, body)
  end
  sent = 0
  responses = 0
  closes = 0
  bad = 0
end

function request()
  sent = sent + 1
  return requests_[(sent - 1) % #requests_ + 1]
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then bad = bad + 1 end
  local connection = headers["Connection"] or headers["connection"]
  if connection and string.lower(connection) == "close" then closes = closes + 1 end
  if stop_after > 0 and responses >= stop_after then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local total_responses, total_closes, total_bad = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_responses = total_responses + thread:get("responses")
    total_closes = total_closes + thread:get("closes")
    total_bad = total_bad + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"min": %.0f, "mean": %.1f, "max": %.0f, "p50": %.0f, "p90": %.0f, ' ..
    '"p99": %.0f, "p999": %.0f}, "responses": %.0f, "close_responses": %.0f, "non_200": %.0f}\n',
    "MARKER", summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    total_responses, total_closes, total_bad))
end
""".replace('"MARKER"', json.dumps(MARKER))

# Defined only when pacing is asked for: with a delay() function wrk goes through a
# timer for every request, even a zero one.
_SCRIPT_DELAY = r"""
function delay()
  return math.floor(-math.log(1 - math.random()) * mean_delay + 0.5)
end
"""


class LoadGeneratorMissing(RuntimeError):
    pass


def available() -> bool:
    return shutil.which("wrk") is not None


@dataclass
class LoadResult:
    connections: int
    duration_s: float
    requests: int
    close_responses: int
    non_200: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "latency_ms": self.latency_ms,
            "close_responses": self.close_responses,
            "non_200": self.non_200,
            "errors": self.errors,
            "client_cpu_ms_per_request": round(self.client_cpu_s * 1000 / max(self.requests, 1), 4),
        }


def run(
    url: str,
    bodies: list[Path],
    *,
    connections: int,
    duration: float,
    stop_after: int = 0,
    mean_delay_ms: float = 0.0,
    threads: int = 1,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Run wrk against ``url`` (…/validate) until ``duration`` or ``stop_after`` answers."""
    if not available():
        raise LoadGeneratorMissing("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(_SCRIPT_HEAD + (_SCRIPT_DELAY if mean_delay_ms > 0 else ""))
        script = Path(handle.name)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "-s",
        str(script),
        url,
        "--",
        str(stop_after),
        str(mean_delay_ms),
        *(str(body) for body in bodies),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    finally:
        script.unlink(missing_ok=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((text for text in result.stdout.splitlines() if text.startswith(MARKER)), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({result.returncode}) after {wall:.1f}s:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    data = json.loads(line[len(MARKER) :])
    latency = data["latency_us"]
    return LoadResult(
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        close_responses=int(data["close_responses"]),
        non_200=int(data["non_200"]),
        errors={key: int(value) for key, value in data["errors"].items()},
        latency_ms={key: round(value / 1000, 3) for key, value in latency.items()},
        client_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )


def run_count(
    url: str,
    bodies: list[Path],
    *,
    connections: int,
    count: int,
    chunk_s: float = 5.0,
    max_s: float = 900.0,
) -> LoadResult:
    """Exactly ``count`` responses (or as many as ``max_s`` allows), in wrk runs of
    ``chunk_s`` seconds: wrk's threads stop at the count but its clock runs to the end
    of ``-d``, so short runs waste little time."""
    total = LoadResult(connections, 0.0, 0, 0, 0, {}, {}, 0.0)
    started = time.monotonic()
    while total.requests < count and time.monotonic() - started < max_s:
        part = run(
            url,
            bodies,
            connections=connections,
            duration=chunk_s,
            stop_after=count - total.requests,
        )
        total.requests += part.requests
        total.duration_s += part.duration_s
        total.close_responses += part.close_responses
        total.non_200 += part.non_200
        total.client_cpu_s += part.client_cpu_s
        for key, value in part.errors.items():
            total.errors[key] = total.errors.get(key, 0) + value
        total.latency_ms = part.latency_ms
        if part.requests == 0:
            break
    return total
