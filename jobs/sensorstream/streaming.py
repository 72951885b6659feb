"""The streaming job's wiring: Kafka source -> parse once -> micro-batches -> open windows -> sinks.

One query reads the input topic and parses each record once (`schema.parse`, in two halves: the
query runs `check`, the typed parse and cheap checks a valid reading passes; `explain` names the
reasons of those that do not). For each micro-batch one Spark job (`aggregate.micro_batch`)
summarises it, one row per window and sensor (their partials) and one per reject (its dead
letter), and the driver (`_Batches`) folds the window rows into the open windows (windows.py) and
fans the batch out. While batches bring rejects, that job explains every record; once a batch
comes clean, it summarises only the readings that passed the checks, so a clean stream never plans
the long reason expressions, and a later batch explains apart, in a second job, just the records
that failed them (and goes back to explaining all):

    dead_letter  every reject, with its reason, to the dead-letter topic (always on), written by
                 Spark's Kafka writer from the summary, cached meanwhile (the texts of the rejects
                 never travel to Python)
    console      the windows the batch updated, as a table on stdout (what `kubectl logs` shows)
    kafka        the windows the batch updated, as JSON to the output topic, key "<sensor_id>|<window_start>"
    parquet      final windows (the watermark passed them), each once, as Parquet files

then logs one progress line. With --max-reject-ratio, a batch whose share of rejects is above it
(batches under 100 records are judged together with the next ones) is still written and committed
like any other (its rejects all in the dead-letter topic, its readings in the windows), and then
the stream stops with one line naming the batch and the fix (`RejectLimit`): it would otherwise
keep turning a producer's garbage into dead letters.

Health: Spark's own report of each batch, and of each stretch with nothing to read (`onQueryIdle`,
every 10 s while idle), comes to a listener (`_Pulses`) as a `Pulse`: when the query last moved
and how many records each input partition is behind the topic's end. Each also touches the
heartbeat file, which the driver's liveness probe reads: a query that stops advancing stops it.

Delivery: a batch counts as done only after its outputs are written (Kafka acknowledged, files in
place), so a crash replays it. Replays re-send its dead letters (at least once) and its window
updates, harmless on the output topic, an upsert log by key (effectively once); parquet files are
named by batch, so a replay rewrites the same file (once).

Adding a sink means adding one function to `_SINKS` below.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kafka import KafkaProducer
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

from sensorstream import offsets
from sensorstream.aggregate import FINISHED, micro_batch
from sensorstream.brokers import require_topics
from sensorstream.config import Settings, spark_interval, spark_kafka_options
from sensorstream.errors import CheckpointError, SensorstreamError
from sensorstream.kafka_producer import kafka_producer
from sensorstream.schema import check, explain, failed_check, passed_readings
from sensorstream.tables import format_table
from sensorstream.windows import BatchOutcome, OpenWindows

QUERY = "stream"
QUERY_NAME = f"sensorstream_{QUERY}"
FINGERPRINT = "sensorstream-query.json"

_log = logging.getLogger(__name__)


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
CONSOLE_COLUMNS = [
    "window_start",
    "window_end",
    "sensor_id",
    "num_readings",
    "avg_temperature",
    "avg_humidity",
    "avg_pressure",
]
#: A window row as the parquet sink writes it.
WINDOW_SCHEMA = StructType(
    [
        StructField("window_start", TimestampType()),
        StructField("window_end", TimestampType()),
        StructField("sensor_id", StringType()),
        *[StructField(name, LongType() if name == "num_readings" else DoubleType()) for name in FINISHED],
    ]
)


def _utc(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Batch:
    """One micro-batch as the sinks see it."""

    batch_id: int
    outcome: BatchOutcome
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # {kind of reason: rejects}

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


class _Output:
    """The driver's Kafka producer for window rows: a batch ends with everything acknowledged."""

    def __init__(self, settings: Settings):
        self._producer: KafkaProducer | None = None
        self._settings = settings
        self._pending: list = []

    def send(self, topic: str, key: str | None, value: str) -> None:
        if self._producer is None:
            self._producer = kafka_producer(
                self._settings, acks="all", enable_idempotence=True, linger_ms=5, client_id="sensorstream-stream"
            )
        self._pending.append(
            self._producer.send(topic, key=key.encode() if key is not None else None, value=value.encode())
        )

    def flush(self) -> None:
        if self._producer is None:
            return
        self._producer.flush(timeout=60)
        failed = [f for f in self._pending if not f.succeeded()]
        self._pending = []
        if failed:
            error = failed[0].exception if failed[0].is_done else "not acknowledged within 60 s"
            raise SensorstreamError(
                f"{len(failed)} record(s) not written to Kafka ({error}); the batch will be "
                "replayed when the stream restarts"
            )

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
        (
            spark.createDataFrame(
                [[r[f.name] for f in WINDOW_SCHEMA.fields] for r in batch.outcome.final], WINDOW_SCHEMA
            )
            .coalesce(1)
            .write.mode("overwrite")
            .parquet(str(aside))
        )
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


