"""Starting, running and stopping the stream's queries; one-line errors for a query that failed."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from sensorstream.brokers import require_topics
from sensorstream.config import Settings, spark_interval
from sensorstream.errors import CheckpointError, SensorstreamError
from sensorstream.spark import require_detector
from sensorstream.streaming import plan
from sensorstream.streaming.batches import BatchFigures, RejectLimit, _Batches
from sensorstream.streaming.checkpoint import QUERY, Gap, prepare_checkpoint
from sensorstream.streaming.checkpoint import check as check_against_topic
from sensorstream.streaming.progress import BatchProgress, Pulse, _Pulses

QUERY_NAME = f"sensorstream_{QUERY}"


FINALS_NAME = "sensorstream_finals"


def preflight(settings: Settings) -> None:
    """Fail in seconds, before any query starts, when the broker or a topic is missing."""
    topics = [settings.input_topic, settings.dead_letter_topic]
    if "kafka" in settings.sinks:
        topics.append(settings.output_topic)
    if settings.detect == "on":
        require_detector(settings)
        topics.append(settings.alerts_topic)
    require_topics(settings, topics)


def check_checkpoint(settings: Settings, skip_lost_records: bool = False) -> list[Gap]:
    """The stream's checkpoint held against its input topic (checkpoint.py): CheckpointError naming the
    fix, or the gaps `skip_lost_records` allows."""
    return check_against_topic(settings, Path(settings.checkpoint_location) / QUERY, skip_lost_records)


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
    checked: list[Gap] | None = None,
) -> list[StreamingQuery]:
    """Start the stream's queries: the windows and dead letters (`stream_plan` -> `_Batches`) and,
    with the parquet sink, the final windows (`finals_plan`, its own checkpoint in `finals/`).

    The checkpoint is first held against the input topic (checkpoint.py): a damaged checkpoint, a
    recreated topic or records deleted before they were read stop here with one line, unless
    `skip_lost_records` (then the gap is skipped, and said). Set `stopping` before stopping the
    queries: a batch it interrupts then ends quietly (it is not committed, so it runs again).
    `limit` is set when a batch goes over --max-reject-ratio. `checked`: the gaps of the caller's
    own pre-flight check (`preflight`, then `check_checkpoint` unless resetting), not run again.
    """
    if checked is None:
        preflight(settings)
    spark = plan.stream_session(spark)
    for key, value in plan.state_conf(settings).items():
        spark.conf.set(key, value)
    checkpoint = prepare_checkpoint(settings, QUERY, reset_checkpoint)
    gaps = check_checkpoint(settings, skip_lost_records) if checked is None else checked
    if gaps:
        say(
            f"skipping {sum(g.count for g in gaps):,} record(s) of {settings.input_topic} deleted before the stream "
            "read them (" + ", ".join(f"partition {g.partition} offsets {g.first}-{g.end - 1}" for g in gaps) + ")"
        )
    handler = _Batches(settings, checkpoint, on_batch, stopping, limit, say, spark, QUERY_NAME)
    trigger = {"availableNow": True} if available_now else {"processingTime": spark_interval(settings.trigger_interval)}
    fail_on_data_loss = not skip_lost_records
    queries = [
        plan.stream_plan(plan.read_source(spark, settings, fail_on_data_loss), settings)
        .writeStream.queryName(QUERY_NAME)
        .outputMode("update")
        .foreachBatch(handler)
        .option("checkpointLocation", str(checkpoint))
        .trigger(**trigger)
        .start()
    ]
    if "parquet" in settings.sinks:
        queries.append(
            plan.finals_plan(plan.read_source(spark, settings, fail_on_data_loss), settings)
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
    checked: list[Gap] | None = None,
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
    pulses = _Pulses(
        QUERY_NAME, Path(heartbeat_file) if heartbeat_file else None, on_pulse, on_progress, plan.counts_state(settings)
    )
    streams = plan.stream_session(spark).streams
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
