"""The stream's query plans: Kafka -> parse once -> records shuffled by (window, sensor) -> Spark's
window aggregation and each record's own row, over one exchange; the parquet sink's query; the
stream's Spark session."""

from __future__ import annotations

import json
import weakref

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorstream.aggregate import FINISHED, finish_windows, partial_columns, reason_kind, window_column, window_stats
from sensorstream.config import Settings, micros, spark_interval, spark_kafka_options
from sensorstream.schema import ALERT_KINDS, METRICS, REASON_KINDS, alert_json, dead_letter_columns, parse


def read_source(spark: SparkSession, settings: Settings, fail_on_data_loss: bool = True) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", settings.input_topic)
        .option("startingOffsets", settings.starting_offsets)
        .option("failOnDataLoss", str(fail_on_data_loss).lower())
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


_UTC_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"


def _window_inputs(valid: Column) -> list[Column]:
    """A parsed record's columns as the windows' aggregation takes them: a reading's as they are; a
    reject's with the Unix epoch's event time (its window is late at once, or holds no readings:
    its metrics are null) and no sensor. No filter on `reason`: Spark would push it into the parse."""
    return [
        F.coalesce(F.col("event_time"), F.timestamp_seconds(F.lit(0))).alias("event_time"),
        F.when(valid, F.col("sensor_id")).alias("sensor_id"),
        *[F.col(m) for m in METRICS],
    ]


#: What the detector reads besides the shuffled records' own columns (STREAM_DETECT=on only: the
#: shuffle is wider by them).
DETECTOR_COLUMNS = ("event_us", "source_partition", "source_offset")


def _detected() -> tuple[Column, ...]:
    return (F.unix_micros(F.col("event_time")).alias("event_us"), F.col("source_partition"), F.col("source_offset"))


def shuffled_records(source: DataFrame, settings: Settings) -> DataFrame:
    """Kafka records -> parsed once -> one row each (`windowed_records`), counted (`RECORD_METRICS`),
    shuffled by (window, sensor): what both branches of the query read (`stream_plan`). By the
    state's own keys: the stateful aggregation needs no shuffle of its own, so Spark plans one
    exchange for both branches and reuses it (one Kafka read, one parse, one count)."""
    counted = windowed_records(source, settings).observe(RECORD_METRICS, *record_counts())
    return counted.repartition("window", "sensor_id")


def windowed_records(source: DataFrame, settings: Settings) -> DataFrame:
    """Kafka records -> parsed once -> one row each, a reading's for each of its windows.

    Columns: `window` (of the event time; a reject gets the Unix epoch's, which never moves the
    watermark), `sensor_id` and the metrics (null for a reject), `dead_letter` (a reject's key,
    value and kind of reason; null for a reading) and `newest` (the row of a reading's newest
    window, when windows slide; every row when they do not).
    """
    records = parse(source)
    valid = F.col("reason").isNull()
    key, value = dead_letter_columns()
    detecting = _detected() if settings.detect == "on" else ()
    timed = records.select(
        *_window_inputs(valid),
        F.when(~valid, F.struct(key.alias("key"), value.alias("value"), reason_kind().alias("reason_kind"))).alias(
            "dead_letter"
        ),
        *detecting,
    ).withWatermark("event_time", spark_interval(settings.watermark_delay))
    window = window_column(F.col("event_time"), settings.window_duration, settings.slide_duration)
    step_us = micros(settings.slide_duration or settings.window_duration)
    extra = [c for c in DETECTOR_COLUMNS if detecting]
    windowed = timed.select(window.alias("window"), "sensor_id", *METRICS, "dead_letter", "event_time", *extra).select(
        "window",
        "sensor_id",
        *METRICS,
        "dead_letter",
        (F.unix_micros(F.col("event_time")) < F.unix_micros(F.col("window.start")) + F.lit(step_us)).alias("newest"),
        *extra,
    )
    return windowed


