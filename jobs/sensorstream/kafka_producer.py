"""kafka-python's producer as sensorstream runs it: riding out a broker that dies and comes back.

The product's kafka-python producer (`sensorstream produce`) is made here, with two corrections
to kafka-python 2.3.3 (the newest 2.x; 3.x fixed the second, but is no drop-in replacement:
jobs/README.md, "Why 2.3.3, not 3.0"):

- Reconnecting. kafka-python doubles its wait before reconnecting to a broker after every failed
  attempt, up to 30 s (`reconnect_backoff_max_ms`; the Java client stops at 1 s), and it asks for
  new metadata only when such an attempt fails. After a leader's kill -9 (the fault suite's leader
  bounce) its attempts had failed eight or nine times by the time the controller moved the
  leadership (10 to 13 s later: the broker session timeout), so the next attempt, and with it the
  next metadata refresh, came 6 to 22 s after that: the partition waited for its dead leader,
  unaware of the new one, past the 25 s delivery timeout, and its records failed. With at most
  1 s between attempts it learns the new leader within a second of the election.
- A request that got no answer (its connection lost, or timed out) and may not be retried (its
  batch expired, or the idempotent producer's id changed meanwhile) raised a TypeError inside
  kafka-python, which left that partition muted for good: every later record of the partition
  failed at its delivery timeout, until the end of the run.

The second correction, the producer's close (`sensorstream.producer._close`) and two log filters
(`sensorstream.brokers`, `sensorstream.logs`) need parts of kafka-python that are not its public
API. `INTERNALS` lists them; `require_kafka_python_internals()` checks them before any client is
made (every job's preflight, every producer), so another kafka-python than the pinned one stops
with one line naming what is missing instead of bringing a corrected bug back unnoticed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kafka
from kafka import KafkaAdminClient, KafkaProducer

from sensorstream.config import Settings, kafka_python_kwargs
from sensorstream.errors import DependencyError

#: The longest wait between two attempts to reach a broker that is down: the Java client's default.
RECONNECT_BACKOFF_MAX_MS = 1000


def kafka_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """A kafka-python producer on the settings' cluster (and security), with `options`."""
    require_kafka_python_internals()
    producer = KafkaProducer(
        **kafka_python_kwargs(settings), **{"reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS, **options}
    )
    _fail_lost_requests_cleanly(producer)
    return producer


def _fail_lost_requests_cleanly(producer: KafkaProducer) -> None:
    """Make kafka-python 2.3.3 fail a batch whose request got no answer without raising.

    Its Sender fails such a batch (`_failed_produce` -> `_complete_batch` -> `_fail_batch`) with
    the error *instance* the connection gave (RequestTimedOutError('... 10000.0 ms'),
    KafkaConnectionError(...)), and `_fail_batch` calls it as if it were the error class the broker's
    answers carry: "TypeError: 'RequestTimedOutError' object is not callable", logged by kafka.future.
    The batch's futures never completed, and `_complete_batch` never reached its last step,
    unmuting the partition (one request in flight per partition): the partition sent nothing more.
    Here the instance becomes its class and its message, as `_fail_batch` expects; answers that
    already carry a class go through unchanged. Only this producer's sender is changed.
    """
    sender = getattr(producer, "_sender", None)
    fail_batch = getattr(sender, "_fail_batch", None)
    if sender is None or fail_batch is None:  # never silently: without it the bug is back
        raise DependencyError(
            _missing_line(["KafkaProducer._sender._fail_batch on this producer, for sensorstream.kafka_producer"])
        )

    def fail(batch, response):
        error = response.error
        if isinstance(error, BaseException):
            message = response.error_message or " ".join(str(arg) for arg in error.args) or None
            response = response._replace(error=type(error), error_message=message)
        return fail_batch(batch, response)

    sender._fail_batch = fail


def _module_logger(module: str) -> Callable[[], bool]:
    """Whether kafka-python has `module` and it logs under its own name (the filters select by it)."""

    def present() -> bool:
        try:
            return importlib.import_module(module).log.name == module
        except (ImportError, AttributeError):
            return False

    return present


def _fail_batch_present() -> bool:
    from kafka.producer import sender

    fail_batch = getattr(getattr(sender, "Sender", None), "_fail_batch", None)
    fields = getattr(getattr(sender, "PartitionResponse", None), "_fields", ())
    return (
        fail_batch is not None
        and list(inspect.signature(fail_batch).parameters) == ["self", "batch", "partition_response"]
        and {"error", "error_message"} <= set(fields)
        and "_sender" in KafkaProducer.__init__.__code__.co_names
    )


def _forced_close_present() -> bool:
    from kafka.producer.sender import Sender

    return (
        callable(getattr(Sender, "force_close", None))
        and "_sender" in KafkaProducer.__init__.__code__.co_names
        and "_closed" in KafkaProducer.close.__code__.co_names
    )


def _controller_lookup_present() -> bool:
    return "_refresh_controller_id" in KafkaAdminClient.__init__.__code__.co_names


@dataclass(frozen=True)
class Internal:
    """A part of kafka-python outside its public API that a correction of sensorstream needs."""

    what: str  # as kafka-python names it
    used_by: str  # the correction, and what it is for
    present: Callable[[], bool]


INTERNALS = (
    Internal(
        "Sender._fail_batch(batch, partition_response) and PartitionResponse",
        "sensorstream.kafka_producer: a produce request lost without an answer fails its batch cleanly",
        _fail_batch_present,
    ),
    Internal(
        "KafkaProducer._sender.force_close() and KafkaProducer._closed",
        "sensorstream.producer: a stop past the flush timeout still ends, and prints its totals",
        _forced_close_present,
    ),
    Internal(
        "the kafka.conn logger (a refused SASL login is only logged there)",
        "sensorstream.brokers: a refused login is named as such",
        _module_logger("kafka.conn"),
    ),
    Internal(
        "KafkaAdminClient's controller lookup on start (NodeNotReadyError without one)",
        "sensorstream.brokers: a lost controller quorum is named as such",
        _controller_lookup_present,
    ),
    Internal(
        "the kafka.future logger (a failing callback's traceback)",
        "sensorstream.logs: such a traceback becomes one line",
        _module_logger("kafka.future"),
    ),
)


def pinned_kafka_python() -> str | None:
    """The kafka-python version sensorstream's package pins (pyproject.toml), if it is installed."""
    try:
        requirements = importlib.metadata.requires("sensorstream") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        if name.strip() == "kafka-python" and version:
            return version.split(";")[0].strip()
    return None


@functools.cache
def missing_kafka_python_internals() -> tuple[Internal, ...]:
    """The `INTERNALS` the installed kafka-python lacks (looked up once per process)."""
    return tuple(internal for internal in INTERNALS if not internal.present())


def require_kafka_python_internals() -> None:
    """DependencyError, one line, if the installed kafka-python lacks what a correction needs."""
    missing = missing_kafka_python_internals()
    if missing:
        raise DependencyError(_missing_line([f"{m.what}, for {m.used_by}" for m in missing]))


def _missing_line(missing: list[str]) -> str:
    pinned = pinned_kafka_python()
    return (
        f"kafka-python {kafka.__version__} lacks what sensorstream's corrections of it need: {'; '.join(missing)}. "
        f"sensorstream is made for kafka-python {pinned or 'as pinned in pyproject.toml'}: reinstall it "
        "(from a checkout: .venv/bin/pip install -e .)"
    )
