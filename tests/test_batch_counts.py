"""A micro-batch's counts (streaming.batches.observed): handed over, failed, or never handed over.

No Spark here: what is tested is the wait itself; tests/test_streaming.py runs the real
Observation on Spark's Kafka writer."""

import threading

import pytest

from sensorstream.errors import SensorstreamError
from sensorstream.streaming.batches import observed


class _Counts:
    """Stands in for pyspark's Observation: `get` blocks until its figures come, like Spark's."""

    def __init__(self, figures: dict | None = None, error: Exception | None = None):
        self.figures, self.error = figures, error
        self.released = threading.Event()

    @property
    def get(self) -> dict:
        if self.error:
            raise self.error
        if self.figures is None:
            self.released.wait()  # never handed over (the test releases it at the end)
        return self.figures or {}


def test_figures_handed_over():
    assert observed(_Counts({"records": 5, "late": 0}), 3) == {"records": 5, "late": 0}


def test_a_failure_is_the_batch_failure():
    with pytest.raises(RuntimeError, match="boom"):
        observed(_Counts(error=RuntimeError("boom")), 3)


def test_figures_never_handed_over_fail_the_batch_in_one_line():
    counts = _Counts()
    try:
        with pytest.raises(SensorstreamError) as raised:
            observed(counts, 7, timeout_s=0.2)
    finally:
        counts.released.set()
    message = str(raised.value)
    assert "\n" not in message
    assert "micro-batch 7" in message and "0.2 s" in message and "runs again" in message
