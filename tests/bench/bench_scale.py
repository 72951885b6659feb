"""The stream as the sensors multiply, against Spark's floor: figures printed, never asserted.

Stage "scale" of `make bench` (tests/bench/bench.py); on its own:

    .venv/bin/python tests/bench/bench.py --skip produce,stream,report,latency [--repeat 2]
        [--scale-sensors 10,10000,100000,1000000] [--scale-records 1000000] [--scale-cap 50000]
        [--scale-latency-sensors 100000] [--rate 10000] [--seconds 60]

Per sensor count N, a fresh 3-partition topic holds --scale-records simulator-shaped readings from
N sensors taking turns (sensor_<n % N + 1>, also the Kafka key), 1% out of range (dead letters),
their event times spread evenly over one hour in offset order; one Spark task writes them, so each
partition holds its readings in event-time order, as from a producer. On that topic, both capped
at --scale-cap records per micro-batch (maxOffsetsPerTrigger), so the hour goes through in many
batches and the windows' state is carried from one to the next, as when a stream catches up:

    floor  Spark's own query: Kafka -> from_json -> the same 5-minute windows, 10-minute watermark
           -> noop sink, update mode, availableNow (stream_floor, also the stream stage's floor)
    ours   streaming.run, availableNow, with the Kafka sink (window records and dead letters)

For each, over --repeat runs (after one warm-up of each at the first N): records/s (records over
the median wall seconds of the query's run; the SparkSession is up before), ours / floor; the
micro-batch durations p50/p99 (Spark's batchDuration for the floor, BatchProgress.seconds for ours;
batches with input, of all runs); the state rows at the end (the most over the batches: the rows
of Spark's state store for the floor, the windows ours holds open); the peak resident memory of
this Python process (the driver's Python side) and of the Spark JVM (local mode: the driver and
the executors) apart, the highest of the runs. Neither process gives much memory back, so the
peak at one N is at least the peaks of the runs before it.

Then the steady state: end-to-end latency as bench_latency.py measures it (--rate readings/s for
--seconds), with the producer simulating --scale-latency-sensors sensors (0: left out).
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_latency import percentile
from bench_report import fill_topic, fresh_topics
from proc_cpu import PeakRss, tree_cpu_seconds
from pyspark.sql import functions as F

from sensorstream import streaming
from sensorstream.aggregate import partial_columns, window_column
from sensorstream.config import spark_interval, spark_kafka_options
from sensorstream.schema import READING_SCHEMA

SPAN_S = 3600  # the readings' event times cover one hour
BAD_RATIO = 0.01


def stream_floor(spark, settings, checkpoint: Path, cap: int | None = None) -> list:
    """What Spark itself needs for the windows: from_json, the same windows with a watermark, noop.

    `cap`: at most that many records per micro-batch (maxOffsetsPerTrigger). Returns the query's
    progress, one StreamingQueryProgress per batch (Spark keeps the last
    spark.sql.streaming.numRecentProgressUpdates, 100 by default)."""
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", settings.input_topic)
        .option("startingOffsets", "earliest")
    )
    if cap:
        reader = reader.option("maxOffsetsPerTrigger", str(cap))
    readings = (
        reader.load()
        .select(F.from_json(F.col("value").cast("string"), READING_SCHEMA).alias("r"))
        .select(
            "r.sensor_id",
            F.col("r.timestamp").try_cast("timestamp").alias("event_time"),
            "r.temperature",
            "r.humidity",
            "r.pressure",
        )
    )
    windows = (
        readings.withWatermark("event_time", spark_interval(settings.watermark_delay))
        .groupBy(window_column(F.col("event_time"), settings.window_duration).alias("window"), "sensor_id")
        .agg(*partial_columns())
    )
    query = (
        windows.writeStream.format("noop")
        .outputMode("update")
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return query.recentProgress


def floor_run(spark, settings, checkpoint: Path, cap: int) -> dict:
    """The floor's batches: durations of those with input, and the state store's rows after each."""
    progress = stream_floor(spark, settings, checkpoint, cap)
    return {
        "batch_s": [p.batchDuration / 1000 for p in progress if p.numInputRows > 0],
        "state_rows": max((sum(op.numRowsTotal for op in p.stateOperators) for p in progress), default=None),
    }


def our_run(spark, settings, checkpoint: Path, cap: int) -> dict:
    """Our stream's batches: durations of those with input, and the windows held open after each."""
    progress: list = []
    streaming.run(
        spark,
        settings.replace(max_offsets_per_trigger=cap, checkpoint_location=checkpoint),
        available_now=True,
        say=lambda _: None,
        on_progress=progress.append,
    )
    # the stream's state: `open_windows` today; a rewrite may call it `state_rows`
    state = [getattr(p, "state_rows", getattr(p, "open_windows", None)) for p in progress]
    return {
        "batch_s": [p.seconds for p in progress if p.records > 0],
        "state_rows": max((s for s in state if s is not None), default=None),
    }


