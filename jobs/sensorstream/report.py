"""The batch report's wiring: the whole input topic -> parse + validate -> per-sensor report -> files.

One Spark job per run: the topic is read and parsed once, aggregated per sensor (readings and
rejects together, `aggregate.sensor_report`), and the few result rows are collected. Every file,
the printed table and quality.json are written from those rows, so nothing reads Kafka again.

Each run writes a new folder <report_dir>/<UTC time>/ holding one file per format:
    sensor_report.csv (RFC 4180: a header, CRLF, quotes doubled), sensor_report.parquet/,
    sensor_report.json (JSON lines), sensor_report.html (one self-contained page with per-sensor
    charts of 5-minute windows, html_report.py), quality.json (records read, valid, rejected by reason)
The html format takes a second Spark job (the 5-minute windows); the other formats need only the one.
The folder is assembled under a hidden name and renamed into place, so a half-written report is
never visible.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sensorstream import html_report
from sensorstream.aggregate import sensor_report, window_stats
from sensorstream.brokers import require_topics
from sensorstream.config import Settings, spark_kafka_options
from sensorstream.errors import SensorstreamError
from sensorstream.readings import METRICS, UNITS
from sensorstream.schema import parse
from sensorstream.tables import format_table

REPORT_NAME = "sensor_report"
#: The hidden folder a report is being assembled in, while it is (for `abandon`).
_assembling: Path | None = None
#: The windows the HTML report's charts show.
CHART_WINDOW = timedelta(minutes=5)
#: sensor_report's per-reason counts feed quality.json, not the report files.
_REJECTED = "rejected"


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


def _records(spark: SparkSession, settings: Settings, since: datetime | None, until: datetime | None) -> DataFrame:
    """The topic's parsed records; readings selected by event time in [since, until), rejects by Kafka time."""
    records = parse(read_topic(spark, settings))
    valid = F.col("reason").isNull()
    when = F.when(valid, F.col("event_time")).otherwise(F.col("kafka_timestamp"))
    if since:
        records = records.where(when >= F.lit(since))
    if until:
        records = records.where(when < F.lit(until))
    return records


