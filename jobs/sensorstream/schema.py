"""A reading's fields, their physical ranges, and the one parse + validate both jobs use.

`parse_and_validate(kafka_df) -> (readings, rejects)` is a pure DataFrame function that works the
same on a streaming and a batch DataFrame read from Kafka. Every input record lands in exactly one
of the two: a bad record never becomes a silent null, it becomes a reject with a reason:

    invalid JSON                        the value is not a JSON object
    missing field: <f>                  a required field is absent or null
    wrong type: <f>                     a field has the wrong JSON type (e.g. "hot" for a number)
    bad timestamp: <value>              not an ISO-8601 date-time
    out of range: <f>=<v> not in [lo, hi]

Rejects carry the original value and the source topic, partition and offset.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

#: The measured quantities, in °C, % relative humidity and hPa, with their physical ranges.
METRICS = ("temperature", "humidity", "pressure")
RANGES = {
    "temperature": (-40.0, 85.0),
    "humidity": (0.0, 100.0),
    "pressure": (300.0, 1100.0),
}
REQUIRED = ("sensor_id", "timestamp", *METRICS)

#: The JSON a producer sends. seq and event_id are optional for foreign producers.
READING_SCHEMA = StructType([
    StructField("sensor_id", StringType()),
    StructField("timestamp", StringType()),
    StructField("temperature", DoubleType()),
    StructField("humidity", DoubleType()),
    StructField("pressure", DoubleType()),
    StructField("seq", LongType()),
    StructField("event_id", StringType()),
])
_CORRUPT = "_corrupt_record"
_PARSE_SCHEMA = StructType([*READING_SCHEMA.fields, StructField(_CORRUPT, StringType())])

#: Columns of a valid reading, as both jobs see it.
READING_COLUMNS = ("sensor_id", "event_time", *METRICS, "seq", "event_id")
#: Columns of a reject, as written to the dead-letter topic (JSON) and counted by the report.
REJECT_COLUMNS = ("reason", "value", "sensor_id", "source_topic", "source_partition", "source_offset",
                  "kafka_timestamp")


def _present(raw: Column, field: str) -> Column:
    """The raw JSON has a non-null value at `field` (whatever its type)."""
    return F.get_json_object(raw, f"$.{field}").isNotNull()


def _reason(raw: Column, parsed: Column, event_time: Column) -> Column:
    """The first problem of a record, or null when it is a valid reading."""
    is_object = F.trim(raw).startswith("{") & F.trim(raw).endswith("}")
    reason = F.when(
        raw.isNull() | ~is_object | parsed.isNull() | F.get_json_object(raw, "$").isNull(),
        F.lit("invalid JSON"),
    )
    for field in REQUIRED:
        reason = reason.when(~_present(raw, field), F.lit(f"missing field: {field}"))
    for field in (*METRICS, "seq"):
        reason = reason.when(_present(raw, field) & parsed[field].isNull(), F.lit(f"wrong type: {field}"))
    reason = reason.when(
        F.length(F.trim(parsed["sensor_id"])) == 0, F.lit("missing field: sensor_id")
    ).when(
        event_time.isNull(), F.concat(F.lit("bad timestamp: "), parsed["timestamp"])
    )
    for field in METRICS:
        low, high = RANGES[field]
        value = parsed[field]
        reason = reason.when(
            F.isnan(value) | (value < low) | (value > high),
            F.format_string(f"out of range: {field}=%s not in [{low:g}, {high:g}]", value.cast("string")),
        )
    return reason


def parse_and_validate(kafka_df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Kafka records (value, topic, partition, offset, timestamp) -> (readings, rejects)."""
    raw = F.col("value").cast("string")
    parsed = F.from_json(raw, _PARSE_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT})
    staged = kafka_df.select(
        raw.alias("raw"),
        parsed.alias("parsed"),
        F.col("topic").alias("source_topic"),
        F.col("partition").alias("source_partition"),
        F.col("offset").alias("source_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
    ).withColumn("event_time", F.col("parsed.timestamp").try_cast("timestamp"))
    staged = staged.withColumn("reason", _reason(F.col("raw"), F.col("parsed"), F.col("event_time")))

    readings = staged.where(F.col("reason").isNull()).select(
        F.trim(F.col("parsed.sensor_id")).alias("sensor_id"),
        "event_time",
        *[F.col(f"parsed.{m}").alias(m) for m in METRICS],
        F.col("parsed.seq").alias("seq"),
        F.col("parsed.event_id").alias("event_id"),
    )
    rejects = staged.where(F.col("reason").isNotNull()).select(
        "reason",
        F.col("raw").alias("value"),
        F.get_json_object(F.col("raw"), "$.sensor_id").alias("sensor_id"),
        "source_topic", "source_partition", "source_offset", "kafka_timestamp",
    )
    return readings, rejects


def reject_json() -> Column:
    """A reject as the JSON value of a dead-letter record."""
    return F.to_json(F.struct(
        "reason", "value", "source_topic", "source_partition", "source_offset",
        F.date_format("kafka_timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("kafka_timestamp"),
    ))
