"""Log lines of every command: LOG_LEVEL, and LOG_FORMAT text (for people) or json (for collectors).

`configure(settings)` sets up the root logger once, on stderr. In text format a line is the
message alone (a warning or error says so first), as the commands always printed it; in json
format each line is one object: time (UTC, ISO 8601), level, logger, message, and any fields
the caller passed as `extra={"fields": {...}}` (a batch's id, rates and watermark, say).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime, timezone

from sensorstream.config import Settings
from sensorstream.errors import SensorstreamError

FIELDS = "fields"


class TextFormatter(logging.Formatter):
    """The message; 'warning: ' and the like before anything above INFO."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno > logging.INFO:
            message = f"{record.levelname.lower()}: {message}"
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return message


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=_plain, ensure_ascii=False)


def configure(settings: Settings, stream=None) -> None:
    """The root logger at LOG_LEVEL, one handler on stderr in LOG_FORMAT (replacing earlier ones)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # the clients' INFO lines are every connection opened and closed (and py4j's every gateway
    # call): only their warnings are worth a line, unless LOG_LEVEL=DEBUG asks for everything
    for chatty in ("kafka", "py4j"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    handler.addFilter(_client_errors_in_one_line)


def _client_errors_in_one_line(record: logging.LogRecord) -> bool:
    """The client libraries log some errors with a whole traceback; the user gets one line.

    - py4j logs an error our own code raised for the JVM (a foreachBatch failure, a stop during a
      batch): the command reports it in a line of its own, so py4j's copy is dropped.
    - kafka-python logs a broker going away mid-request, and a delivery callback of its own that
      raised (its 2.3.3 `TypeError: ... object is not callable` on an unanswered produce request
      was one; sensorstream.kafka_producer now prevents it, so this line would mean a new such
      bug; the batch fails when its delivery timeout expires, and is counted then): the message
      and the error, one line. It is told by its logger's name, kafka.future, which
      `sensorstream.kafka_producer.INTERNALS` checks at start-up.
    """
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return True
    if record.name.startswith("py4j"):
        return not isinstance(error, SensorstreamError)
    if record.name.startswith("kafka"):
        if record.name == "kafka.future":
            record.msg, record.args = (
                (
                    "kafka-python: a delivery callback failed (%s: %s); its records are counted "
                    "as failed when their delivery timeout expires"
                ),
                (type(error).__name__, error),
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        else:
            record.msg, record.args = "%s (%s: %s)", (record.getMessage(), type(error).__name__, error)
        record.exc_info, record.exc_text = None, None
    return True
