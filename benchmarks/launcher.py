"""Serve a baseline with the production gunicorn configuration.

    python -m benchmarks.launcher --app allow-all --bind 127.0.0.1:PORT --cert-dir DIR
    python -m benchmarks.launcher --app webhook --worker-class sync ...

The options are ``webhook.gunicorn_app.gunicorn_options(settings)`` unchanged (workers,
threads, keep-alive, TLS from the same per-worker certificate reloader) except for the
worker class when one is given, so a difference in the
figures comes from the app or the worker class alone. The production webhook itself
is measured as users run it, with ``python -m webhook serve``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from flask import Flask

from benchmarks.allow_all import create_allow_all_app
from webhook.gunicorn_app import (
    Readiness,
    WebhookApplication,
    gunicorn_options,
    prepare_metrics_dir,
    webhook_app,
)
from webhook.logs import configure_logging
from webhook.settings import Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launcher")
    parser.add_argument("--app", choices=("webhook", "allow-all"), required=True)
    parser.add_argument(
        "--worker-class",
        default=None,
        help="webhook.serving.worker.GuardedWorker (default), gthread (gunicorn's own) or sync",
    )
    parser.add_argument("--bind", required=True)
    parser.add_argument("--cert-dir", required=True)
    args = parser.parse_args(argv)

    settings = load_settings(overrides={"bind": args.bind, "cert_dir": args.cert_dir})
    configure_logging(settings.log_level)
    prepare_metrics_dir()
    options = gunicorn_options(settings)
    if args.worker_class:
        options["worker_class"] = args.worker_class
    if args.worker_class == "sync":
        # gunicorn silently runs gthread for "sync" when threads > 1.
        options["threads"] = 1
    options["proc_name"] = f"prg-bench-{args.app}"

    def allow_all(settings: Settings, readiness: Readiness) -> Flask:
        return create_allow_all_app()

    factory = webhook_app if args.app == "webhook" else allow_all
    WebhookApplication(settings, options, factory).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
