"""The aggregations, defined once and used by both the stream and the batch report.

Pure DataFrame -> DataFrame functions over what `schema.parse` returns (and, for the report's
alert counts, `schema.parse_alerts`). A window is always finished (`finish_windows`) from the same
partials (`partial_columns`), whether Spark's state store merged them batch by batch in the stream
or `window_stats` computed them in one pass, so both agree.
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sensorstream.config import spark_interval
from sensorstream.schema import ALERT_KINDS, METRICS, REASON_KINDS

_STATS = {
    "avg": F.avg,
    "min": F.min,
    "max": F.max,
    "stddev": F.stddev_samp,
}

#: Window output, in order: what the console shows and the output topic carries.
WINDOW_STATS = ("avg", "min", "max")
#: A window's statistics as mergeable partials: how many, and per metric the sum, min and max.
#: Spark's state store keeps them per open window of the stream; every window row, in batch or
#: streaming, is finished from them (`finish_windows`), so both compute the same thing.
PARTIALS = ("num_readings", *[f"{op}_{m}" for m in METRICS for op in ("sum", "min", "max")])


def metric_columns(stats: tuple[str, ...]) -> list[Column]:
    """avg_temperature, min_temperature, ... for each metric and statistic, metric by metric."""
    return [_STATS[stat](metric).alias(f"{stat}_{metric}") for metric in METRICS for stat in stats]


def window_column(event_time: Column, window: timedelta, slide: timedelta | None = None) -> Column:
    """The event-time window(s) of a reading: tumbling unless `slide` is given."""
    return F.window(event_time, spark_interval(window), *([spark_interval(slide)] if slide else []))


def partial_columns() -> list[Column]:
    """The aggregate expressions of PARTIALS, in order. Readings are counted by their first metric,
    which every valid reading has: a reject among the rows (null metrics) counts for nothing."""
    columns = [F.count(METRICS[0]).alias("num_readings")]
    for metric in METRICS:
        columns += [
            F.sum(metric).alias(f"sum_{metric}"),
            F.min(metric).alias(f"min_{metric}"),
            F.max(metric).alias(f"max_{metric}"),
        ]
    return columns


def _finish(partial, divide) -> list:
    values = [partial["num_readings"]]
    for metric in METRICS:
        avg = divide(partial[f"sum_{metric}"], partial["num_readings"])
        values += [avg, partial[f"min_{metric}"], partial[f"max_{metric}"]]
    return values


#: The window statistics finished from partials, in output order (after the window and sensor).
FINISHED = ("num_readings", *[f"{stat}_{metric}" for metric in METRICS for stat in WINDOW_STATS])


def window_stats(readings: DataFrame, window: timedelta, slide: timedelta | None = None) -> DataFrame:
    """Per sensor and event-time window: num_readings and avg/min/max of each metric.

    In batch (the report) and in the stream's parquet query alike; the stream's update query
    finishes its windows with the same `finish_windows`.
    """
    return finish_windows(
        readings.groupBy(window_column(F.col("event_time"), window, slide).alias("window"), "sensor_id").agg(
            *partial_columns()
        )
    )


def finish_windows(partials: DataFrame, extra: tuple[str, ...] = ()) -> DataFrame:
    """Rows of (window, sensor_id, PARTIALS) -> window_start, window_end, sensor_id, FINISHED (and `extra`)."""
    finished = _finish({name: F.col(name) for name in PARTIALS}, lambda total, n: total / n)
    return partials.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "sensor_id",
        *[column.alias(name) for column, name in zip(finished, FINISHED)],
        *extra,
    )


def reason_kind() -> Column:
    """A reject's kind of reason (one of schema.REASON_KINDS): its reason up to the first colon."""
    return F.split("reason", ":").getItem(0)


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
    kind = reason_kind()
    return records.groupBy("sensor_id").agg(
        F.count_if(valid).alias("total_readings"),
        *metric_columns(WINDOW_STATS),
        *metric_columns(("stddev",)),
        F.min("event_time").alias("first_seen"),
        F.max("event_time").alias("last_seen"),
        (F.max("seq") - F.min("seq") + 1 - F.count_distinct("seq")).alias("missing_seq"),
        F.count_if(~valid).alias("invalid_records"),
        F.map_from_arrays(
            F.array(*[F.lit(k) for k in REASON_KINDS]), F.array(*[F.count_if(kind == k) for k in REASON_KINDS])
        ).alias("rejected"),
    )


#: The report's alert counts, one column per kind of alert, in ALERT_KINDS' order.
ALERT_COUNTS = tuple(f"alerts_{kind}" for kind in ALERT_KINDS)
#: The column of `sensor_alerts(..., listed=True)` that holds a sensor's alerts themselves.
ALERT_LIST = "alerts"
#: An alert's fields in ALERT_LIST.
LISTED = ("kind", "metric", "value", "expected_low", "expected_high", "event_time")


def sensor_alerts(alerts: DataFrame, listed: bool = False) -> DataFrame:
    """Per sensor over parsed alerts (`schema.parse_alerts`): ALERT_COUNTS, and with `listed` the
    alerts themselves (ALERT_LIST, an array of LISTED structs, in no order).

    An alert is counted once per record key: the stream writes a replayed micro-batch's alerts
    again under the same keys.
    """
    unique = alerts.dropDuplicates(["key"])
    kind = F.col("kind")
    return unique.groupBy("sensor_id").agg(
        *[F.count_if(kind == k).alias(name) for k, name in zip(ALERT_KINDS, ALERT_COUNTS)],
        *([F.collect_list(F.struct(*LISTED)).alias(ALERT_LIST)] if listed else []),
    )


def with_alerts(report: DataFrame, alerts: DataFrame) -> DataFrame:
    """`sensor_report`'s rows with each sensor's `sensor_alerts` after invalid_records (0 when it
    has none), `rejected` (and ALERT_LIST, if there) last. A sensor with alerts but no record in
    the report (its readings past the input topic's retention, say) gets a row of its own: no
    readings, its alerts counted."""
    joined = report.join(alerts, "sensor_id", "full_outer")
    zero = F.lit(0).cast("long")
    counts = ("total_readings", "invalid_records")
    columns = [F.coalesce(c, zero).alias(c) if c in counts else F.col(c) for c in report.columns if c != "rejected"]
    return joined.select(
        *columns,
        *[F.coalesce(c, zero).alias(c) for c in ALERT_COUNTS],
        "rejected",
        *([ALERT_LIST] if ALERT_LIST in alerts.columns else []),
    )