def timed(job, python_pid: int, jvm_pid: int) -> dict:
    """Wall and CPU seconds of one run, the job's own figures, and the peak resident memory of this
    Python process and of the Spark JVM, apart."""
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    with PeakRss([python_pid]) as python, PeakRss([jvm_pid]) as jvm, contextlib.redirect_stdout(io.StringIO()):
        figures = job()
    return {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": tree_cpu_seconds() - cpu,
        "python_rss_mib": python.peak / 2**20,
        "jvm_rss_mib": jvm.peak / 2**20,
        **figures,
    }


def summary(records: int, runs: list[dict]) -> dict:
    """Medians of the runs' times; batch percentiles over all runs' batches; the highest state and memory."""
    wall = statistics.median(r["wall_s"] for r in runs)
    batches = [s for r in runs for s in r["batch_s"]]
    states = [r["state_rows"] for r in runs if r["state_rows"] is not None]
    return {
        "records_per_s": records / wall,
        "wall_s": wall,
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "batches": len(batches) // len(runs),
        "batch_p50_s": percentile(batches, 0.5) if batches else None,
        "batch_p99_s": percentile(batches, 0.99) if batches else None,
        "state_rows": max(states, default=None),
        "python_rss_mib": max(r["python_rss_mib"] for r in runs),
        "jvm_rss_mib": max(r["jvm_rss_mib"] for r in runs),
        "runs": [{k: v for k, v in r.items() if k != "batch_s"} for r in runs],
    }


def measure_scale(
    spark,
    base,
    bootstrap: str,
    folder: Path,
    sensor_counts: list[int],
    records: int,
    cap: int,
    repeat: int,
    say=lambda m: None,
) -> list[dict]:
    """Floor and ours per sensor count, on one topic each; see the module's docstring."""
    python_pid, jvm_pid = os.getpid(), spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    results = []
    for i, sensors in enumerate(sensor_counts):
        settings = fresh_topics(base, bootstrap, "scale", sinks=("kafka",))
        say(f"filling {settings.input_topic} with {records:,} readings from {sensors:,} sensors over one hour...")
        fill_topic(spark, settings, records, BAD_RATIO, sensors=sensors, span_s=SPAN_S, ordered=True)
        jobs = {
            "floor": lambda s=settings: floor_run(spark, s, folder / f"floor-{uuid.uuid4().hex}", cap),
            "project": lambda s=settings: our_run(spark, s, folder / f"ck-{uuid.uuid4().hex}", cap),
        }
        if i == 0:  # warm-up: JIT, class loading, the connector
            for job in jobs.values():
                with contextlib.redirect_stdout(io.StringIO()):
                    job()
        runs: dict[str, list[dict]] = {name: [] for name in jobs}
        for run in range(repeat):
            for name, job in jobs.items():
                runs[name].append(timed(job, python_pid, jvm_pid))
                r = runs[name][-1]
                say(
                    f"  {sensors:>9,} sensors {name:<8} run {run + 1}: {r['wall_s']:6.2f} s, {len(r['batch_s'])} "
                    f"batches, state rows {r['state_rows']}, Python {r['python_rss_mib']:,.0f} MiB, "
                    f"JVM {r['jvm_rss_mib']:,.0f} MiB"
                )
        result = {"sensors": sensors, **{name: summary(records, values) for name, values in runs.items()}}
        result["ratio"] = result["project"]["records_per_s"] / result["floor"]["records_per_s"]
        results.append(result)
    return results