def build_report(
    spark: SparkSession, settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> DataFrame:
    """sensor_report over the topic; readings selected by event time in [since, until), rejects by Kafka time."""
    return sensor_report(_records(spark, settings, since, until))


def chart_series(
    spark: SparkSession, settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> dict[str, dict[str, list[html_report.Point]]]:
    """sensor -> metric -> its CHART_WINDOW windows (avg, min, max), for the HTML report's charts."""
    # Rejects are not filtered out: their metrics are null, so their windows have no averages and
    # are skipped below (a filter on `reason` would be pushed into the parse and run it twice).
    records = _records(spark, settings, since, until)
    series: dict[str, dict[str, list[html_report.Point]]] = {}
    for row in window_stats(records, CHART_WINDOW).collect():
        for metric in METRICS:
            if row[f"avg_{metric}"] is not None:
                series.setdefault(row["sensor_id"], {}).setdefault(metric, []).append(
                    html_report.Point(
                        row["window_start"], row[f"avg_{metric}"], row[f"min_{metric}"], row[f"max_{metric}"]
                    )
                )
    return series


def _sensor_order(row: Row) -> tuple:
    """sensor_2 before sensor_10: by the trailing number, then by name."""
    match = re.search(r"(\d+)$", row["sensor_id"])
    return (0, int(match.group(1)), row["sensor_id"]) if match else (1, 0, row["sensor_id"])


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    return str(value)


def _iso(value: datetime) -> str:
    # pyspark hands timestamps over as naive local times
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_value(value):
    return _iso(value) if isinstance(value, datetime) else value


#: A hidden staging folder untouched for this long was left by a report killed while writing (kill -9,
#: out of memory): the next report removes it. Writing a report's files takes seconds, and the chart's
#: CronJob never runs two reports at once (concurrencyPolicy: Forbid).
ABANDONED_AFTER = timedelta(hours=1)


def _remove_abandoned(report_dir: Path, now: float) -> None:
    for staging in report_dir.glob(".*.partial"):
        try:
            if staging.is_dir() and now - staging.stat().st_mtime > ABANDONED_AFTER.total_seconds():
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:  # gone meanwhile, or not ours to read: leave it
            pass


def write_report(
    spark: SparkSession,
    schema: StructType,
    rows: list[tuple],
    report_dir: Path,
    formats: tuple[str, ...],
    quality: dict,
    now: datetime | None = None,
    series: dict | None = None,
) -> tuple[Path, list[Path]]:
    """Write every format into a new time-stamped folder, atomically; returns (folder, files).
    `series` are the html format's charts (`chart_series`)."""
    now = now or datetime.now(timezone.utc)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(report_dir, time.time())
    name = now.strftime("%Y%m%dT%H%M%SZ")
    final = report_dir / name
    suffix = 1
    while final.exists():
        suffix += 1
        final = report_dir / f"{name}-{suffix}"
    staging = report_dir / f".{final.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    global _assembling
    _assembling = staging
    columns = schema.fieldNames()
    try:
        for fmt in formats:
            if fmt == "csv":
                with open(staging / f"{REPORT_NAME}.csv", "w", newline="", encoding="utf-8") as out:
                    writer = csv.writer(out, lineterminator="\r\n")
                    writer.writerow(columns)
                    writer.writerows([_text(v) for v in row] for row in rows)
            elif fmt == "json":
                with open(staging / f"{REPORT_NAME}.json", "w", encoding="utf-8") as out:
                    for row in rows:
                        record = {c: _json_value(v) for c, v in zip(columns, row) if v is not None}
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
            elif fmt == "html":
                page = html_report.render(columns, rows, quality, series or {}, now)
                (staging / f"{REPORT_NAME}.html").write_text(page, encoding="utf-8")
            elif fmt == "parquet":
                (spark.createDataFrame(rows, schema).coalesce(1).write.parquet(str(staging / f"{REPORT_NAME}.parquet")))
        (staging / "quality.json").write_text(json.dumps(quality, indent=2, default=str) + "\n")
        os.rename(staging, final)
    except OSError as exc:  # disk full, read-only, no permission: one line, nothing left visible
        shutil.rmtree(staging, ignore_errors=True)
        raise SensorstreamError(
            f"cannot write the report to {report_dir}: {exc.strerror or exc}; free space "
            "there or choose another folder with --report-dir (env REPORT_DIR)"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _assembling = None
    files = sorted(p for p in final.iterdir())
    return final, files


def abandon() -> None:
    """Remove the report being assembled, if any (a stop before it was renamed into place)."""
    if _assembling is not None:
        shutil.rmtree(_assembling, ignore_errors=True)


def preflight(settings: Settings) -> None:
    """Fail in seconds, before Spark starts, when the broker or the topic is missing."""
    require_topics(settings, [settings.input_topic])


def run(
    spark: SparkSession, settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> ReportResult:
    preflight(settings)
    table = build_report(spark, settings, since, until)
    collected = table.collect()  # the one Spark job: one read of the topic, one parse per record

    rejected: dict[str, int] = {}
    for row in collected:
        for kind, count in row[_REJECTED].items():
            if count:
                rejected[kind] = rejected.get(kind, 0) + count
    valid = sum(row["total_readings"] for row in collected)
    records = valid + sum(rejected.values())
    quality = {
        "input_topic": settings.input_topic,
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "records": records,
        "valid": valid,
        "rejected": dict(sorted(rejected.items())),
    }
    schema = StructType([f for f in table.schema.fields if f.name != _REJECTED])
    columns = schema.fieldNames()
    rows = [
        tuple(row[c] for c in columns)
        for row in sorted((r for r in collected if r["sensor_id"] is not None), key=_sensor_order)
    ]
    series = chart_series(spark, settings, since, until) if "html" in settings.report_formats else None
    folder, files = write_report(
        spark, schema, rows, settings.report_dir, settings.report_formats, quality, series=series
    )
    return ReportResult(folder, files, columns, rows, records, valid, rejected)


def console_table(result: ReportResult) -> str:
    """The report as a terminal-width table: avg (min..max) per metric; the files have every column."""
    index = {name: i for i, name in enumerate(result.columns)}
    columns = ["sensor_id", "readings", *[f"{m} {UNITS[m]} avg (min..max)" for m in METRICS], "missing_seq", "invalid"]
    rows = []
    for row in result.rows:
        cells = [row[index["sensor_id"]], row[index["total_readings"]]]
        for metric in METRICS:
            avg, low, high = (row[index[f"{kind}_{metric}"]] for kind in ("avg", "min", "max"))
            cells.append("-" if avg is None else f"{avg:.2f} ({low:.2f}..{high:.2f})")
        cells += [row[index["missing_seq"]], row[index["invalid_records"]]]
        rows.append(cells)
    return format_table(columns, rows)
