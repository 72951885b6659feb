"""The micro-batch handler (foreachBatch): count a batch, write its Kafka records, show its windows;
and --max-reject-ratio."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorstream.config import Settings, spark_kafka_options
from sensorstream.errors import SensorstreamError
from sensorstream.readings import ALERT_KINDS
from sensorstream.schema import REASON_KINDS
from sensorstream.streaming.checkpoint import batch_range, watermark_ms
from sensorstream.streaming.plan import BATCH_METRICS, RECORD_METRICS, late_count, updated_window
from sensorstream.tables import format_table

_log = logging.getLogger(__name__)


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


#: The stream's log shows at most this many alerts a batch, one line each, and says how many more.
ALERT_LINES = 100


#: The sinks the stream writes: console and kafka in the batch handler, parquet as its own query.
_SINKS = ("console", "kafka", "parquet")


#: The console shows at most this many updated windows a batch (a fleet updates thousands), and says how many more.
CONSOLE_ROWS = 50


#: The columns of a kept batch (console, detection): every one the handler's filters read, or Spark
#: would resolve a missing one below the cache and run the batch again.
_KEPT_COLUMNS = ("kind", "num_readings", "newest", "topic", "key", "value")


#: Fewer records than this are not judged against --max-reject-ratio on their own: small batches
#: add up until they reach it (one bad record in a batch of three is not a producer sending garbage).
REJECT_RATIO_MIN_RECORDS = 100


class _Observed:
    """The stream query's observed figures of the batch its handler is in (plan.RECORD_METRICS and
    plan.BATCH_METRICS, merged): Spark keeps them in the query's current execution, counted by the
    batch's job."""

    def __init__(self, session: SparkSession | None, query_name: str):
        self.session = session  # the one the query was started in (a batch's rows are in a clone of it)
        self.query_name = query_name
        self._query: Any = None  # the JVM StreamExecution, found at the first batch

    def __call__(self, batch_id: int) -> dict:
        if self._query is None:
            assert self.session is not None
            streams = self.session._jsparkSession.streams()
            found = [q.streamingQuery() for q in streams.active() if q.name() == self.query_name]
            if not found:
                raise SensorstreamError(f"no active query {self.query_name} for micro-batch {batch_id}")
            self._query = found[0]
        execution = self._query.lastExecution()
        if execution.currentBatchId() != batch_id:
            raise SensorstreamError(f"Spark ran micro-batch {execution.currentBatchId()}, not {batch_id}")
        figures: dict = {}
        for name in (RECORD_METRICS, BATCH_METRICS):
            metrics = execution.observedMetrics().get(name)
            if metrics.isEmpty():
                raise SensorstreamError(f"Spark kept no figures of micro-batch {batch_id}")
            figures.update(json.loads(metrics.get().json()))
        return figures


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
    alerts_by_kind: dict[str, int] = field(default_factory=dict)  # STREAM_DETECT=on

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


