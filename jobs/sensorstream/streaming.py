"""The streaming job: Kafka source -> parse once -> Spark's windowed aggregation -> sinks.

One query reads the input topic, parses each record once (`schema.parse`) and shuffles the records
by (window, sensor). Two branches read that one exchange (Spark plans it once and reuses it):

    windows      Spark's own event-time window aggregation, in update mode, the open windows in
                 its RocksDB state store (partitioned by window and sensor, checkpointed with the
                 offsets): each batch yields the windows it changed; Spark drops a reading whose
                 window the watermark has passed, and forgets a window once it has
    records      every record's own row: a reject with its dead letter, a reading with its
                 window's end (to count the late ones against the batch's watermark)

For each micro-batch the foreachBatch handler (`_Batches`) writes, in one Spark job, with Spark's
Kafka writer (acks from all in-sync replicas, idempotent), the updated windows to the output topic
(kafka sink; JSON, key "<sensor_id>|<window_start>") and every reject to the dead-letter topic with
its reason (always on), and counts the batch (records, rejects by kind of reason, late readings,
windows updated). The console sink prints the updated windows as a table
(what `kubectl logs` shows). The parquet sink is a second query over the same parse and
aggregation in append mode: each final window once, through Spark's exactly-once file sink.

The handler's counts and Spark's own report of the batch (duration, state rows, windows closed)
meet in the query listener (`_Pulses`), which hands each batch's figures on as data
(`BatchProgress`); the CLI formats them (`progress_line`). With --max-reject-ratio, a batch whose
share of rejects is above it (batches under 100 records are judged together with the next ones)
is still written and committed like any other, and then the stream stops with one line naming the
batch and the fix (`RejectLimit`).

Health: Spark's report of each batch, and of each stretch with nothing to read (`onQueryIdle`,
every 10 s while idle), comes to the listener as a `Pulse`: when the query last moved and how many
records each input partition is behind the topic's end. Each also touches the heartbeat file,
which the driver's liveness probe reads: a query that stops advancing stops it.

Delivery: a batch counts as done only after its Kafka records are acknowledged, so a crash replays
it, from the state Spark checkpointed with the batch before. Replays re-send its dead letters (at
least once, keyed "<topic>|<partition>|<offset>") and its window updates, harmless on the output
topic, an upsert log by key (effectively once).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from sensorstream import offsets
from sensorstream.aggregate import FINISHED, finish_windows, partial_columns, reason_kind, window_column, window_stats
from sensorstream.brokers import require_topics
from sensorstream.checkpoint import watermark_ms
from sensorstream.config import Settings, micros, spark_interval, spark_kafka_options
from sensorstream.errors import CheckpointError, SensorstreamError
from sensorstream.schema import METRICS, REASON_KINDS, dead_letter_columns, parse
from sensorstream.tables import format_table

QUERY = "stream"
QUERY_NAME = f"sensorstream_{QUERY}"
FINALS_NAME = "sensorstream_finals"
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
        "state": STATE,
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
        if found and found.get("state") != STATE:
            raise CheckpointError(
                f"checkpoint {folder} was written by an earlier sensorstream that kept the open windows itself; "
                "start fresh with --reset-checkpoint (deletes it; the stream then reads from --starting-offsets)"
            )
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
#: The sinks the stream writes: console and kafka in the batch handler, parquet as its own query.
_SINKS = ("console", "kafka", "parquet")
#: The console shows at most this many updated windows a batch (a fleet updates thousands), and says how many more.
CONSOLE_ROWS = 50
#: How the stream keeps its windows: in the checkpoint's fingerprint, so a checkpoint of the
#: sensorstream before it (windows in its own `open_windows/` files) is refused with one line.
STATE = "spark-state-store"
_UTC_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"


def _utc(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def shuffled_records(source: DataFrame, settings: Settings) -> DataFrame:
    """Kafka records -> parsed once -> one row each, shuffled by (window, sensor): what both
    branches of the query read (`stream_plan`).

    Columns: `window` (of the event time; a reject gets the Unix epoch's, which never moves the
    watermark), `sensor_id` and the metrics (null for a reject), `dead_letter` (a reject's key,
    value and kind of reason; null for a reading) and `newest` (the row of a reading's newest
    window, when windows slide; every row when they do not).
    """
    records = parse(source)
    valid = F.col("reason").isNull()
    key, value = dead_letter_columns()
    timed = records.select(
        F.coalesce(F.col("event_time"), F.timestamp_seconds(F.lit(0))).alias("event_time"),
        F.when(valid, F.col("sensor_id")).alias("sensor_id"),
        *[F.col(m) for m in METRICS],
        F.when(~valid, F.struct(key.alias("key"), value.alias("value"), reason_kind().alias("reason_kind"))).alias(
            "dead_letter"
        ),
    ).withWatermark("event_time", spark_interval(settings.watermark_delay))
    window = window_column(F.col("event_time"), settings.window_duration, settings.slide_duration)
    step_us = micros(settings.slide_duration or settings.window_duration)
    windowed = timed.select(window.alias("window"), "sensor_id", *METRICS, "dead_letter", "event_time").select(
        "window",
        "sensor_id",
        *METRICS,
        "dead_letter",
        (F.unix_micros(F.col("event_time")) < F.unix_micros(F.col("window.start")) + F.lit(step_us)).alias("newest"),
    )
    # by the state's own keys: the stateful aggregation needs no shuffle of its own, so Spark plans
    # one exchange for both branches and reuses it (one Kafka read, one parse)
    return windowed.repartition("window", "sensor_id")


def stream_plan(source: DataFrame, settings: Settings) -> DataFrame:
    """The one streaming query: Spark's windowed aggregation of the readings (its state store,
    update mode) unioned with every record's own row (rejects' dead letters, readings for the
    counts), both over the same shuffled records. Columns: kind ("window", "reading", "reject"),
    topic, key, value (a window's or a reject's Kafka record), reason_kind, end_us (a reading's
    window end, for the late count), newest, num_readings, `_shared`.

    `_shared` reads every shuffled column in both branches: Spark prunes each branch's columns
    before the exchange, and reuses an exchange only when both branches need the very same ones.
    """
    shuffled = shuffled_records(source, settings)
    windows = finish_windows(
        shuffled.groupBy("window", "sensor_id").agg(
            *partial_columns(),
            (F.count("dead_letter") + F.count_if("newest")).alias("_shared"),
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
        F.lit(None).cast("long").alias("end_us"),
        F.lit(True).alias("newest"),
        "num_readings",
        "_shared",
    )
    is_reject = F.col("dead_letter").isNotNull()
    record_rows = shuffled.select(
        F.when(is_reject, F.lit("reject")).otherwise(F.lit("reading")).alias("kind"),
        F.lit(settings.dead_letter_topic).alias("topic"),
        F.col("dead_letter.key").alias("key"),
        F.col("dead_letter.value").alias("value"),
        F.col("dead_letter.reason_kind").alias("reason_kind"),
        F.when(~is_reject, F.unix_micros(F.col("window.end"))).alias("end_us"),
        "newest",
        F.lit(0).cast("long").alias("num_readings"),
        F.size(F.array_compact(F.array(*[F.col(c).cast("string") for c in ("sensor_id", *METRICS)]))).alias("_shared"),
    )
    return window_rows.unionByName(record_rows)


def finals_plan(source: DataFrame, settings: Settings) -> DataFrame:
    """The parquet sink's query: the same parse and windows, in append mode (each window once,
    when the watermark passes it), for Spark's exactly-once file sink."""
    readings = parse(source).where(F.col("reason").isNull())
    return window_stats(
        readings.withWatermark("event_time", spark_interval(settings.watermark_delay)),
        settings.window_duration,
        settings.slide_duration,
    )


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