def check_checkpoint(settings: Settings, skip_lost_records: bool = False) -> list[offsets.Gap]:
    """The stream's checkpoint held against its input topic (offsets.py): CheckpointError naming the
    fix, or the gaps `skip_lost_records` allows."""
    return offsets.check(settings, Path(settings.checkpoint_location) / QUERY, skip_lost_records)


#: Fewer records than this are not judged against --max-reject-ratio on their own: small batches
#: add up until they reach it (one bad record in a batch of three is not a producer sending garbage).
REJECT_RATIO_MIN_RECORDS = 100


class RejectLimit:
    """The first micro-batch whose share of rejects is above --max-reject-ratio, once it is written.

    Batches are judged one by one, or, when smaller than REJECT_RATIO_MIN_RECORDS, together with
    the batches after them until they reach it. Set by the foreachBatch handler, from Spark's stream
    thread; `run` then waits for Spark to commit the batch before it stops the query, so a restart
    goes on from the next batch instead of replaying this one (and stopping on it again, forever).
    """

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.batch_id: int | None = None
        self.message = ""
        self._first: int | None = None  # the batches not judged yet: from _first, with these counts
        self._records = 0
        self._rejected = 0

    def check(self, settings: Settings, batch_id: int, records: int, rejected: int) -> None:
        limit = settings.max_reject_ratio
        if limit is None or not records or self.reached.is_set():
            return
        if self._first is None:
            self._first = batch_id
        self._records += records
        self._rejected += rejected
        if self._records < REJECT_RATIO_MIN_RECORDS:
            return
        first, records, rejected = self._first, self._records, self._rejected
        self._first, self._records, self._rejected = None, 0, 0
        if rejected / records <= limit:
            return
        batches = f"micro-batch {batch_id}" if first == batch_id else f"micro-batches {first}-{batch_id}"
        self.batch_id = batch_id
        self.message = (
            f"{batches} rejected {rejected:,} of {records:,} records ({rejected / records:.1%}), over "
            f"--max-reject-ratio {limit:g}; see the dead-letter topic {settings.dead_letter_topic} for "
            "each record and its reason, fix the producer, then restart the stream"
        )
        self.reached.set()

    def error(self, committed: bool) -> SensorstreamError:
        after = (
            f"(it goes on after micro-batch {self.batch_id})"
            if committed
            else f"(micro-batch {self.batch_id} was not committed: it runs again, and stops again, unless the "
            "limit is raised)"
        )
        return SensorstreamError(
            f"{self.message} {after}, or raise or unset --max-reject-ratio (STREAM_MAX_REJECT_RATIO)"
        )


