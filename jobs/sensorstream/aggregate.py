"""The aggregations, defined once and used by both the stream and the batch report.

Both are pure DataFrame -> DataFrame functions over what `schema.parse` returns (the windows over
its valid readings), so a window computed by the stream and the same window computed in batch are
the same expression over the same rows.
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sensorstream.config import spark_interval
from sensorstream.schema import METRICS, REASON_KINDS

_STATS = {
    "avg": F.avg,
    "min": F.min,
    "max": F.max,
    "stddev": F.stddev_samp,
}

#: Window output, in order: what the console shows and the output topic carries.
WINDOW_STATS = ("avg", "min", "max")


def metric_columns(stats: tuple[str, ...]) -> list[Column]:
    """avg_temperature, min_temperature, ... for each metric and statistic, metric by metric."""
    return [_STATS[stat](metric).alias(f"{stat}_{metric}") for metric in METRICS for stat in stats]


def window_stats(readings: DataFrame, window: timedelta, slide: timedelta | None = None,
                 watermark: timedelta | None = None) -> DataFrame:
    """Per sensor and event-time window: num_readings and avg/min/max of each metric.

    Tumbling windows unless `slide` is given. The watermark bounds the state a stream keeps (a
    reading later than the watermark is dropped by Spark); in batch it changes nothing.
    """
    if watermark is not None:
        readings = readings.withWatermark("event_time", spark_interval(watermark))
    slide_arg = [spark_interval(slide)] if slide else []
    windowed = F.window("event_time", spark_interval(window), *slide_arg)
    return (
        readings.groupBy(windowed.alias("window"), "sensor_id")
        .agg(F.count(F.lit(1)).alias("num_readings"), *metric_columns(WINDOW_STATS))
        .select(
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            "sensor_id",
            "num_readings",
            *[f"{stat}_{metric}" for metric in METRICS for stat in WINDOW_STATS],
        )
    )


def sensor_report(records: DataFrame) -> DataFrame:
    """Per sensor over parsed records (`schema.parse`: readings and rejects in one frame, so one pass).

    The original course's columns come first, in its order (sensor_id, total_readings, then
    avg_/min_/max_ of temperature, humidity and pressure); the additions follow: stddev, first and
    last seen, missing_seq (sequence numbers between a sensor's first and last that never arrived
    valid), invalid_records (rejects that named the sensor) and `rejected`, a map {reason kind:
    count} of those rejects. Rejects that named no sensor make the row whose sensor_id is null.
    Rows are in no particular order.
    """
    valid = F.col("reason").isNull()
    kind = F.split("reason", ":").getItem(0)
    return records.groupBy("sensor_id").agg(
        F.count_if(valid).alias("total_readings"),
        *metric_columns(WINDOW_STATS),
        *metric_columns(("stddev",)),
        F.min("event_time").alias("first_seen"),
        F.max("event_time").alias("last_seen"),
        (F.max("seq") - F.min("seq") + 1 - F.count_distinct("seq")).alias("missing_seq"),
        F.count_if(~valid).alias("invalid_records"),
        F.map_from_arrays(F.array(*[F.lit(k) for k in REASON_KINDS]),
                          F.array(*[F.count_if(kind == k) for k in REASON_KINDS])).alias("rejected"),
    )