@dataclass
class BatchFigures:
    """What the foreachBatch handler counted in one micro-batch (Spark's own figures join it in
    `_Pulses`, once Spark reports the batch)."""

    batch_id: int
    records: int
    late: int
    windows_updated: int
    watermark: datetime
    started: float  # time.monotonic() when the handler began
    seconds: float  # the handler's time: Spark's whole batch is in its progress report
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


class _Batches:
    """The foreachBatch handler: the batch counted (one Spark job, its rows kept), then its Kafka
    records written from them (updated windows to the output topic, rejects to the dead-letter
    topic, one job), then the console table. Runs on Spark's stream thread."""

    def __init__(
        self,
        settings: Settings,
        checkpoint: Path,
        on_batch: Callable[[BatchFigures], None],
        stopping: threading.Event | None = None,
        limit: RejectLimit | None = None,
        say: Callable[[str], None] = lambda m: None,
    ):
        self.settings = settings
        self.checkpoint = checkpoint
        self.on_batch = on_batch
        self.stopping = stopping or threading.Event()
        self.limit = limit or RejectLimit()
        self.say = say
        self.console = "console" in settings.sinks
        is_window = (F.col("kind") == "window") & (F.col("num_readings") > 0)
        self._written = (is_window if "kafka" in settings.sinks else F.lit(False)) | (
            (F.col("kind") == "reject") & F.col("newest")
        )
        self._is_window = is_window

    def __call__(self, rows: DataFrame, batch_id: int) -> None:
        try:
            self._batch(rows, batch_id)
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

    def _batch(self, rows: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        mark_ms = watermark_ms(self.checkpoint, batch_id)
        kind, newest = F.col("kind"), F.col("newest")
        counted = {
            "records": F.count_if((kind != "window") & newest),
            "late": F.count_if((kind == "reading") & newest & (F.col("end_us") <= F.lit(mark_ms * 1000))),
            "windows": F.count_if(self._is_window),
            **{
                f"reject {k}": F.count_if((kind == "reject") & newest & (F.col("reason_kind") == k))
                for k in REASON_KINDS
            },
        }
        rows = rows.persist()  # counted, then written: Spark runs the batch (and its state store) once
        try:
            figures = rows.agg(*[c.alias(name) for name, c in counted.items()]).collect()[0].asDict()
            updated = figures["windows"]
            if (updated and "kafka" in self.settings.sinks) or any(figures[f"reject {k}"] for k in REASON_KINDS):
                (
                    rows.where(self._written)
                    .select("topic", "key", "value")
                    .write.format("kafka")
                    .options(**spark_kafka_options(self.settings))
                    .option("kafka.acks", "all")
                    .option("kafka.enable.idempotence", "true")
                    .save()
                )
            if self.console and updated:
                windows = rows.where(self._is_window).select("value").limit(CONSOLE_ROWS)
                self._show(batch_id, updated, [json.loads(r.value) for r in windows.collect()])
        finally:
            rows.unpersist()
        rejects = {k: figures[f"reject {k}"] for k in REASON_KINDS if figures[f"reject {k}"]}
        batch = BatchFigures(
            batch_id,
            figures["records"],
            figures["late"],
            updated,
            datetime.fromtimestamp(mark_ms / 1000, timezone.utc),
            started,
            time.monotonic() - started,
            rejects,
        )
        self.on_batch(batch)
        self.limit.check(self.settings, batch_id, batch.records, batch.rejected)

    @staticmethod
    def _show(batch_id: int, updated: int, shown: list[dict]) -> None:
        shown.sort(key=lambda r: (r["window_start"], r["sensor_id"]))
        more = f"; the first {len(shown)} shown" if updated > len(shown) else ""
        print(f"Batch {batch_id}: {updated} window row(s) updated (times in UTC{more})", flush=True)
        table = [
            [
                datetime.fromisoformat(r["window_start"]),
                datetime.fromisoformat(r["window_end"]),
                *[r[c] for c in CONSOLE_COLUMNS[2:]],
            ]
            for r in shown
        ]
        print(format_table(CONSOLE_COLUMNS, table), flush=True)


@dataclass(frozen=True)
class BatchProgress:
    """One micro-batch's figures, as data: the handler's counts and Spark's own report of the batch
    (its duration and state rows). The CLI formats them (`progress_line`), the metrics read them."""

    batch_id: int
    records: int
    rejected: int
    late: int
    windows_updated: int
    windows_final: int  # windows the watermark closed (Spark's state rows removed)
    watermark: datetime
    seconds: float
    arriving_per_s: float | None  # records over the time since the previous batch started
    open_windows: int = 0  # windows held open after the batch (rows in Spark's state store)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # {kind of reason: rejects}


def progress_line(p: BatchProgress) -> str:
    """A micro-batch's figures as the stream's log line."""
    arriving = f", {p.arriving_per_s:,.0f}/s arriving" if p.arriving_per_s is not None else ""
    processed = p.records / p.seconds if p.seconds > 0 else 0.0
    return (
        f"batch {p.batch_id}: {p.records:,} records ({p.rejected:,} rejected, {p.late:,} late "
        f"dropped) in {p.seconds:.2f} s, {processed:,.0f}/s processed{arriving}; "
        f"{p.windows_updated} window(s) updated, {p.windows_final} final, {p.open_windows:,} open; "
        f"watermark {p.watermark:%Y-%m-%d %H:%M:%S}"
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
    and its liveness probe restarts it. Each batch's progress report also completes the handler's
    figures of that batch (`add`) into a BatchProgress for `on_progress`. Runs on Spark's listener
    thread, never the stream's."""

    def __init__(
        self,
        name: str,
        heartbeat_file: Path | None,
        on_pulse: Callable[[Pulse], None] | None,
        on_progress: Callable[[BatchProgress], None] | None = None,
    ):
        self.name = name
        self.heartbeat_file = heartbeat_file
        self.on_pulse = on_pulse
        self.on_progress = on_progress
        self._ids: set[str] = set()  # our query's runs: idle events carry an id, not the name
        self._partitions: set[tuple[str, int]] = set()
        self._figures: dict[int, BatchFigures] = {}  # handled, not reported by Spark yet
        self._reported = threading.Condition()
        self._previous_start: float | None = None

    def add(self, figures: BatchFigures) -> None:
        """The handler's figures of a batch (from the stream thread), until Spark reports it."""
        with self._reported:
            self._figures[figures.batch_id] = figures

    def wait_reported(self, timeout: float = 10) -> None:
        """Until Spark's report of every handled batch has come (the listener bus is asynchronous)."""
        with self._reported:
            self._reported.wait_for(lambda: not self._figures, timeout)

    def onQueryStarted(self, event) -> None:
        if event.name == self.name:
            self._ids.add(str(event.id))

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        if str(progress.id) in self._ids:
            lag = source_lag(progress.sources)
            self._partitions |= set(lag)
            self._report(progress)
            self._beat(Pulse(datetime.now(timezone.utc), progress.batchId, lag))

    def onQueryIdle(self, event) -> None:
        if str(event.id) in self._ids:
            self._beat(Pulse(datetime.now(timezone.utc), None, dict.fromkeys(sorted(self._partitions), 0)))

    def onQueryTerminated(self, event) -> None:
        pass

    def _report(self, progress) -> None:
        with self._reported:
            figures = self._figures.pop(progress.batchId, None)
            self._reported.notify_all()
        if figures is None:
            return
        since = figures.started - self._previous_start if self._previous_start is not None else None
        self._previous_start = figures.started
        state = progress.stateOperators[0] if progress.stateOperators else None
        took = (progress.durationMs or {}).get("triggerExecution")
        batch = BatchProgress(
            figures.batch_id,
            figures.records,
            figures.rejected,
            figures.late,
            figures.windows_updated,
            state.numRowsRemoved if state else 0,
            figures.watermark,
            took / 1000 if took is not None else figures.seconds,
            figures.records / since if since else None,
            state.numRowsTotal if state else 0,
            figures.rejected_by_reason,
        )
        if self.on_progress:
            self.on_progress(batch)

    def _beat(self, pulse: Pulse) -> None:
        if self.heartbeat_file:
            self.heartbeat_file.touch()
        if self.on_pulse:
            self.on_pulse(pulse)


#: The stream's own SQL settings (a session of its own, so a report in the same process keeps
#: Spark's defaults). The windows live in Spark's RocksDB state store, checkpointed as changelogs
#: (a batch writes what it changed, not every open window); STREAM_STATE_PARTITIONS sets how many
#: partitions hold them (frozen into the checkpoint at its first batch). Late readings are judged
#: against the watermark the batch runs with (allowMultiple false: the one the checkpoint's
#: offsets/N records, so the stream counts exactly what Spark drops). No adaptive re-planning: a
#: micro-batch is small, and the shared exchange must keep its partitioning.
STREAM_CONF = {
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.streaming.stateStore.providerClass": (
        "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
    ),
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    "spark.sql.streaming.statefulOperator.allowMultiple": "false",
}
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
        _STREAM_SESSIONS[spark] = session
    return session


def start_query(
    spark: SparkSession,
    settings: Settings,
    on_batch: Callable[[BatchFigures], None],
    available_now: bool = False,
    reset_checkpoint: bool = False,
    say: Callable[[str], None] = lambda m: None,
    skip_lost_records: bool = False,
    stopping: threading.Event | None = None,
    limit: RejectLimit | None = None,
    checked: list[offsets.Gap] | None = None,
) -> list[StreamingQuery]:
    """Start the stream's queries: the windows and dead letters (`stream_plan` -> `_Batches`) and,
    with the parquet sink, the final windows (`finals_plan`, its own checkpoint in `finals/`).

    The checkpoint is first held against the input topic (offsets.py): a damaged checkpoint, a
    recreated topic or records deleted before they were read stop here with one line, unless
    `skip_lost_records` (then the gap is skipped, and said). Set `stopping` before stopping the
    queries: a batch it interrupts then ends quietly (it is not committed, so it runs again).
    `limit` is set when a batch goes over --max-reject-ratio. `checked`: the gaps of the caller's
    own pre-flight check (`preflight`, then `check_checkpoint` unless resetting), not run again.
    """
    if checked is None:
        preflight(settings)
    spark = stream_session(spark)
    spark.conf.set("spark.sql.shuffle.partitions", str(settings.state_partitions))
    checkpoint = prepare_checkpoint(settings, QUERY, reset_checkpoint)
    gaps = check_checkpoint(settings, skip_lost_records) if checked is None else checked
    if gaps:
        say(
            f"skipping {sum(g.count for g in gaps):,} record(s) of {settings.input_topic} deleted before the stream "
            "read them (" + ", ".join(f"partition {g.partition} offsets {g.first}-{g.end - 1}" for g in gaps) + ")"
        )
    handler = _Batches(settings, checkpoint, on_batch, stopping, limit, say)
    trigger = {"availableNow": True} if available_now else {"processingTime": spark_interval(settings.trigger_interval)}
    fail_on_data_loss = not skip_lost_records
    queries = [
        stream_plan(read_source(spark, settings, fail_on_data_loss), settings)
        .writeStream.queryName(QUERY_NAME)
        .outputMode("update")
        .foreachBatch(handler)
        .option("checkpointLocation", str(checkpoint))
        .trigger(**trigger)
        .start()
    ]
    if "parquet" in settings.sinks:
        queries.append(
            finals_plan(read_source(spark, settings, fail_on_data_loss), settings)
            .writeStream.queryName(FINALS_NAME)
            .outputMode("append")
            .format("parquet")
            .option("path", str(settings.parquet_dir))
            .option("checkpointLocation", str(checkpoint / "finals"))
            .trigger(**trigger)
            .start()
        )
    return queries


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
    checked: list[offsets.Gap] | None = None,
) -> None:
    """Run until `stop` is set (SIGTERM, Ctrl+C) or, with available_now, until the topic is drained.

    `on_progress` gets each micro-batch's figures (a BatchProgress) once Spark has reported the
    batch, `say` the other log lines; `on_pulse` Spark's report of each batch and of each idle
    stretch (a Pulse: the lag per partition), on which `heartbeat_file` is touched too. `checked`:
    see `start_query`.
    A micro-batch over --max-reject-ratio stops the run once Spark has committed it: SensorstreamError.
    """
    stop = stop or threading.Event()
    limit = RejectLimit()
    committed = False
    pulses = _Pulses(QUERY_NAME, Path(heartbeat_file) if heartbeat_file else None, on_pulse, on_progress)
    streams = stream_session(spark).streams
    streams.addListener(pulses)
    try:
        queries = start_query(
            spark, settings, pulses.add, available_now, reset_checkpoint, say, skip_lost_records, stop, limit, checked
        )
        query = queries[0]
        say(
            f"streaming {settings.input_topic} -> {', '.join(settings.sinks)} (+ dead letters to "
            f"{settings.dead_letter_topic}); window {spark_interval(settings.window_duration)}, watermark "
            f"{spark_interval(settings.watermark_delay)}; checkpoint in {settings.checkpoint_location}"
        )
        try:
            while not stop.is_set() and not limit.reached.is_set() and all(q.isActive for q in queries):
                query.awaitTermination(1)
            if available_now and not stop.is_set() and not limit.reached.is_set():
                for other in queries:  # drained: the others end on their own
                    other.awaitTermination()
            if limit.reached.is_set() and limit.batch_id is not None:  # reached names the batch
                committed = _await_commit(query, Path(settings.checkpoint_location) / QUERY, limit.batch_id)
                stop.set()  # a batch begun meanwhile is interrupted quietly, and runs again on restart
        except StreamingQueryException:  # a query failed: the same one line as below, not a traceback
            pass
        finally:
            for q in queries:
                if q.isActive:
                    q.stop()
        pulses.wait_reported()
        if limit.reached.is_set():
            raise limit.error(committed)
        failed = next((q for q in queries if q.exception()), None)
        if failed is not None and not stop.is_set():  # after a stop: a batch it interrupted (said above)
            raise _query_error(failed)
    finally:
        streams.removeListener(pulses)
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
