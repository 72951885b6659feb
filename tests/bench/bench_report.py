"""The batch report against its floor: repeatable figures, printed, never asserted.

    .venv/bin/python tests/bench/bench_report.py [--records 200000,2000000] [--repeat 3] [--bad-ratio 0.01]

Starts its own local broker (free port, temporary folder) and one SparkSession (local[2]), fills
one topic per size with simulator-shaped JSON readings (~180 bytes, a share of them malformed)
written by Spark itself, then runs in turn, on the same topic and session:

    floor   Kafka -> from_json (Spark's defaults) -> the same per-sensor aggregation -> noop sink
            (its only check: a record without sensor_id is "invalid JSON")
    report  `sensorstream report --format csv`'s code path (report.run): strict parse, reasons,
            the aggregation, the files

For each: wall seconds, CPU seconds of this process tree (Python, the Spark JVM, the broker) and
records/s, the median of --repeat runs; then the ratio of the report's throughput to the floor's,
and the cost per million records at each size (equal figures mean the cost grows linearly).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_cpu import tree_cpu_seconds  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from sensorstream import report  # noqa: E402
from sensorstream.aggregate import sensor_report  # noqa: E402
from sensorstream.config import load_settings, spark_kafka_options  # noqa: E402
from sensorstream.local.broker import LocalKafka  # noqa: E402
from sensorstream.local.ports import free_port  # noqa: E402
from sensorstream.local.topics import TopicSpec, ensure_topics  # noqa: E402
from sensorstream.schema import READING_SCHEMA  # noqa: E402
from sensorstream.spark import get_session  # noqa: E402

JARS = ROOT / ".sensorstream" / "jars"


def fresh_topics(base, bootstrap: str, prefix: str, **overrides):
    """`base` with new uniquely named input (3 partitions), output (3) and dead-letter (1) topics,
    created on the broker, and `overrides`."""
    tag = uuid.uuid4().hex[:8]
    settings = base.replace(
        input_topic=f"{prefix}-{tag}",
        output_topic=f"{prefix}-out-{tag}",
        dead_letter_topic=f"{prefix}-dlq-{tag}",
        **overrides,
    )
    ensure_topics(
        bootstrap,
        [
            TopicSpec(settings.input_topic, 3),
            TopicSpec(settings.output_topic, 3),
            TopicSpec(settings.dead_letter_topic, 1),
        ],
    )
    return settings


def fill_topic(
    spark,
    settings,
    records: int,
    bad_ratio: float,
    sensors: int = 10,
    span_s: float | None = None,
    ordered: bool = False,
) -> None:
    """Simulator-shaped readings from `sensors` sensors taking turns (sensor_<n % sensors + 1>),
    every 1/bad_ratio-th one out of range; event times 200 ms apart, or spread evenly over `span_s`
    seconds.

    `ordered`: written by one Spark task, in offset order, so each partition holds its readings in
    event-time order, as one producer sends them. Spark's default writes with one task per core,
    each a stretch of the ids, and every partition interleaves those stretches of event time."""
    every = max(1, round(1 / bad_ratio)) if bad_ratio > 0 else 0
    n = F.col("id")
    humidity = F.round(55 + 20 * F.cos(n / 7000) + F.rand(2) * 4 - 2, 2)
    if every:
        humidity = F.when(n % every == every - 1, F.lit(140.0)).otherwise(humidity)
    seconds = n * F.lit(span_s / records) if span_s else n / 5
    ids = spark.range(0, records, 1, 1) if ordered else spark.range(records)
    readings = ids.select(
        F.concat(F.lit("sensor_"), (n % sensors + 1).cast("string")).alias("sensor_id"),
        F.date_format(F.timestamp_seconds(F.lit(1769846400) + seconds), "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX").alias(
            "timestamp"
        ),
        F.round(18 + 6 * F.sin(n / 9000) + F.rand(1) * 2 - 1, 2).alias("temperature"),
        humidity.alias("humidity"),
        F.round(1013 + 8 * F.sin(n / 20000) + F.rand(3) - 0.5, 2).alias("pressure"),
        (n / sensors).cast("long").alias("seq"),
        F.md5(n.cast("string")).alias("event_id"),
    )
    (
        readings.select(F.col("sensor_id").alias("key"), F.to_json(F.struct("*")).alias("value"))
        .write.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("topic", settings.input_topic)
        .save()
    )


def floor_job(spark, settings) -> None:
    """What Spark itself needs: from_json with its defaults, the same aggregation, every column computed."""
    parsed = (
        report.read_topic(spark, settings)
        .select(F.from_json(F.col("value").cast("string"), READING_SCHEMA).alias("r"))
        .select("r.*")
    )
    # A reason that is a real column (not a literal null), so Spark computes the aggregation's
    # reject counts as it must for the report instead of folding them away at planning time.
    records = parsed.select(
        F.when(F.col("sensor_id").isNull(), F.lit("invalid JSON")).alias("reason"),
        "sensor_id",
        F.col("timestamp").try_cast("timestamp").alias("event_time"),
        "temperature",
        "humidity",
        "pressure",
        "seq",
    )
    sensor_report(records).write.format("noop").mode("overwrite").save()


def measure(job) -> tuple[float, float]:
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    job()
    return time.perf_counter() - wall, tree_cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="200000,2000000", help="comma-separated topic sizes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bad-ratio", type=float, default=0.01)
    args = parser.parse_args()
    sizes = [int(s) for s in args.records.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="sensorstream-bench-"))
    cluster = LocalKafka(tmp, port=free_port(), jars_dir=JARS / "kafka")
    figures: dict[tuple[int, str], list[tuple[float, float]]] = {}
    with cluster.running() as bootstrap:
        base = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "jars_dir": str(JARS / "spark")})
        spark = get_session(base)
        for size in sizes:
            settings = base.replace(
                input_topic=f"bench-{uuid.uuid4().hex[:8]}", report_dir=tmp / "reports", report_formats=("csv",)
            )
            ensure_topics(bootstrap, [TopicSpec(settings.input_topic, 3)])
            print(f"filling {settings.input_topic} with {size:,} readings...", file=sys.stderr)
            fill_topic(spark, settings, size, args.bad_ratio)
            jobs = {"floor": lambda s=settings: floor_job(spark, s), "report": lambda s=settings: report.run(spark, s)}
            for job in jobs.values():  # warm-up: JIT, class loading, connector
                job()
            for run in range(args.repeat):
                for name, job in jobs.items():
                    figures.setdefault((size, name), []).append(measure(job))
                    wall, cpu = figures[(size, name)][-1]
                    print(
                        f"  {size:>9,} {name:<7} run {run + 1}: {wall:6.2f} s wall, {cpu:6.2f} CPU s", file=sys.stderr
                    )
        spark.stop()

    print(f"\nsensorstream report vs floor: median of {args.repeat} runs, Spark local[2], {os.cpu_count()} cores")
    print(f"{'records':>10} {'job':<7} {'wall s':>8} {'CPU s':>8} {'records/s':>11} {'CPU s per 1M':>13}")
    for (size, name), runs in figures.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{size:>10,} {name:<7} {wall:>8.2f} {cpu:>8.2f} {size / wall:>11,.0f} {cpu / size * 1e6:>13.1f}")
    for size in sizes:
        floor = statistics.median(w for w, _ in figures[(size, "floor")])
        ours = statistics.median(w for w, _ in figures[(size, "report")])
        floor_cpu = statistics.median(c for _, c in figures[(size, "floor")])
        ours_cpu = statistics.median(c for _, c in figures[(size, "report")])
        print(
            f"{size:>10,} records: report throughput = {floor / ours:.2f}x the floor's "
            f"(CPU {ours_cpu / floor_cpu:.2f}x the floor's)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
