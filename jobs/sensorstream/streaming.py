"""The streaming job's wiring: Kafka source -> parse once -> micro-batches -> open windows -> sinks.

One query reads the input topic and parses each record once (`schema.parse`); for each micro-batch
one Spark job (`aggregate.micro_batch`) summarises the batch, one row per window and sensor (its
partials) and one per reject (its dead letter), and keeps that summary cached while the driver
(`_Batches`) collects the window rows, folds them into the open windows (windows.py) and fans
the batch out:

    dead_letter  every reject, with its reason, to the dead-letter topic (always on), written by
                 Spark's Kafka writer from the cached summary (a second, small job; the texts of
                 the rejects never travel to Python)
    console      the windows the batch updated, as a table on stdout (what `kubectl logs` shows)
    kafka        the windows the batch updated, as JSON to the output topic, key "<sensor_id>|<window_start>"
    parquet      final windows (the watermark passed them), each once, as Parquet files

then logs one progress line. Delivery: a batch counts as done only after its outputs are written
(Kafka acknowledged, files in place), so a crash replays it. Replays re-send its dead letters
(at least once) and its window updates, harmless on the output topic, an upsert log by key
(effectively once); parquet files are named by batch, so a replay rewrites the same file (once).

Adding a sink means adding one function to `_SINKS` below.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from kafka import KafkaProducer
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

from sensorstream.aggregate import FINISHED, micro_batch
from sensorstream.brokers import require_topics
from sensorstream.config import Settings, kafka_python_kwargs, spark_interval, spark_kafka_options
from sensorstream.errors import CheckpointError, SensorstreamError
from sensorstream.schema import parse
from sensorstream.tables import format_table
from sensorstream.windows import BatchOutcome, OpenWindows

QUERY = "stream"
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


def _fingerprint(settings: Settings, query: str) -> dict:
    """What a checkpoint's state depends on: reusing it with other values corrupts results."""
    return {
        "query": query,
        "input_topic": settings.input_topic,
        "window": spark_interval(settings.window_duration),
        "slide": spark_interval(settings.slide_duration) if settings.slide_duration else None,
        "watermark": spark_interval(settings.watermark_delay),
    }


def prepare_checkpoint(settings: Settings, query: str, reset: bool) -> Path:
    """The checkpoint folder of the query; refuses one written by a different query."""
    folder = Path(settings.checkpoint_location) / query
    if reset and folder.exists():
        shutil.rmtree(folder)
    wanted = _fingerprint(settings, query)
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


#: The console keeps the original's columns so the table fits a terminal; the other sinks carry all stats.
CONSOLE_COLUMNS = ["window_start", "window_end", "sensor_id", "num_readings",
                   "avg_temperature", "avg_humidity", "avg_pressure"]
#: A window row as the parquet sink writes it.
WINDOW_SCHEMA = StructType([
    StructField("window_start", TimestampType()),
    StructField("window_end", TimestampType()),
    StructField("sensor_id", StringType()),
    *[StructField(name, LongType() if name == "num_readings" else DoubleType()) for name in FINISHED],
])


def _utc(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Batch:
    """One micro-batch as the sinks see it."""

    batch_id: int
    outcome: BatchOutcome
    rejected: int


class _Output:
    """The driver's Kafka producer for window rows: a batch ends with everything acknowledged."""

    def __init__(self, settings: Settings):
        self._producer: KafkaProducer | None = None
        self._settings = settings
        self._pending: list = []

    def send(self, topic: str, key: str | None, value: str) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(**kafka_python_kwargs(self._settings), acks="all",
                                           enable_idempotence=True, linger_ms=5, client_id="sensorstream-stream")
        self._pending.append(self._producer.send(topic, key=key.encode() if key is not None else None,
                                                 value=value.encode()))

    def flush(self) -> None:
        if self._producer is None:
            return
        self._producer.flush(timeout=60)
        failed = [f for f in self._pending if not f.succeeded()]
        self._pending = []
        if failed:
            error = failed[0].exception if failed[0].is_done else "not acknowledged within 60 s"
            raise SensorstreamError(f"{len(failed)} record(s) not written to Kafka ({error}); the batch will be "
                                    "replayed when the stream restarts")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)


