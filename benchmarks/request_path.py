"""Where a request's CPU goes inside the app: WSGI calls in process, no server.

Run in a fresh process (as a gunicorn worker is), with prometheus_client in
multiprocess mode and the JSON log going to a file, as in production. Each app gets
the ~20 KB review as a WSGI request and the CPU time per call is measured (median of
short turns, as in :mod:`benchmarks.decision`):

- ``allow_all``: the framework alone (Flask routing, request and response objects);
- ``webhook``: pod-replace-guard's app as served (parse, judge, metrics, decision log);
- ``webhook_no_decision_log``: the same with the decision logger silenced;
- ``decision``: ``orjson.loads`` + ``review`` + ``orjson.dumps`` without the app.

    python -m benchmarks.request_path --out FILE
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, median, quick, rounded

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def _caller(app: Wsgi, raw: bytes) -> Callable[[], None]:
    length = str(len(raw))

    def call() -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/validate",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "https",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": length,
            "wsgi.input": io.BytesIO(raw),
            "wsgi.errors": sys.stderr,
        }
        answer = app(environ, _start_response)
        b"".join(answer)
        close = getattr(answer, "close", None)
        if close is not None:
            close()

    return call


def _turns(function: Callable[[], None], rounds: int, calls: int) -> float:
    for _ in range(calls):
        function()
    samples = []
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(calls):
            function()
        samples.append((time.thread_time() - started) / calls * 1e6)
    return median(samples)


def measure(log_file: Path) -> dict[str, Any]:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(log_file.parent / "request-path-metrics")
    from webhook.gunicorn_app import prepare_metrics_dir

    prepare_metrics_dir()
    import orjson

    from benchmarks import payloads
    from benchmarks.allow_all import create_allow_all_app
    from webhook.app import create_app
    from webhook.logs import configure_logging
    from webhook.policy import answer_review
    from webhook.settings import Settings

    configure_logging("INFO")
    stream = log_file.open("w")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    settings = Settings()
    raw = payloads.realistic_review()

    def decision() -> None:
        answer, _ = answer_review(orjson.loads(raw), settings)
        orjson.dumps(answer)

    rounds, calls = (15, 40) if quick() else (41, 100)
    webhook = _caller(create_app(settings).wsgi_app, raw)
    allow_all = _caller(create_allow_all_app().wsgi_app, raw)
    results: dict[str, list[float]] = {
        "allow_all_us": [],
        "webhook_us": [],
        "webhook_no_decision_log_us": [],
        "decision_us": [],
    }
    decision_logger = logging.getLogger("pod_replace_guard.decision")
    for _ in range(3):  # interleaved repeats
        results["allow_all_us"].append(_turns(allow_all, rounds, calls))
        results["webhook_us"].append(_turns(webhook, rounds, calls))
        decision_logger.setLevel(logging.WARNING)
        results["webhook_no_decision_log_us"].append(_turns(webhook, rounds, calls))
        decision_logger.setLevel(logging.NOTSET)
        results["decision_us"].append(_turns(decision, rounds, calls))
    stream.close()
    got = {key: rounded(median(values), 1) for key, values in results.items()}
    got["app_over_framework_us"] = rounded(got["webhook_us"] - got["allow_all_us"], 1)
    got["decision_log_us"] = rounded(got["webhook_us"] - got["webhook_no_decision_log_us"], 1)
    got["metrics_and_glue_us"] = rounded(
        got["webhook_no_decision_log_us"] - got["allow_all_us"] - got["decision_us"], 1
    )
    got["body_bytes"] = len(raw)
    return got


def run(work_dir: Path) -> dict[str, Any]:
    """Measure in a child process; return its figures."""
    out = work_dir / "request_path.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.request_path", "--out", str(out)],
        cwd=REPO,
        check=True,
        timeout=300,
        env={
            **{
                key: value
                for key, value in os.environ.items()
                if not key.startswith("PRG_") and key != "PROMETHEUS_MULTIPROC_DIR"
            },
            "PROMETHEUS_MULTIPROC_DIR": str(work_dir / "request-path-metrics"),
        },
    )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_path")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    figures = measure(out.with_suffix(".log"))
    out.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