def stream_plan(source: DataFrame, settings: Settings) -> DataFrame:
    """The one streaming query: Spark's windowed aggregation of the readings (its state store,
    update mode) unioned with every record's own row (rejects' dead letters), both over the same
    shuffled records, in one task per state partition. With the detector, its rows (alerts, and
    the rejects' dead letters, which pass through it) take the records' place (`detector_rows`).
    Columns: kind ("window", "reading", "reject", "alert"), topic, key, value (a window's, a
    reject's or an alert's Kafka record), reason_kind, newest, num_readings, `_shared`.

    `_shared` reads every shuffled column in both branches: Spark prunes each branch's columns
    before the exchange, and reuses an exchange only when both branches need the very same ones.
    """
    shuffled = shuffled_records(source, settings)
    detecting = settings.detect == "on"
    extra = DETECTOR_COLUMNS if detecting else ()
    windows = finish_windows(
        shuffled.groupBy("window", "sensor_id").agg(
            *partial_columns(),
            sum((F.count(c) for c in extra), F.count("dead_letter") + F.count_if("newest")).alias("_shared"),
        ),
        extra=("_shared",),
    )
    start = F.date_format("window_start", _UTC_FORMAT)
    window_rows = windows.select(
        F.lit("window").alias("kind"),
        F.lit(settings.output_topic).alias("topic"),
        F.concat_ws("|", "sensor_id", start).alias("key"),
        F.to_json(
            F.struct(
                start.alias("window_start"),
                F.date_format("window_end", _UTC_FORMAT).alias("window_end"),
                "sensor_id",
                *FINISHED,
            )
        ).alias("value"),
        F.lit(None).cast("string").alias("reason_kind"),
        F.lit(True).alias("newest"),
        "num_readings",
        "_shared",
    )
    if detecting:
        rows = window_rows.unionByName(detector_rows(shuffled, settings))
    else:
        rows = window_rows.unionByName(record_rows(shuffled, settings))
    # One task per state partition, not one per branch's partition: a union has the partitions of
    # all its branches (2N), and a record branch's task costs nearly what a window branch's does
    # when a batch is small (jobs/README.md, "Tasks per micro-batch").
    return rows.coalesce(settings.state_partitions).observe(BATCH_METRICS, *batch_counts())


def record_rows(shuffled: DataFrame, settings: Settings) -> DataFrame:
    """Every shuffled record's own row: a reject's dead letter, a reading's nothing to write (a row
    all the same: a filter here would be pushed below the shared exchange, and nothing reused)."""
    is_reject = F.col("dead_letter").isNotNull()
    return shuffled.select(
        F.when(is_reject, F.lit("reject")).otherwise(F.lit("reading")).alias("kind"),
        F.lit(settings.dead_letter_topic).alias("topic"),
        F.col("dead_letter.key").alias("key"),
        F.col("dead_letter.value").alias("value"),
        F.col("dead_letter.reason_kind").alias("reason_kind"),
        "newest",
        F.lit(0).cast("long").alias("num_readings"),
        # cheap: a count of nulls (casting the metrics to text cost about 1 us a record)
        sum((F.isnull(F.col(c)).cast("long") for c in METRICS), F.isnull(F.col("sensor_id")).cast("long")).alias(
            "_shared"
        ),
    )


#: The stream query's own observed metrics (Spark's `observe`): a batch's figures, counted by the
#: batch's one Spark job as its rows go by, read by the handler once it has written them
#: (`batches._Observed`). The records' are counted before the shared exchange, as they are parsed
#: (`record_counts`), the stream rows' after the union (`batch_counts`). An `Observation` in the
#: handler counted the same rows at about 0.1 s a batch more; counting the records over the union
#: too, a little more and more generated code (jobs/README.md, "Counting a batch").
RECORD_METRICS = "sensorstream_records"
BATCH_METRICS = "sensorstream_batch"


def updated_window() -> Column:
    """A stream row that is an updated window with readings (the rejects' epoch window has none)."""
    return (F.col("kind") == "window") & (F.col("num_readings") > 0)