def _console(spark: SparkSession, settings: Settings, output: _Output) -> Callable[[Batch], None]:
    def show(batch: Batch) -> None:
        rows = sorted(batch.outcome.updated, key=lambda r: (r["window_start"], r["sensor_id"]))
        if rows:
            print(f"Batch {batch.batch_id}: {len(rows)} window row(s) updated (times in UTC)", flush=True)
            print(format_table(CONSOLE_COLUMNS, [[r[c] for c in CONSOLE_COLUMNS] for r in rows]), flush=True)
    return show


def _kafka(spark: SparkSession, settings: Settings, output: _Output) -> Callable[[Batch], None]:
    def send(batch: Batch) -> None:
        for row in batch.outcome.updated:
            value = {**row, "window_start": _utc(row["window_start"]), "window_end": _utc(row["window_end"])}
            output.send(settings.output_topic, f"{row['sensor_id']}|{value['window_start']}", json.dumps(value))
    return send


def _parquet(spark: SparkSession, settings: Settings, output: _Output) -> Callable[[Batch], None]:
    folder = Path(settings.parquet_dir)

    def write(batch: Batch) -> None:
        if not batch.outcome.final:
            return
        aside = folder / f"_batch-{batch.batch_id}"  # hidden from readers of the folder
        (spark.createDataFrame([[r[f.name] for f in WINDOW_SCHEMA.fields] for r in batch.outcome.final], WINDOW_SCHEMA)
         .coalesce(1).write.mode("overwrite").parquet(str(aside)))
        for i, part in enumerate(sorted(aside.glob("part-*.parquet"))):
            os.replace(part, folder / f"windows-batch-{batch.batch_id:09d}-{i}.parquet")  # a replay overwrites
        shutil.rmtree(aside)
    return write


