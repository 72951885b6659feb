"""The aggregations, defined once and used by both the stream and the batch report.

Pure DataFrame -> DataFrame functions over what `schema.parse` returns, plus the few plain
functions a stream needs to fold micro-batches into its open windows (`micro_batch`,
`merge_partials`, `finish`). A window is always finished from the same partials, whether the
stream folded them batch by batch or `window_stats` computed them in one pass, so both agree.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sensorstream.config import micros, spark_interval
from sensorstream.schema import METRICS, REASON_KINDS, dead_letter_columns

_STATS = {
    "avg": F.avg,
    "min": F.min,
    "max": F.max,
    "stddev": F.stddev_samp,
}

#: Window output, in order: what the console shows and the output topic carries.
WINDOW_STATS = ("avg", "min", "max")
#: A window's statistics as mergeable partials: how many, and per metric the sum, min and max.
#: A stream folds each micro-batch's partials into its open windows (`merge_partials`); every
#: window row, in batch or streaming, is `finish`ed from them, so both compute the same thing.
PARTIALS = ("num_readings", *[f"{op}_{m}" for m in METRICS for op in ("sum", "min", "max")])


def metric_columns(stats: tuple[str, ...]) -> list[Column]:
    """avg_temperature, min_temperature, ... for each metric and statistic, metric by metric."""
    return [_STATS[stat](metric).alias(f"{stat}_{metric}") for metric in METRICS for stat in stats]


def window_column(event_time: Column, window: timedelta, slide: timedelta | None = None) -> Column:
    """The event-time window(s) of a reading: tumbling unless `slide` is given."""
    return F.window(event_time, spark_interval(window), *([spark_interval(slide)] if slide else []))


def partial_columns() -> list[Column]:
    """The aggregate expressions of PARTIALS, in order."""
    columns = [F.count(F.lit(1)).alias("num_readings")]
    for metric in METRICS:
        columns += [
            F.sum(metric).alias(f"sum_{metric}"),
            F.min(metric).alias(f"min_{metric}"),
            F.max(metric).alias(f"max_{metric}"),
        ]
    return columns


def merge_partials(a: dict, b: dict) -> dict:
    """Two partials of the same window and sensor -> one (counts and sums add, extremes win)."""
    merged = {"num_readings": a["num_readings"] + b["num_readings"]}
    for metric in METRICS:
        merged[f"sum_{metric}"] = a[f"sum_{metric}"] + b[f"sum_{metric}"]
        merged[f"min_{metric}"] = min(a[f"min_{metric}"], b[f"min_{metric}"])
        merged[f"max_{metric}"] = max(a[f"max_{metric}"], b[f"max_{metric}"])
    return merged


def _finish(partial, divide) -> list:
    values = [partial["num_readings"]]
    for metric in METRICS:
        avg = divide(partial[f"sum_{metric}"], partial["num_readings"])
        values += [avg, partial[f"min_{metric}"], partial[f"max_{metric}"]]
    return values


#: The window statistics finished from partials, in output order (after the window and sensor).
FINISHED = ("num_readings", *[f"{stat}_{metric}" for metric in METRICS for stat in WINDOW_STATS])


def finish(partial: dict) -> dict:
    """A window's partials -> its statistics (FINISHED), as a stream emits them."""
    return dict(zip(FINISHED, _finish(partial, lambda total, n: total / n)))


def window_stats(readings: DataFrame, window: timedelta, slide: timedelta | None = None) -> DataFrame:
    """Per sensor and event-time window, in batch: num_readings and avg/min/max of each metric.

    The same partials and the same `finish` as the stream's open windows (streaming.py), so a
    window computed by the stream and in batch agree.
    """
    partials = readings.groupBy(window_column(F.col("event_time"), window, slide).alias("window"), "sensor_id").agg(
        *partial_columns()
    )
    finished = _finish({name: F.col(name) for name in PARTIALS}, lambda total, n: total / n)
    return partials.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        "sensor_id",
        *[column.alias(name) for column, name in zip(finished, FINISHED)],
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


def micro_batch(
    records: DataFrame, window: timedelta, slide: timedelta | None = None, with_dead_letters: bool = False
) -> DataFrame:
    """One micro-batch of parsed records -> what the stream needs from it, in one Spark job.

    One row per (window, sensor, input partition) of the batch's readings with their PARTIALS and
    newest event time (kind "window"; a sensor's readings share one partition unless the topic
    grew), and for the rejects (kind "reject") one row per input partition, or, `with_dead_letters`,
    one row per reject with its kind of reason and its dead letter (`reason_kind`, `reject_key`,
    `dead_letter`: `schema.dead_letter_columns`). `records` counts each input record once (a reading
    in several sliding windows counts in the newest). Window starts are in microseconds. Whether a
    window is already closed (its readings late) is the driver's call (windows.py): the plan holds
    no watermark, so it is the same every batch and Spark compiles it once.
    """
    keyed, keys, aggregates = _micro_batch_columns(window, slide, with_dead_letters)
    return records.select(*keyed).groupBy(*keys).agg(*aggregates)


@functools.cache
def _micro_batch_columns(
    window: timedelta, slide: timedelta | None, with_dead_letters: bool
) -> tuple[tuple[Column, ...], tuple[str, ...], tuple[Column, ...]]:
    """micro_batch's expressions, built once: the stream applies them to every micro-batch."""
    valid = F.col("reason").isNull()
    # rejects have no event time; give them one so that window() keeps them (it drops nulls)
    when = F.coalesce(F.col("event_time"), F.timestamp_seconds(F.lit(0)))
    window_col = window_column(when, window, slide)
    start = F.unix_micros(window_col["start"])
    step_us = micros(slide or window)
    keyed = (
        F.when(valid, F.lit("window")).otherwise(F.lit("reject")).alias("kind"),
        F.when(valid, start).alias("window_start_us"),
        F.when(valid, F.col("sensor_id")).alias("sensor_id"),
        F.col("source_partition"),  # a window row's too: the watermark follows each partition (windows.py)
        (F.unix_micros(when) < start + F.lit(step_us)).alias("newest"),
        F.unix_micros(F.col("event_time")).alias("event_us"),
        *[F.col(m) for m in METRICS],
    )
    keys: tuple[str, ...] = ("kind", "window_start_us", "sensor_id", "source_partition")
    if with_dead_letters:
        # A reject's fields are part of its (unique) key: text in an aggregation buffer would take
        # Spark off its hash aggregation onto sorting every row.
        key, value = dead_letter_columns()
        keyed += (
            F.when(~valid, F.col("source_offset")).alias("source_offset"),
            F.when(~valid, reason_kind()).alias("reason_kind"),
            F.when(~valid, key).alias("reject_key"),
            F.when(~valid, value).alias("dead_letter"),
        )
        keys += ("source_offset", "reason_kind", "reject_key", "dead_letter")
    aggregates = (F.count_if("newest").alias("records"), *partial_columns(), F.max("event_us").alias("max_event_us"))
    return keyed, keys, aggregates
