"""webhook/gunicorn_app.py: the application object's readiness and TLS, the options and
the metrics directory (without starting gunicorn; tests/process starts real ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.certs import write_certificates
from webhook.gunicorn_app import WebhookApplication, gunicorn_options
from webhook.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_certificates(tmp_path, "pod-replace-guard", "pod-replace-guard")
    return Settings(cert_dir=str(tmp_path))


def test_not_ready_and_no_tls_context_before_the_worker_loads_the_app(settings: Settings) -> None:
    application = WebhookApplication(settings)
    assert application.readiness() == (False, "the serving certificate is not loaded yet")
    with pytest.raises(RuntimeError, match="no TLS context"):
        application.tls_context()


def test_ready_once_loaded_and_not_ready_while_draining(settings: Settings) -> None:
    application = WebhookApplication(settings)
    application.load()
    ready, reason = application.readiness()
    assert ready, reason
    assert application.tls_context().minimum_version.name == "TLSv1_2"
    application.draining.set()
    assert application.readiness() == (False, "shutting down")


def test_options_name_the_guarded_worker_and_no_tls_hook(settings: Settings) -> None:
    options = gunicorn_options(settings)
    assert options["worker_class"] == "webhook.serving.worker.GuardedWorker"
    # Each connection's context comes from the worker's reloader, not a hook.
    assert "ssl_context" not in options
    assert options["certfile"] == str(settings.cert_file)


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_the_serving_modules_do_not_import_prometheus_client() -> None:
    # The CLI imports these before prepare_metrics_dir(); prometheus_client chooses its
    # value storage on import, so importing it here would make each worker count alone.
    result = run_python(
        "import sys, webhook.cli, webhook.gunicorn_app, webhook.logs;"
        "print('prometheus_client' in sys.modules)",
        dict(os.environ),
    )
    assert result.stdout.strip() == "False", result.stderr


def test_prepare_metrics_dir_refuses_after_prometheus_client_was_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = run_python(
        "import prometheus_client\n"
        "from webhook.gunicorn_app import prepare_metrics_dir\n"
        "prepare_metrics_dir()",
        env,
    )
    assert result.returncode != 0
    assert "imported before the metrics directory" in result.stderr


def test_prepare_metrics_dir_clears_stale_files(tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"stale")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = run_python(
        "from webhook.gunicorn_app import prepare_metrics_dir; print(prepare_metrics_dir())", env
    )
    assert result.stdout.strip() == str(tmp_path), result.stderr
    assert not (tmp_path / "counter_1.db").exists()
