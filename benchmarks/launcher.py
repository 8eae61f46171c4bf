"""Serve a baseline with the production gunicorn configuration.

    python -m benchmarks.launcher --app allow-all --bind 127.0.0.1:PORT --cert-dir DIR
    python -m benchmarks.launcher --app webhook --worker-class sync ...

The options are ``webhook.serving.gunicorn_options(settings)`` unchanged (workers,
threads, keep-alive, TLS through the same ``ssl_context`` hook and certificate
reloader) except for the worker class when one is given, so a difference in the
figures comes from the app or the worker class alone. The production webhook itself
is measured as users run it, with ``python -m webhook serve``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from flask import Flask

from benchmarks.allow_all import create_allow_all_app
from webhook.observe import configure_logging
from webhook.serving import gunicorn_options, prepare_metrics_dir, process_reloader, worker_app
from webhook.settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launcher")
    parser.add_argument("--app", choices=("webhook", "allow-all"), required=True)
    parser.add_argument(
        "--worker-class",
        default=None,
        help="webhook.worker.GuardedWorker (default), gthread (gunicorn's own) or sync",
    )
    parser.add_argument("--bind", required=True)
    parser.add_argument("--cert-dir", required=True)
    args = parser.parse_args(argv)

    settings = load_settings(overrides={"bind": args.bind, "cert_dir": args.cert_dir})
    configure_logging(settings.log_level)
    prepare_metrics_dir()
    options = gunicorn_options(settings)
    production_settings = settings
    if args.worker_class:
        options["worker_class"] = args.worker_class
    if args.worker_class == "sync":
        # gunicorn silently runs gthread for "sync" when threads > 1.
        options["threads"] = 1
    options["proc_name"] = f"prg-bench-{args.app}"

    from gunicorn.app.base import BaseApplication

    class Baseline(BaseApplication):  # type: ignore[misc]
        # Read by webhook/worker.py for its deadlines and budgets, as in production.
        settings = production_settings

        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Flask:
            if args.app == "webhook":
                return worker_app(settings)
            # The TLS hook needs this worker's certificate reloader, as in production.
            process_reloader(settings)
            return create_allow_all_app()

    app: Any = Baseline()
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