def record_counts() -> list[Column]:
    """The batch's figures over its parsed records (`windowed_records`' rows): records, rejects by
    kind of reason, and `min_end_us`, the end of the earliest newest window of its readings: when it
    is after the batch's watermark no reading was late (the query's expressions cannot name the
    watermark; `late_count` counts them when some may be)."""
    newest, reject = F.col("newest"), F.col("dead_letter").isNotNull()
    return [
        F.count_if(newest).alias("records"),
        *[F.count_if(reject & newest & (F.col("dead_letter.reason_kind") == k)).alias(k) for k in REASON_KINDS],
        F.min(F.when(~reject & newest, F.unix_micros(F.col("window.end")))).alias("min_end_us"),
    ]


def batch_counts() -> list[Column]:
    """The batch's figures over the stream's rows: updated windows (with readings), alerts by kind."""
    kind = F.col("kind")
    return [
        F.count_if(updated_window()).alias("windows"),
        *[F.count_if((kind == "alert") & (F.col("reason_kind") == k)).alias(f"alert_{k}") for k in ALERT_KINDS],
    ]


def late_count(
    spark: SparkSession, settings: Settings, start: dict[int, int], end: dict[int, int], mark_ms: int
) -> int:
    """The readings among the input topic's offsets [start, end) (partition -> offset; a partition
    missing from `start`: its earliest) whose newest window ends at or before `mark_ms`: the late
    readings of a micro-batch, counted again from the topic with the same parse and windows. Only
    for a batch that may have some (`batch_counts`' min_end_us): a second read of its records."""
    topic = settings.input_topic
    reader = (
        spark.read.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", topic)
        .option("startingOffsets", json.dumps({topic: {str(p): start.get(p, -2) for p in end}}))
        .option("endingOffsets", json.dumps({topic: {str(p): o for p, o in end.items()}}))
        .option("failOnDataLoss", "false")  # what the batch skipped (--skip-lost-records) is not counted
    )
    windowed = windowed_records(reader.load(), settings)
    late = F.col("dead_letter").isNull() & F.col("newest")
    return windowed.where(late & (F.unix_micros(F.col("window.end")) <= F.lit(mark_ms * 1000))).count()


def detector_input(shuffled: DataFrame) -> DataFrame:
    """What the detector reads of the shuffled records: a reading's sensor, event time, metrics and
    source, and a reject's dead letter. A row of no sensor is no reading for the detector: a reject,
    or a reading's row for other than its newest window (sliding windows); a reject's dead letter
    is there on its newest row only (one per reject).

    Its expressions read every shuffled column: Spark prunes a branch's columns below the shared
    exchange otherwise, and then reuses nothing (the topic read and parsed twice). A filter here
    would be pushed below it the same way."""
    newest, reject = F.col("newest"), F.col("dead_letter").isNotNull()
    reading = newest & ~reject & F.col("window").isNotNull()
    return shuffled.select(
        F.when(reading, F.col("sensor_id")).alias("sensor_id"),
        "event_us",
        *METRICS,
        "source_partition",
        "source_offset",
        *[
            F.when(newest, F.col(f"dead_letter.{field}")).alias(name)
            for field, name in (("key", "reject_key"), ("value", "reject_value"), ("reason_kind", "reason_kind"))
        ],
    )


def detector_rows(shuffled: DataFrame, settings: Settings) -> DataFrame:
    """The detector's rows (jobs/jvm/detector) as the stream's: its alerts, and the rejects' dead
    letters, which pass through it. The records' own branch (`record_rows`) would read the shuffled
    records once more for the dead letters alone (jobs/README.md, "What detection costs")."""
    jvm = shuffled.sparkSession._jvm
    assert jvm is not None  # a classic session's
    detector = jvm.sensorstream.detect.SensorDetector
    out = DataFrame(
        detector.alerts(
            detector_input(shuffled)._jdf,
            float(settings.spike_k),
            0.05,
            20,
            int(settings.stuck_run),
            int(settings.silent_after.total_seconds() * 1000),
            int(settings.watermark_delay.total_seconds() * 1000),
            settings.input_topic,
        ),
        shuffled.sparkSession,
    )
    reject = F.col("kind") == "reject"
    return out.select(
        F.when(reject, F.lit("reject")).otherwise(F.lit("alert")).alias("kind"),
        F.when(reject, F.lit(settings.dead_letter_topic)).otherwise(F.lit(settings.alerts_topic)).alias("topic"),
        F.col("key"),
        F.when(reject, F.col("reject_value")).otherwise(alert_json()).alias("value"),
        F.when(reject, F.col("reason_kind")).otherwise(F.col("kind")).alias("reason_kind"),
        F.lit(True).alias("newest"),
        F.lit(0).cast("long").alias("num_readings"),
        F.lit(0).cast("long").alias("_shared"),
    )


