"""The batch report's wiring: the whole input topic -> parse + validate -> per-sensor report -> files.

Each run writes a new folder <report_dir>/<UTC time>/ holding one file per format:
    sensor_report.csv (one file, with header), sensor_report.parquet/, sensor_report.json (JSON lines)
    quality.json (records read, valid, rejected by reason, the time range)
The folder is assembled under a hidden name and renamed into place, so a half-written report is
never visible.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sensorstream.aggregate import sensor_report
from sensorstream.brokers import require_topics
from sensorstream.config import Settings, spark_kafka_options
from sensorstream.schema import METRICS, parse_and_validate
from sensorstream.tables import format_table

REPORT_NAME = "sensor_report"


@dataclass(frozen=True)
class ReportResult:
    folder: Path
    files: list[Path]
    columns: list[str]
    rows: list[tuple]
    records: int
    valid: int
    rejected: dict[str, int]


def read_topic(spark: SparkSession, settings: Settings) -> DataFrame:
    """Everything in the input topic now, earliest to latest offsets."""
    return (
        spark.read.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", settings.input_topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
    )


def build_report(spark: SparkSession, settings: Settings, since: datetime | None = None,
                 until: datetime | None = None) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(report, readings, rejects); readings by event time in [since, until), rejects by Kafka time."""
    readings, rejects = parse_and_validate(read_topic(spark, settings))
    if since:
        readings = readings.where(F.col("event_time") >= F.lit(since))
        rejects = rejects.where(F.col("kafka_timestamp") >= F.lit(since))
    if until:
        readings = readings.where(F.col("event_time") < F.lit(until))
        rejects = rejects.where(F.col("kafka_timestamp") < F.lit(until))
    readings, rejects = readings.cache(), rejects.cache()
    return sensor_report(readings, rejects), readings, rejects


def write_report(report: DataFrame, report_dir: Path, formats: tuple[str, ...], quality: dict,
                 now: datetime | None = None) -> tuple[Path, list[Path]]:
    """Write every format into a new time-stamped folder, atomically; returns (folder, files)."""
    now = now or datetime.now(timezone.utc)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    name = now.strftime("%Y%m%dT%H%M%SZ")
    final = report_dir / name
    suffix = 1
    while final.exists():
        suffix += 1
        final = report_dir / f"{name}-{suffix}"
    staging = report_dir / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    single = report.coalesce(1)
    try:
        for fmt in formats:
            spark_out = staging / f".{fmt}"
            if fmt == "csv":
                single.write.option("header", True).csv(str(spark_out))
                _single_file(spark_out, ".csv", staging / f"{REPORT_NAME}.csv")
            elif fmt == "json":
                single.write.json(str(spark_out))
                _single_file(spark_out, ".json", staging / f"{REPORT_NAME}.json")
            elif fmt == "parquet":
                single.write.parquet(str(staging / f"{REPORT_NAME}.parquet"))
        (staging / "quality.json").write_text(json.dumps(quality, indent=2, default=str) + "\n")
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p for p in final.iterdir())
    return final, files


def _single_file(spark_out: Path, extension: str, target: Path) -> None:
    parts = sorted(spark_out.glob(f"part-*{extension}"))
    if len(parts) != 1:
        raise RuntimeError(f"expected one {extension} part in {spark_out}, found {len(parts)}")
    parts[0].rename(target)
    shutil.rmtree(spark_out)


def preflight(settings: Settings) -> None:
    """Fail in seconds, before Spark starts, when the broker or the topic is missing."""
    require_topics(settings, [settings.input_topic])


def run(spark: SparkSession, settings: Settings, since: datetime | None = None,
        until: datetime | None = None) -> ReportResult:
    preflight(settings)
    report, readings, rejects = build_report(spark, settings, since, until)
    valid = readings.count()
    rejected = {r["reason"].split(":")[0]: r["count"] for r in rejects.groupBy(
        F.split("reason", ":").getItem(0).alias("reason")).count().collect()}
    records = valid + sum(rejected.values())
    quality = {
        "input_topic": settings.input_topic,
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "records": records,
        "valid": valid,
        "rejected": dict(sorted(rejected.items())),
    }
    report = report.cache()
    try:
        rows = [tuple(r) for r in report.collect()]
        folder, files = write_report(report, settings.report_dir, settings.report_formats, quality)
    finally:
        # A long-lived session (tests, benchmarks, a notebook) must not keep every run's data cached.
        for frame in (report, readings, rejects):
            frame.unpersist()
    return ReportResult(folder, files, report.columns, rows, records, valid, rejected)


_UNITS = {"temperature": "°C", "humidity": "%", "pressure": "hPa"}


def console_table(result: ReportResult) -> str:
    """The report as a terminal-width table: avg (min..max) per metric; the files have every column."""
    index = {name: i for i, name in enumerate(result.columns)}
    columns = ["sensor_id", "readings",
               *[f"{m} {_UNITS[m]} avg (min..max)" for m in METRICS], "missing_seq", "invalid"]
    rows = []
    for row in result.rows:
        def stat(kind: str, metric: str) -> float | None:
            return row[index[f"{kind}_{metric}"]]

        cells = [row[index["sensor_id"]], row[index["total_readings"]]]
        for metric in METRICS:
            avg, low, high = stat("avg", metric), stat("min", metric), stat("max", metric)
            cells.append("-" if avg is None else f"{avg:.2f} ({low:.2f}..{high:.2f})")
        cells += [row[index["missing_seq"]], row[index["invalid_records"]]]
        rows.append(cells)
    return format_table(columns, rows)