_SINKS: dict[str, Callable[[SparkSession, Settings, _Output], Callable[[Batch], None]]] = {
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


class _Batches:
    """The foreachBatch handler: one Spark job per batch, then the open windows, the sinks, a log line."""

    def __init__(self, spark: SparkSession, settings: Settings, state: Path, output: _Output,
                 say: Callable[[str], None], on_progress: Callable[[BatchProgress], None] | None = None):
        self.settings = settings
        self.on_progress = on_progress
        self.windows = OpenWindows(state, settings.window_duration, settings.watermark_delay)
        self.output = output
        self.sinks = [_SINKS[name](spark, settings, output) for name in settings.sinks]
        self.say = say
        self.previous_start: float | None = None

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        summary = micro_batch(records, self.settings.window_duration, self.settings.slide_duration).persist()
        try:
            # the dead letters' text stays in the JVM: Spark's Kafka writer sends them from the cache
            rows = [row.asDict() for row in summary.drop("reject_key", "dead_letter").collect()]
            windows = [row for row in rows if row["kind"] == "window"]
            if len(windows) < len(rows):
                self._dead_letters(summary)
        finally:
            summary.unpersist()
        batch = Batch(batch_id, self.windows.apply(batch_id, windows), len(rows) - len(windows))
        for sink in self.sinks:
            sink(batch)
        self.output.flush()
        self._progress(batch, sum(row["records"] for row in rows), started)

    def _dead_letters(self, summary: DataFrame) -> None:
        """Every reject of the batch to the dead-letter topic, acknowledged by all in-sync replicas."""
        (summary.where(F.col("kind") == "reject")
         .select(F.col("reject_key").alias("key"), F.col("dead_letter").alias("value"))
         .write.format("kafka").options(**spark_kafka_options(self.settings))
         .option("kafka.acks", "all").option("kafka.enable.idempotence", "true")
         .option("topic", self.settings.dead_letter_topic).save())

    def _progress(self, batch: Batch, records: int, started: float) -> None:
        took = time.monotonic() - started
        since = started - self.previous_start if self.previous_start is not None else None
        self.previous_start = started
        progress = BatchProgress(batch.batch_id, records, batch.rejected, batch.outcome.late,
                                 len(batch.outcome.updated), len(batch.outcome.final), batch.outcome.watermark,
                                 took, records / since if since else None, len(self.windows.windows))
        if self.on_progress:
            self.on_progress(progress)
        self.say(progress.line())


@dataclass(frozen=True)
class BatchProgress:
    """One micro-batch's figures, as the progress line shows them."""

    batch_id: int
    records: int
    rejected: int
    late: int
    windows_updated: int
    windows_final: int
    watermark: datetime
    seconds: float
    arriving_per_s: float | None  # records over the time since the previous batch started
    open_windows: int = 0  # windows held open after the batch (the stream's state)

    def line(self) -> str:
        arriving = f", {self.arriving_per_s:,.0f}/s arriving" if self.arriving_per_s is not None else ""
        processed = self.records / self.seconds if self.seconds > 0 else 0.0
        return (f"batch {self.batch_id}: {self.records:,} records ({self.rejected:,} rejected, {self.late:,} late "
                f"dropped) in {self.seconds:.2f} s, {processed:,.0f}/s processed{arriving}; "
                f"{self.windows_updated} window(s) updated, {self.windows_final} final; "
                f"watermark {self.watermark:%Y-%m-%d %H:%M:%S}")


def start_query(spark: SparkSession, settings: Settings, output: _Output, available_now: bool = False,
                reset_checkpoint: bool = False, say: Callable[[str], None] = lambda m: None,
                on_progress: Callable[[BatchProgress], None] | None = None) -> StreamingQuery:
    """Start the one streaming query: source -> parse -> `_Batches`."""
    preflight(settings)
    checkpoint = prepare_checkpoint(settings, QUERY, reset_checkpoint)
    handler = _Batches(spark, settings, checkpoint / "open_windows", output, say, on_progress)
    trigger = {"availableNow": True} if available_now else {"processingTime": spark_interval(settings.trigger_interval)}
    return (parse(read_source(spark, settings)).writeStream.queryName(f"sensorstream_{QUERY}")
            .foreachBatch(handler).option("checkpointLocation", str(checkpoint)).trigger(**trigger).start())


def run(spark: SparkSession, settings: Settings, available_now: bool = False, reset_checkpoint: bool = False,
        stop: threading.Event | None = None, say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
        on_progress: Callable[[BatchProgress], None] | None = None) -> None:
    """Run until `stop` is set (SIGTERM, Ctrl+C) or, with available_now, until the topic is drained.

    `say` gets the log lines (one per micro-batch); `on_progress` the same figures as a BatchProgress.
    """
    stop = stop or threading.Event()
    output = _Output(settings)
    try:
        query = start_query(spark, settings, output, available_now, reset_checkpoint, say, on_progress)
        say(f"streaming {settings.input_topic} -> {', '.join(settings.sinks)} (+ dead letters to "
            f"{settings.dead_letter_topic}); window {spark_interval(settings.window_duration)}, watermark "
            f"{spark_interval(settings.watermark_delay)}; checkpoint in {settings.checkpoint_location}")
        try:
            while not stop.is_set() and query.isActive:
                query.awaitTermination(1)
        finally:
            if query.isActive:
                query.stop()
        if query.exception():
            raise _query_error(query)
    finally:
        output.close()
    say("stream stopped" + (" (topic drained)" if available_now and not stop.is_set() else ""))


def _query_error(query: StreamingQuery) -> SensorstreamError:
    text = str(query.exception()).strip().splitlines()
    first = text[0] if text else "unknown error"
    if "checkpoint" in first.lower() or "state schema" in first.lower():
        return CheckpointError(
            f"query {query.name} cannot use its checkpoint ({first[:200]}); start fresh with --reset-checkpoint"
        )
    return SensorstreamError(f"query {query.name} failed: {first[:300]}")
