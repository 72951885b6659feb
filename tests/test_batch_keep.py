"""The rows a micro-batch keeps to read again (console, detection): every read of them is served by
Spark's cache, so the batch (and its state) runs once. A filter on a column the kept rows lack would
be resolved below the cache, and Spark would run the batch again for it."""

from pathlib import Path

from pyspark.sql import functions as F

from sensorstream.config import load_settings
from sensorstream.streaming.batches import _Batches

ROWS = [
    # kind, topic, key, value, reason_kind, newest, num_readings, _shared
    ("window", "out", "sensor_1|w", "{}", None, True, 3, 0),
    ("window", "out", "|epoch", "{}", None, True, 0, 0),  # rejects' window: no readings
    ("reading", "dlq", None, None, None, True, 0, 0),
    ("reading", "dlq", None, None, None, False, 0, 0),  # an older window of a sliding one
    ("reject", "dlq", "in|0|7", "{}", "invalid JSON", True, 0, 0),
    ("reject", "dlq", "in|0|7", "{}", "invalid JSON", False, 0, 0),
    ("alert", "alerts", "sensor_1|spike", "{}", "spike", True, 0, 0),
]
COLUMNS = "kind string, topic string, key string, value string, reason_kind string, newest boolean, "
COLUMNS += "num_readings long, _shared long"


def cached(frame) -> bool:
    return "InMemoryRelation" in frame._jdf.queryExecution().optimizedPlan().toString()


def test_every_read_of_a_kept_batch_is_served_by_the_cache(spark, tmp_path: Path):
    settings = load_settings(environ={"STREAM_SINKS": "console,kafka", "STREAM_DETECT": "on"})
    handler = _Batches(settings, tmp_path, lambda figures: None)
    kept = handler.kept(spark.createDataFrame(ROWS, COLUMNS))
    try:
        written = handler.to_write(kept)
        windows = kept.where(handler._is_window).select("value")
        alerts = kept.where(F.col("kind") == "alert").select("value")
        assert cached(written) and cached(windows) and cached(alerts)
        assert sorted(r.key for r in written.collect()) == ["in|0|7", "sensor_1|spike", "sensor_1|w"]
        assert kept.count() == 3  # not the readings' rows
    finally:
        kept.unpersist()
