"""JSON log lines (webhook.logs)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from webhook.logs import DECISION_LOGGER, JsonFormatter, configure_logging, gunicorn_logconfig

# --- JSON log lines ---------------------------------------------------------------------------


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("pod_replace_guard.test.json")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.handlers.clear()
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_line_with_extra_fields(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    logger.info("first", extra={"uid": "u-1", "status": 400, "paths": ["a", "b"]})
    logger.warning("second\nwith a newline", extra={"fields": {"name": "pod-a", "allowed": False}})
    first, second = lines(stream)
    assert first["message"] == "first"
    assert first["level"] == "info"
    assert first["logger"] == "pod_replace_guard.test.json"
    assert first["uid"] == "u-1"
    assert first["status"] == 400
    assert first["paths"] == ["a", "b"]
    assert first["time"].endswith("Z")
    assert len(first["time"]) == len("2024-01-01T00:00:00.000Z")
    assert second["message"] == "second\nwith a newline"
    assert second["level"] == "warning"
    assert second["name"] == "pod-a"  # a LogRecord-reserved name, passed through "fields"
    assert second["allowed"] is False
    assert "fields" not in second
    for standard in ("args", "msg", "levelno", "pathname", "lineno", "exc_info", "thread"):
        assert standard not in first


def test_exceptions_are_logged_with_their_traceback_on_one_line(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed", extra={"uid": "u-2"})
    (entry,) = lines(stream)
    assert entry["level"] == "error"
    assert entry["uid"] == "u-2"
    assert "RuntimeError: boom" in entry["traceback"]
    assert "Traceback" in entry["traceback"]


def test_values_that_are_not_json_are_stringified(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    logger.info("odd", extra={"thing": object(), "where": sys.version_info[:2]})
    (entry,) = lines(stream)
    assert entry["thing"].startswith("<object object")
    assert entry["where"] == list(sys.version_info[:2])


def test_configure_logging_sends_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        logging.getLogger(DECISION_LOGGER).info("decided", extra={"uid": "u-3"})
        logging.getLogger(DECISION_LOGGER).debug("hidden")
        out = capsys.readouterr().out
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    entries = [json.loads(line) for line in out.splitlines()]
    assert [entry["message"] for entry in entries] == ["decided"]
    assert entries[0]["uid"] == "u-3"
    assert entries[0]["logger"] == DECISION_LOGGER


def test_gunicorn_logconfig_uses_the_json_formatter() -> None:
    config = gunicorn_logconfig("DEBUG")
    assert config["formatters"]["json"]["()"] is JsonFormatter
    assert config["root"]["level"] == "DEBUG"
    assert config["loggers"]["gunicorn.error"]["handlers"] == ["stdout"]
    assert config["handlers"]["stdout"]["stream"] == "ext://sys.stdout"
