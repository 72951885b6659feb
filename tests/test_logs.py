"""LOG_LEVEL and LOG_FORMAT: human lines by default, one JSON object per line on request."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timezone

import pytest

from sensorstream import logs
from support.broker import base_settings


@pytest.fixture
def restore_logging():
    loggers = [logging.getLogger(name) for name in ("", "kafka", "py4j")]
    saved = [(list(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, (handlers, level) in zip(loggers, saved):
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_text_is_the_message_and_names_levels_above_info(restore_logging):
    out = io.StringIO()
    logs.configure(base_settings(), stream=out)
    log = logging.getLogger("sensorstream.test")
    log.info("batch 3: 10 records")
    log.debug("not shown at INFO")
    log.warning("delivery failed: timeout")
    assert out.getvalue().splitlines() == ["batch 3: 10 records", "warning: delivery failed: timeout"]


def test_json_is_one_object_per_line_with_the_fields(restore_logging):
    out = io.StringIO()
    logs.configure(base_settings(log_format="json", log_level="debug"), stream=out)
    log = logging.getLogger("sensorstream.test")
    watermark = datetime(2026, 1, 31, 8, 0, tzinfo=timezone.utc)
    log.debug("batch 3", extra={"fields": {"batch_id": 3, "records": 10, "watermark": watermark}})
    log.error("boom")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "DEBUG" and first["logger"] == "sensorstream.test" and first["message"] == "batch 3"
    assert (first["batch_id"], first["records"], first["watermark"]) == (3, 10, "2026-01-31T08:00:00+00:00")
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert second["level"] == "ERROR" and "batch_id" not in second


def test_the_kafka_clients_chatter_stays_out_unless_debug(restore_logging):
    out = io.StringIO()
    logs.configure(base_settings(), stream=out)
    logging.getLogger("kafka.conn").info("connecting to 127.0.0.1:9092")
    assert out.getvalue() == ""
    logs.configure(base_settings(log_level="DEBUG"), stream=out)
    logging.getLogger("kafka.conn").info("connecting to 127.0.0.1:9092")
    assert "connecting" in out.getvalue()


def test_py4j_keeps_quiet_about_errors_the_command_reports_itself(restore_logging):
    """A foreachBatch error of ours goes back to the JVM as one line and ends the command with one
    line: py4j's traceback of it would only bury that line. Anything else py4j logs stays."""
    from sensorstream.errors import SensorstreamError

    out = io.StringIO()
    logs.configure(base_settings(), stream=out)
    proxy = logging.getLogger("py4j.clientserver")
    for error in (SensorstreamError("batch 3 interrupted by the stop"), ValueError("a bug")):
        try:
            raise error
        except Exception:
            proxy.exception("There was an exception while executing the Python Proxy on the Python Side.")
    text = out.getvalue()
    assert "interrupted by the stop" not in text
    assert "ValueError: a bug" in text and text.count("Traceback") == 1


def test_kafka_client_errors_are_one_line_each(restore_logging):
    """kafka-python logs a broker going away mid-request with a traceback, and its own 2.3.3 TypeError
    on a timed-out produce request (both seen with two of three brokers down): one line each."""
    out = io.StringIO()
    logs.configure(base_settings(), stream=out)
    try:
        raise TypeError("'RequestTimedOutError' object is not callable")
    except TypeError:
        logging.getLogger("kafka.future").exception("Error processing %s", "errback")
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except OSError:
        logging.getLogger("kafka.conn").exception("Error receiving network data closing socket")
    assert out.getvalue().splitlines() == [
        "warning: kafka-python: a delivery callback failed (TypeError: 'RequestTimedOutError' object is not "
        "callable); its records are counted as failed when their delivery timeout expires",
        "error: Error receiving network data closing socket (ConnectionResetError: [Errno 104] Connection reset by "
        "peer)",
    ]