def finals_plan(source: DataFrame, settings: Settings) -> DataFrame:
    """The parquet sink's query: the same parse and windows, in append mode (each window once,
    when the watermark passes it), for Spark's exactly-once file sink.

    Rejects go through the aggregation as in the stream's query (`_window_inputs`), and their
    windows of no readings are dropped after it.
    """
    records = parse(source).select(*_window_inputs(F.col("reason").isNull()))
    windows = window_stats(
        records.withWatermark("event_time", spark_interval(settings.watermark_delay)),
        settings.window_duration,
        settings.slide_duration,
    )
    return windows.where(F.col("num_readings") > 0)


#: The stream's own SQL settings (a session of its own, so a report in the same process keeps
#: Spark's defaults). Late readings are judged against the watermark the batch runs with
#: (allowMultiple false: the one the checkpoint's offsets/N records, so the stream counts exactly
#: what Spark drops). No adaptive re-planning: a micro-batch is small, and the shared exchange must
#: keep its partitioning. The state store provider and the number of state partitions come from
#: the settings (`state_conf`); Kafka's writer is Spark's V2 one (`stream_session`).
STREAM_CONF = {
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.streaming.statefulOperator.allowMultiple": "false",
}
#: STREAM_STATE_STORE -> Spark's state store provider. hdfs: Spark's default, the open windows in
#: the executors' memory, each batch's changes written to the checkpoint as a delta file; rocksdb:
#: the windows in RocksDB on the executors' local disk (off the JVM heap), changes checkpointed as
#: changelogs, for states larger than the executors' memory (jobs/README.md has the figures).
STATE_STORES = {
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
}


def state_conf(settings: Settings) -> dict[str, str]:
    """The state store's settings; Spark freezes both into the checkpoint at its first batch."""
    store = "rocksdb" if settings.detect == "on" else settings.state_store  # transformWithState needs it
    return {
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[store],
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        # RocksDB counts its rows by reading each key before it writes it; uncounted, the stream with
        # the detector keeps 0.84 of its throughput without it, not 0.72 (jobs/README.md, "What
        # detection costs"). Spark then reports 0 state rows: the open windows are not known.
        "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows": "false",
        "spark.sql.shuffle.partitions": str(settings.state_partitions),
    }


def counts_state(settings: Settings) -> bool:
    """Whether Spark's progress counts the open windows (its state rows): not with rocksdb (`state_conf`)."""
    return state_conf(settings)["spark.sql.streaming.stateStore.providerClass"] != STATE_STORES["rocksdb"]


_V1_SOURCES = "spark.sql.sources.useV1SourceList"

#: Keyed by the session itself, held weakly: an id() could come back for a later session after
#: `spark.stop()` and hand it a session of the stopped context.
_STREAM_SESSIONS: weakref.WeakKeyDictionary[SparkSession, SparkSession] = weakref.WeakKeyDictionary()


def stream_session(spark: SparkSession) -> SparkSession:
    """The session the stream's queries run in: `spark`'s context and settings, plus STREAM_CONF."""
    session = _STREAM_SESSIONS.get(spark)
    if session is None:
        session = spark.newSession()
        inherited = {k: v for k, v in spark.conf.getAll.items() if spark.conf.isModifiable(k)}
        for key, value in {**inherited, **STREAM_CONF}.items():  # a new session starts from the context's
            session.conf.set(key, value)
        # Kafka through Spark's V2 writer (Spark's default plans it as a V1 command, which runs its
        # query apart). The other sources keep the list they had (Spark's default, or the user's).
        v1 = session.conf.get(_V1_SOURCES) or ""
        session.conf.set(_V1_SOURCES, ",".join(s for s in v1.split(",") if s.strip().lower() != "kafka"))
        _STREAM_SESSIONS[spark] = session
    return session