class _Batches:
    """The foreachBatch handler: the batch's Kafka records written (updated windows to the output
    topic, rejects to the dead-letter topic) and its rows counted on the way, in one Spark job (an
    `Observation`); with the console on, its rows kept for the table. Runs on Spark's stream thread."""

    def __init__(
        self,
        settings: Settings,
        checkpoint: Path,
        on_batch: Callable[[BatchFigures], None],
        stopping: threading.Event | None = None,
        limit: RejectLimit | None = None,
        say: Callable[[str], None] = lambda m: None,
        session: SparkSession | None = None,
        query_name: str = "",
    ):
        self.settings = settings
        self.observed = _Observed(session, query_name)
        self.checkpoint = checkpoint
        self.on_batch = on_batch
        self.stopping = stopping or threading.Event()
        self.limit = limit or RejectLimit()
        self.say = say
        self.console = "console" in settings.sinks
        self.detect = settings.detect == "on"
        is_window = updated_window()
        self._written = (
            (is_window if "kafka" in settings.sinks else F.lit(False))
            | ((F.col("kind") == "reject") & F.col("newest"))
            | (F.col("kind") == "alert")
        )
        self._is_window = is_window
        self._kept = self._written | is_window

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
        keep = self.console or self.detect
        if keep:
            rows = self.kept(rows)
        try:
            # the batch's one Spark job: the query's observed figures are counted on the way (plan.BATCH_METRICS)
            (
                self.to_write(rows)
                .write.format("kafka")
                .mode("append")
                .options(**spark_kafka_options(self.settings))
                .option("kafka.acks", "all")
                .option("kafka.enable.idempotence", "true")
                # a batch's records are sent at once: bigger producer batches (at 100,000 sensors,
                # 50,000 windows a batch: 1.45-1.75 s a batch against 1.5-1.96 s with the defaults)
                .option("kafka.linger.ms", "10")
                .option("kafka.batch.size", str(512 * 1024))
                .save()
            )
            figures = self.observed(batch_id)
            updated = figures["windows"]
            rejects = {k: figures[k] for k in REASON_KINDS if figures[k]}
            alerts = {k: figures[f"alert_{k}"] for k in ALERT_KINDS if figures[f"alert_{k}"]}
            late = self._late(batch_id, figures["min_end_us"], mark_ms)
            if self.console and updated:
                windows = rows.where(self._is_window).select("value").limit(CONSOLE_ROWS)
                self._show(batch_id, updated, [json.loads(r.value) for r in windows.collect()])
            raised = sum(alerts.values())
            if raised:
                shown = rows.where(F.col("kind") == "alert").select("value").limit(ALERT_LINES).collect()
                for row in shown:
                    self.say(alert_line(json.loads(row.value)))
                if raised > len(shown):
                    self.say(f"... and {raised - len(shown):,} more alert(s) in micro-batch {batch_id}")
        finally:
            if keep:
                rows.unpersist()
        batch = BatchFigures(
            batch_id,
            figures["records"],
            late,
            updated,
            datetime.fromtimestamp(mark_ms / 1000, timezone.utc),
            started,
            time.monotonic() - started,
            rejects,
            alerts,
        )
        self.on_batch(batch)
        self.limit.check(self.settings, batch_id, batch.records, batch.rejected)

    def kept(self, rows: DataFrame) -> DataFrame:
        """The batch's rows to write or show, kept (`persist`) to be read again (windows, alerts):
        Spark then runs the batch (and its state) once. Not every record's row: at 10 sensors about
        600 a batch of 50,000."""
        return rows.where(self._kept).select(*_KEPT_COLUMNS).persist()

    def to_write(self, rows: DataFrame) -> DataFrame:
        """The batch's Kafka records: updated windows (kafka sink), rejects' dead letters, alerts."""
        return rows.where(self._written).select("topic", "key", "value")

    def _late(self, batch_id: int, min_end_us: int | None, mark_ms: int) -> int:
        """The batch's late readings: none when its earliest window ends after the watermark (every
        batch of a stream without late data), else counted again from its offsets in the topic."""
        if min_end_us is None or min_end_us > mark_ms * 1000:
            return 0
        start, end = batch_range(self.checkpoint, batch_id, self.settings.input_topic)
        assert self.observed.session is not None
        return late_count(self.observed.session, self.settings, start, end, mark_ms)

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


def alert_line(alert: dict) -> str:
    """One alert as the stream's log line."""
    what = alert["kind"]
    if alert.get("metric"):
        what += (
            f" {alert['metric']}={alert['value']:g} (expected {alert['expected_low']:.2f} to "
            f"{alert['expected_high']:.2f})"
        )
    elif alert["kind"] == "stuck":
        what += f" (the same values {alert['value']:g}, ... repeated)"
    return f"alert: {alert['sensor_id']} {what} at {alert['event_time']} ({alert['source']})"