class _Batches:
    """The foreachBatch handler: one Spark job per batch, then the open windows, the sinks, a log line."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        state: Path,
        output: _Output,
        say: Callable[[str], None],
        on_progress: Callable[[BatchProgress], None] | None = None,
        stopping: threading.Event | None = None,
        limit: RejectLimit | None = None,
    ):
        self.settings = settings
        self.stopping = stopping or threading.Event()
        self.limit = limit or RejectLimit()
        self.on_progress = on_progress
        self.windows = OpenWindows(state, settings.window_duration, settings.watermark_delay)
        self.output = output
        self.sinks = [_SINKS[name](spark, settings, output) for name in settings.sinks]
        self.say = say
        self.previous_start: float | None = None
        # Explain every record while batches keep bringing rejects (one job, the long plan); check
        # only, and explain apart just the records that fail the checks, once a batch comes clean.
        self.explain_all = True

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        try:
            self._batch(records, batch_id)
        except Exception as exc:
            # What goes back to the JVM must be short: Spark matches a foreachBatch error's text
            # against a backtracking regex, which overflows the stack on a long Java stack trace.
            if self.stopping.is_set():
                self.say(
                    f"stopped during micro-batch {batch_id}; it was not committed and runs again when the "
                    "stream restarts"
                )
                # the words by which Spark tells a stop from a failure (StreamExecution.PROXY_ERROR)
                raise SensorstreamError(
                    f"batch {batch_id} interrupted by the stop: py4j.protocol.Py4JJavaError: "
                    "An error occurred while calling the batch: java.lang.InterruptedException"
                ) from None
            _log.debug("micro-batch %s failed", batch_id, exc_info=True)  # the whole trace, for LOG_LEVEL=DEBUG
            lines = str(exc).strip().splitlines()
            raise SensorstreamError(f"batch {batch_id} failed: {(lines[0] if lines else repr(exc))[:300]}") from None

    def _batch(self, checked: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if self.explain_all:  # one job for the whole batch, explained
            windows, records, rejects = self._explained(checked)
            self.explain_all = sum(rejects.values()) > 0
        else:  # one job for the readings that passed the checks; the others apart, if any
            windows, records, unchecked = _counted(self._summary(passed_readings(checked)).collect())
            rejects = Counter()
            if unchecked:
                valid_after_all, _, rejects = self._explained(failed_check(checked))
                windows += valid_after_all
                self.explain_all = True
        batch = Batch(batch_id, self.windows.apply(batch_id, windows), dict(rejects))
        for sink in self.sinks:
            sink(batch)
        self.output.flush()
        self._progress(batch, records, started)
        self.limit.check(self.settings, batch_id, records, batch.rejected)

    def _summary(self, records: DataFrame, with_dead_letters: bool = False) -> DataFrame:
        return micro_batch(records, self.settings.window_duration, self.settings.slide_duration, with_dead_letters)

    def _explained(self, checked: DataFrame) -> tuple[list[dict], int, Counter]:
        """`check`ed records explained and summarised (window rows, records, rejects by kind of
        reason), in one job;
        the summary stays cached while Spark's Kafka writer sends the rejects' dead letters from it
        (acknowledged by all in-sync replicas), so their text never travels to Python."""
        summary = self._summary(explain(checked), with_dead_letters=True).persist()
        try:
            windows, records, rejected = _counted(summary.drop("reject_key", "dead_letter").collect())
            if sum(rejected.values()):
                (
                    summary.where(F.col("kind") == "reject")
                    .select(F.col("reject_key").alias("key"), F.col("dead_letter").alias("value"))
                    .write.format("kafka")
                    .options(**spark_kafka_options(self.settings))
                    .option("kafka.acks", "all")
                    .option("kafka.enable.idempotence", "true")
                    .option("topic", self.settings.dead_letter_topic)
                    .save()
                )
        finally:
            summary.unpersist()
        return windows, records, rejected

    def _progress(self, batch: Batch, records: int, started: float) -> None:
        took = time.monotonic() - started
        since = started - self.previous_start if self.previous_start is not None else None
        self.previous_start = started
        progress = BatchProgress(
            batch.batch_id,
            records,
            batch.rejected,
            batch.outcome.late,
            len(batch.outcome.updated),
            len(batch.outcome.final),
            batch.outcome.watermark,
            took,
            records / since if since else None,
            len(self.windows.windows),
            batch.rejected_by_reason,
        )
        if self.on_progress:
            self.on_progress(progress)
        self.say(progress.line())


def _counted(summary: list) -> tuple[list[dict], int, Counter]:
    """A collected `micro_batch` summary -> (its window rows, records counted, rejects counted by
    kind of reason: under None when the summary was made without dead letters)."""
    rows = [row.asDict() for row in summary]
    rejects: Counter = Counter()
    for row in rows:
        if row["kind"] == "reject":
            rejects[row.get("reason_kind")] += row["records"]
    return [row for row in rows if row["kind"] == "window"], sum(row["records"] for row in rows), rejects


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
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # {kind of reason: rejects}

    def line(self) -> str:
        arriving = f", {self.arriving_per_s:,.0f}/s arriving" if self.arriving_per_s is not None else ""
        processed = self.records / self.seconds if self.seconds > 0 else 0.0
        return (
            f"batch {self.batch_id}: {self.records:,} records ({self.rejected:,} rejected, {self.late:,} late "
            f"dropped) in {self.seconds:.2f} s, {processed:,.0f}/s processed{arriving}; "
            f"{self.windows_updated} window(s) updated, {self.windows_final} final; "
            f"watermark {self.watermark:%Y-%m-%d %H:%M:%S}"
        )


@dataclass(frozen=True)
class Pulse:
    """Spark's word that the query is alive: after each micro-batch (`batch_id`) or, while there is
    nothing to read, every 10 s (`batch_id` None).

    `lag` is what Spark reports: records each input partition, (topic, partition), was behind the
    topic's end when the batch was planned (the source's latestOffset minus its endOffset). A batch
    reads to the end unless MAX_OFFSETS_PER_TRIGGER caps it, so the lag stays 0 until the cap holds
    the stream back; an idle query has read everything, so its pulse says 0 for every partition.
    """

    at: datetime
    batch_id: int | None
    lag: dict[tuple[str, int], int] = field(default_factory=dict)


def source_lag(sources) -> dict[tuple[str, int], int]:
    """(topic, partition) -> latestOffset - endOffset, from a progress' Kafka sources (each offset a
    JSON text {topic: {partition: offset}}; a source that reports no latest offset is left out)."""
    lag: dict[tuple[str, int], int] = {}
    for source in sources:
        try:
            latest, end = json.loads(source.latestOffset or "null"), json.loads(source.endOffset or "null")
        except ValueError:
            continue
        if not isinstance(latest, dict) or not isinstance(end, dict):
            continue
        for topic, partitions in latest.items():
            for partition, offset in partitions.items():
                done = end.get(topic, {}).get(partition, offset)
                lag[(topic, int(partition))] = max(0, int(offset) - int(done))
    return lag


class _Pulses(StreamingQueryListener):
    """Turns Spark's progress and idle events of our query into Pulses, touching the heartbeat file
    on each: a driver whose query stops advancing (a hung batch, a stuck source) stops touching it,
    and its liveness probe restarts it. Runs on Spark's listener thread, never the stream's."""

    def __init__(self, name: str, heartbeat_file: Path | None, on_pulse: Callable[[Pulse], None] | None):
        self.name = name
        self.heartbeat_file = heartbeat_file
        self.on_pulse = on_pulse
        self._ids: set[str] = set()  # our query's runs: idle events carry an id, not the name
        self._partitions: set[tuple[str, int]] = set()

    def onQueryStarted(self, event) -> None:
        if event.name == self.name:
            self._ids.add(str(event.id))

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        if str(progress.id) in self._ids:
            lag = source_lag(progress.sources)
            self._partitions |= set(lag)
            self._beat(Pulse(datetime.now(timezone.utc), progress.batchId, lag))

    def onQueryIdle(self, event) -> None:
        if str(event.id) in self._ids:
            self._beat(Pulse(datetime.now(timezone.utc), None, dict.fromkeys(sorted(self._partitions), 0)))

    def onQueryTerminated(self, event) -> None:
        pass

    def _beat(self, pulse: Pulse) -> None:
        if self.heartbeat_file:
            self.heartbeat_file.touch()
        if self.on_pulse:
            self.on_pulse(pulse)


#: The stream's own SQL settings (a session of its own, so a report in the same process keeps
#: Spark's defaults). Each micro-batch aggregates to a few hundred rows: one shuffle partition,
#: and no adaptive re-planning between its two stages: 30-50 ms of a micro-batch of 5,000 records
#: on a 2-core machine (warm JVM; jobs/README.md, "Where a micro-batch's time goes", for the whole breakdown).
STREAM_CONF = {
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.shuffle.partitions": "1",
}
#: Keyed by the session itself, held weakly: an id() could come back for a later session after
#: `spark.stop()` and hand it a session of the stopped context.
_STREAM_SESSIONS: weakref.WeakKeyDictionary[SparkSession, SparkSession] = weakref.WeakKeyDictionary()


def stream_session(spark: SparkSession) -> SparkSession:
    """The session the stream's query runs in: `spark`'s context and settings, plus STREAM_CONF."""
    session = _STREAM_SESSIONS.get(spark)
    if session is None:
        session = spark.newSession()
        inherited = {k: v for k, v in spark.conf.getAll.items() if spark.conf.isModifiable(k)}
        for key, value in {**inherited, **STREAM_CONF}.items():  # a new session starts from the context's
            session.conf.set(key, value)
        _STREAM_SESSIONS[spark] = session
    return session


def start_query(
    spark: SparkSession,
    settings: Settings,
    output: _Output,
    available_now: bool = False,
    reset_checkpoint: bool = False,
    say: Callable[[str], None] = lambda m: None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    skip_lost_records: bool = False,
    stopping: threading.Event | None = None,
    limit: RejectLimit | None = None,
) -> StreamingQuery:
    """Start the one streaming query: source -> parse -> `_Batches`.

    The checkpoint is first held against the input topic (offsets.py): a damaged checkpoint, a
    recreated topic or records deleted before they were read stop here with one line, unless
    `skip_lost_records` (then the gap is skipped, and said). Set `stopping` before stopping the
    query: a batch it interrupts then ends quietly (it is not committed, so it runs again).
    `limit` is set when a batch goes over --max-reject-ratio.
    """
    preflight(settings)
    spark = stream_session(spark)
    checkpoint = prepare_checkpoint(settings, QUERY, reset_checkpoint)
    gaps = check_checkpoint(settings, skip_lost_records)
    if gaps:
        say(
            f"skipping {sum(g.count for g in gaps):,} record(s) of {settings.input_topic} deleted before the stream "
            "read them (" + ", ".join(f"partition {g.partition} offsets {g.first}-{g.end - 1}" for g in gaps) + ")"
        )
    handler = _Batches(spark, settings, checkpoint / "open_windows", output, say, on_progress, stopping, limit)
    trigger = {"availableNow": True} if available_now else {"processingTime": spark_interval(settings.trigger_interval)}
    return (
        check(read_source(spark, settings, fail_on_data_loss=not skip_lost_records))
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(handler)
        .option("checkpointLocation", str(checkpoint))
        .trigger(**trigger)
        .start()
    )


def run(
    spark: SparkSession,
    settings: Settings,
    available_now: bool = False,
    reset_checkpoint: bool = False,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    on_progress: Callable[[BatchProgress], None] | None = None,
    skip_lost_records: bool = False,
    on_pulse: Callable[[Pulse], None] | None = None,
    heartbeat_file: Path | None = None,
) -> None:
    """Run until `stop` is set (SIGTERM, Ctrl+C) or, with available_now, until the topic is drained.

    `say` gets the log lines (one per micro-batch); `on_progress` the same figures as a BatchProgress;
    `on_pulse` Spark's report of each batch and of each idle stretch (a Pulse: the lag per
    partition), on which `heartbeat_file` is touched too.
    A micro-batch over --max-reject-ratio stops the run once Spark has committed it: SensorstreamError.
    """
    stop = stop or threading.Event()
    limit = RejectLimit()
    output = _Output(settings)
    committed = False
    pulses = _Pulses(QUERY_NAME, Path(heartbeat_file) if heartbeat_file else None, on_pulse)
    streams = stream_session(spark).streams
    streams.addListener(pulses)
    try:
        query = start_query(
            spark, settings, output, available_now, reset_checkpoint, say, on_progress, skip_lost_records, stop, limit
        )
        say(
            f"streaming {settings.input_topic} -> {', '.join(settings.sinks)} (+ dead letters to "
            f"{settings.dead_letter_topic}); window {spark_interval(settings.window_duration)}, watermark "
            f"{spark_interval(settings.watermark_delay)}; checkpoint in {settings.checkpoint_location}"
        )
        try:
            while not stop.is_set() and not limit.reached.is_set() and query.isActive:
                query.awaitTermination(1)
            if limit.reached.is_set() and limit.batch_id is not None:  # reached names the batch
                committed = _await_commit(query, Path(settings.checkpoint_location) / QUERY, limit.batch_id)
                stop.set()  # a batch begun meanwhile is interrupted quietly, and runs again on restart
        except StreamingQueryException:  # the query failed: the same one line as below, not a traceback
            pass
        finally:
            if query.isActive:
                query.stop()
        if limit.reached.is_set():
            raise limit.error(committed)
        if query.exception() and not stop.is_set():  # after a stop: a batch it interrupted (said above)
            raise _query_error(query)
    finally:
        streams.removeListener(pulses)
        output.close()
    say("stream stopped" + (" (topic drained)" if available_now and not stop.is_set() else ""))


def _await_commit(query: StreamingQuery, checkpoint: Path, batch_id: int, timeout: float = 120) -> bool:
    """Whether Spark has committed `batch_id` (its commits/<id> file, written once the foreachBatch
    handler has returned), waiting for it while the query runs."""
    done = checkpoint / "commits" / str(batch_id)
    deadline = time.monotonic() + timeout
    while not done.exists() and query.isActive and time.monotonic() < deadline:
        time.sleep(0.05)
    return done.exists()


#: Spark's words for input that is no longer where the checkpoint left it (failOnDataLoss).
_DATA_LOSS = (
    "data may have been lost",
    "offset was changed",
    "offsets were changed",
    "failondataloss",
    "partitions are gone",
    "topic may have been deleted",
)


def _query_error(query: StreamingQuery) -> SensorstreamError:
    """The failed query's exception as one line that names the fix."""
    exception = query.exception()
    text = str(getattr(exception, "desc", None) or exception).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((line for line in lines if "terminated with exception" not in line), lines[0] if lines else "")
    first = (first or "unknown error")[:300]
    lowered = text.lower()
    if any(words in lowered for words in _DATA_LOSS):
        return CheckpointError(
            f"query {query.name}: input records are no longer where the checkpoint left them ({first}); if the "
            "input topic was deleted and recreated, start fresh with --reset-checkpoint (and --starting-offsets "
            "earliest|latest); if records were deleted (retention), rerun with --skip-lost-records to go on "
            "without them"
        )
    if "checkpoint" in lowered or "state schema" in lowered or "incomplete log file" in lowered:
        return CheckpointError(
            f"query {query.name} cannot use its checkpoint ({first}); start fresh with --reset-checkpoint "
            "(the stream then reads from --starting-offsets)"
        )
    return SensorstreamError(
        f"query {query.name} failed: {first}; fix the cause and rerun (the checkpoint keeps its place), or start "
        "fresh with --reset-checkpoint"
    )
