"""JSON log lines (webhook.logs)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webhook.logs import (
    DECISION_LOGGER,
    JsonFormatter,
    JsonLineHandler,
    configure_logging,
    gunicorn_logconfig,
    log_info_line,
)

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


# --- the decision line written at once (log_info_line) ----------------------------------------

FIELDS: dict[str, Any] = {
    "event": "decision",
    "uid": "u-9",
    "name": "web-0",  # a LogRecord-reserved name
    "allowed": False,
    "violations": ["spec.nodeName", 'metadata.annotations["a.b/c"]'],
    "duration_ms": 0.25,
}


@pytest.fixture
def line_logger(tmp_path: Path) -> Iterator[tuple[logging.Logger, JsonLineHandler, Path]]:
    """A logger whose records reach one JsonLineHandler writing to a real file."""
    path = tmp_path / "out.log"
    stream = path.open("w")
    handler = JsonLineHandler(stream)
    handler.setFormatter(JsonFormatter())
    parent = logging.getLogger("pod_replace_guard.test.lines")
    parent.handlers[:] = [handler]
    parent.setLevel(logging.INFO)
    parent.propagate = False
    yield parent.getChild("decision"), handler, path
    parent.handlers.clear()
    parent.propagate = True
    parent.filters.clear()
    stream.close()


def sole(logger: logging.Logger, handler: JsonLineHandler) -> logging.Logger:
    """pytest's log capture adds its handlers to non-propagating loggers when a test's
    call begins; take them off, so that the record would reach ``handler`` alone."""
    assert logger.parent is not None
    logger.parent.handlers[:] = [handler]
    return logger


def file_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def without_time(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "time"}


def test_the_line_written_at_once_is_the_line_logging_writes(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path],
) -> None:
    logger, handler, path = line_logger
    sole(logger, handler)
    log_info_line(logger, "admission decision", FIELDS)
    logger.info("admission decision", extra={"fields": FIELDS})
    fast, through_logging = file_lines(path)
    assert without_time(fast) == without_time(through_logging)
    assert list(fast) == list(through_logging)  # the same keys in the same order
    assert fast["logger"] == "pod_replace_guard.test.lines.decision"
    assert fast["time"].endswith("Z")
    assert len(fast["time"]) == len(through_logging["time"])


def test_the_line_is_written_without_a_log_record(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, path = line_logger
    sole(logger, handler)

    def no_records(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("a LogRecord was made")

    monkeypatch.setattr(logger, "makeRecord", no_records)
    log_info_line(logger, "admission decision", FIELDS)
    (entry,) = file_lines(path)
    assert entry["uid"] == "u-9"


def test_other_handlers_or_filters_get_the_record_as_usual(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path],
) -> None:
    logger, handler, path = line_logger
    sole(logger, handler)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Keep()
    logger.parent.addHandler(extra)  # type: ignore[union-attr]
    log_info_line(logger, "admission decision", FIELDS)
    logger.parent.removeHandler(extra)  # type: ignore[union-attr]
    assert [record.fields for record in seen] == [FIELDS]  # type: ignore[attr-defined]

    handler.addFilter(lambda record: False)
    log_info_line(logger, "admission decision", FIELDS)
    (entry,) = file_lines(path)  # only the first line: the filter dropped the second
    assert entry["uid"] == "u-9"


def test_no_line_below_the_level(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path],
) -> None:
    logger, handler, path = line_logger
    sole(logger, handler)
    logger.parent.setLevel(logging.WARNING)  # type: ignore[union-attr]
    log_info_line(logger, "admission decision", FIELDS)
    logger.parent.setLevel(logging.INFO)  # type: ignore[union-attr]
    handler.setLevel(logging.WARNING)
    log_info_line(logger, "admission decision", FIELDS)
    assert path.read_text() == ""


def test_text_written_through_the_stream_comes_first(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path],
) -> None:
    logger, handler, path = line_logger
    sole(logger, handler)
    handler.stream.write('{"message":"buffered"}\n')  # not flushed yet
    log_info_line(logger, "admission decision", FIELDS)
    assert [entry["message"] for entry in file_lines(path)] == ["buffered", "admission decision"]


def test_a_stream_without_a_descriptor(capsys: pytest.CaptureFixture[str]) -> None:
    handler = JsonLineHandler(io.StringIO())
    handler.write_line(b'{"a":1}\n')
    assert handler.stream.getvalue() == '{"a":1}\n'  # type: ignore[attr-defined]
    handler.setStream(sys.stdout)  # capsys's, which has no descriptor either
    handler.write_line(b'{"b":2}\n')
    assert capsys.readouterr().out == '{"b":2}\n'


def test_a_long_line_arrives_whole_through_a_pipe_with_concurrent_writers() -> None:
    """Lines beyond the pipe's atomic size (4 KiB) from several threads never interleave."""
    read_end, write_end = os.pipe()
    handler = JsonLineHandler(os.fdopen(write_end, "w"))
    logger = logging.getLogger("pod_replace_guard.test.pipe")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b""))
    )
    reader.start()
    fields = {"violations": [f"spec.containers[{i}].env" for i in range(3000)]}  # ~80 KB

    def write_some(worker: int) -> None:
        for count in range(5):
            log_info_line(logger, f"line {worker}-{count}", fields)

    try:
        writers = [threading.Thread(target=write_some, args=(n,)) for n in range(4)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
    finally:
        logger.handlers.clear()
        logger.propagate = True
        handler.stream.close()
    reader.join(timeout=10)
    os.close(read_end)
    entries = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert sorted(entry["message"] for entry in entries) == sorted(
        f"line {n}-{c}" for n in range(4) for c in range(5)
    )
    assert all(entry["violations"] == fields["violations"] for entry in entries)


def test_a_broken_stream_falls_back_to_logging_error_handling(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger, handler, _ = line_logger
    sole(logger, handler)
    read_end, write_end = os.pipe()
    os.close(read_end)
    handler.setStream(os.fdopen(write_end, "w"))
    monkeypatch.setattr(logging, "raiseExceptions", True)
    log_info_line(logger, "admission decision", FIELDS)  # EPIPE: no exception escapes
    assert "Logging error" in capsys.readouterr().err


def test_configure_logging_installs_the_line_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        (handler,) = root.handlers
        assert isinstance(handler, JsonLineHandler)
        log_info_line(logging.getLogger(DECISION_LOGGER), "admission decision", FIELDS)
        out = capsys.readouterr().out
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry["logger"] == DECISION_LOGGER
    assert entry["uid"] == "u-9"


def test_a_closed_stream_never_fails_the_caller(
    line_logger: tuple[logging.Logger, JsonLineHandler, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A closed stdout must not turn every review into an error: the line goes to
    logging, which reports the failure on stderr as it does for any record."""
    logger, handler, _ = line_logger
    sole(logger, handler)
    handler.stream.close()
    monkeypatch.setattr(logging, "raiseExceptions", True)
    log_info_line(logger, "admission decision", FIELDS)
    assert "Logging error" in capsys.readouterr().err
