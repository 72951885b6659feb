"""kafka-python's producer as sensorstream runs it: riding out a broker that dies and comes back.

Both of the product's kafka-python producers (`sensorstream produce` and the stream's window
output) are made here, with two corrections to kafka-python 2.3.3 (the newest 2.x; 3.x fixed the
second, see `_fail_lost_requests_cleanly`):

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
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer

from sensorstream.config import Settings, kafka_python_kwargs

#: The longest wait between two attempts to reach a broker that is down: the Java client's default.
RECONNECT_BACKOFF_MAX_MS = 1000


def kafka_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """A kafka-python producer on the settings' cluster (and security), with `options`."""
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
    if sender is None or fail_batch is None:  # another kafka-python than the pinned one: nothing to correct
        return

    def fail(batch, response):
        error = response.error
        if isinstance(error, BaseException):
            message = response.error_message or " ".join(str(arg) for arg in error.args) or None
            response = response._replace(error=type(error), error_message=message)
        return fail_batch(batch, response)

    sender._fail_batch = fail
