"""The streaming job's wiring: Kafka source -> parse + validate -> windows -> sinks.

One query per sink, each with its own checkpoint folder under the checkpoint root:
    dead_letter  rejects, as JSON with the reason, to the dead-letter topic (always on)
    console      window rows as a table on stdout (what `kubectl logs` shows), output mode update
    kafka        window rows as JSON to the output topic, key "<sensor_id>|<window_start>", update
    parquet      final windows (after the watermark passes) as Parquet files, append

Adding a sink means adding one function to `_SINKS` below.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from sensorstream.aggregate import window_stats
from sensorstream.brokers import require_topics
from sensorstream.config import Settings, spark_interval, spark_kafka_options
from sensorstream.errors import CheckpointError, SensorstreamError
from sensorstream.schema import parse_and_validate, reject_json
from sensorstream.tables import format_table

FINGERPRINT = "sensorstream-query.json"


def read_source(spark: SparkSession, settings: Settings) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", settings.input_topic)
        .option("startingOffsets", settings.starting_offsets)
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


def _fingerprint(settings: Settings, sink: str) -> dict:
    """What a checkpoint's state depends on: reusing it with other values corrupts results."""
    return {
        "sink": sink,
        "input_topic": settings.input_topic,
        "window": spark_interval(settings.window_duration),
        "slide": spark_interval(settings.slide_duration) if settings.slide_duration else None,
        "watermark": spark_interval(settings.watermark_delay),
    }


def prepare_checkpoint(settings: Settings, sink: str, reset: bool) -> Path:
    """The checkpoint folder of one sink; refuses one written by a different query."""
    folder = Path(settings.checkpoint_location) / sink
    if reset and folder.exists():
        shutil.rmtree(folder)
    wanted = _fingerprint(settings, sink)
    marker = folder / FINGERPRINT
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except ValueError:
            found = {}
        if found != wanted:
            diff = ", ".join(f"{k} {found.get(k)!r} -> {v!r}" for k, v in wanted.items() if found.get(k) != v)
            raise CheckpointError(
                f"checkpoint {folder} belongs to another query ({diff}); start fresh with "
                "--reset-checkpoint (deletes it) or use another CHECKPOINT_LOCATION"
            )
    elif folder.exists() and any(folder.iterdir()):
        raise CheckpointError(
            f"checkpoint {folder} was not written by sensorstream; start fresh with --reset-checkpoint "
            "(deletes it) or use another CHECKPOINT_LOCATION"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted, indent=2))
    return folder


def _print_batch(columns: list[str]) -> Callable[[DataFrame, int], None]:
    def show(batch: DataFrame, batch_id: int) -> None:
        rows = batch.orderBy("window_start", "sensor_id").collect()
        if not rows:
            return
        print(f"Batch {batch_id}: {len(rows)} window row(s) updated (times in UTC)", flush=True)
        print(format_table(columns, [tuple(r) for r in rows]), flush=True)

    return show


#: The console keeps the original's columns so the table fits a terminal; the other sinks carry all stats.
CONSOLE_COLUMNS = ["window_start", "window_end", "sensor_id", "num_readings",
                   "avg_temperature", "avg_humidity", "avg_pressure"]


def _console(windows: DataFrame, settings: Settings) -> DataStreamWriter:
    return (windows.select(*CONSOLE_COLUMNS).writeStream.outputMode("update")
            .foreachBatch(_print_batch(CONSOLE_COLUMNS)))


def _kafka(windows: DataFrame, settings: Settings) -> DataStreamWriter:
    record = windows.select(
        F.concat_ws("|", "sensor_id", F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ssXXX")).alias("key"),
        F.to_json(F.struct(
            F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ssXXX").alias("window_start"),
            F.date_format("window_end", "yyyy-MM-dd'T'HH:mm:ssXXX").alias("window_end"),
            *[c for c in windows.columns if c not in ("window_start", "window_end")],
        )).alias("value"),
    )
    return (record.writeStream.outputMode("update").format("kafka")
            .options(**spark_kafka_options(settings)).option("topic", settings.output_topic))


def _parquet(windows: DataFrame, settings: Settings) -> DataStreamWriter:
    return (windows.writeStream.outputMode("append").format("parquet")
            .option("path", str(settings.parquet_dir)))


_SINKS: dict[str, Callable[[DataFrame, Settings], DataStreamWriter]] = {
    "console": _console,
    "kafka": _kafka,
    "parquet": _parquet,
}


def preflight(settings: Settings) -> None:
    """Fail in seconds, before any query starts, when the broker or a topic is missing."""
    topics = [settings.input_topic, settings.dead_letter_topic]
    if "kafka" in settings.sinks:
        topics.append(settings.output_topic)
    require_topics(settings, topics)


def start_queries(spark: SparkSession, settings: Settings, available_now: bool = False,
                  reset_checkpoint: bool = False) -> list[StreamingQuery]:
    """Start the dead-letter query and one query per configured sink."""
    preflight(settings)

    readings, rejects = parse_and_validate(read_source(spark, settings))
    windows = window_stats(readings, settings.window_duration, settings.slide_duration, settings.watermark_delay)
    writers = {
        "dead_letter": (rejects.select(F.col("sensor_id").alias("key"), reject_json().alias("value"))
                        .writeStream.format("kafka").options(**spark_kafka_options(settings))
                        .option("topic", settings.dead_letter_topic)),
    }
    for sink in settings.sinks:
        writers[sink] = _SINKS[sink](windows, settings)

    trigger = {"availableNow": True} if available_now else {"processingTime": spark_interval(settings.trigger_interval)}
    queries = []
    try:
        for name, writer in writers.items():
            checkpoint = prepare_checkpoint(settings, name, reset_checkpoint)
            queries.append(writer.queryName(f"sensorstream_{name}").option("checkpointLocation", str(checkpoint))
                           .trigger(**trigger).start())
    except Exception:
        for query in queries:
            query.stop()
        raise
    return queries


def run(spark: SparkSession, settings: Settings, available_now: bool = False, reset_checkpoint: bool = False,
        stop: threading.Event | None = None, say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
    """Run until `stop` is set (SIGTERM, Ctrl+C) or, with available_now, until the topic is drained."""
    stop = stop or threading.Event()
    queries = start_queries(spark, settings, available_now, reset_checkpoint)
    say(f"streaming {settings.input_topic} -> {', '.join(settings.sinks)} (+ dead letters to "
        f"{settings.dead_letter_topic}); window {spark_interval(settings.window_duration)}, watermark "
        f"{spark_interval(settings.watermark_delay)}; checkpoints in {settings.checkpoint_location}")
    try:
        while not stop.is_set():
            if all(not q.isActive for q in queries):
                break
            spark.streams.awaitAnyTermination(1)
            spark.streams.resetTerminated()
            for query in queries:
                if query.exception():
                    raise _query_error(query)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
    failed = [q for q in queries if q.exception()]
    if failed:
        raise _query_error(failed[0])
    say("stream stopped" + (" (topic drained)" if available_now and not stop.is_set() else ""))


def _query_error(query: StreamingQuery) -> SensorstreamError:
    text = str(query.exception()).strip().splitlines()
    first = text[0] if text else "unknown error"
    if "checkpoint" in first.lower() or "state schema" in first.lower():
        return CheckpointError(
            f"query {query.name} cannot use its checkpoint ({first[:200]}); start fresh with --reset-checkpoint"
        )
    return SensorstreamError(f"query {query.name} failed: {first[:300]}")
