"""The batch report's wiring: the whole input topic -> parse + validate -> per-sensor report -> files.

One Spark job per run: the input topic is read and parsed once, aggregated per sensor (readings
and rejects together, `aggregate.sensor_report`); the alerts topic (the stream's detector's,
STREAM_DETECT=on) is read once too, its alerts of the same period counted per sensor and kind
(`aggregate.sensor_alerts`, once per record key) and joined to that; and the few result rows are
collected. Every file, the printed table and quality.json are written from those rows, so nothing
reads Kafka again. No alerts topic (detection never on): every count is zero, and `run` says so.

Each run writes a new folder <report_dir>/<UTC time>/ holding one file per format:
    sensor_report.csv (RFC 4180: a header, CRLF, quotes doubled), sensor_report.parquet/,
    sensor_report.json (JSON lines), sensor_report.html (one self-contained page with per-sensor
    charts of 5-minute windows and the alerts marked on them, html_report.py), quality.json (records
    read, valid, rejected by reason; the alerts topic read and its alerts by kind)
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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sensorstream import html_report
from sensorstream.aggregate import ALERT_COUNTS, ALERT_LIST, sensor_alerts, sensor_report, window_stats, with_alerts
from sensorstream.brokers import require_topics
from sensorstream.config import Settings, spark_kafka_options
from sensorstream.errors import SensorstreamError
from sensorstream.readings import ALERT_KINDS, METRICS, UNITS
from sensorstream.schema import parse, parse_alerts
from sensorstream.tables import format_table

REPORT_NAME = "sensor_report"
#: The hidden folder a report is being assembled in, while it is (for `abandon`).
_assembling: Path | None = None
#: The windows the HTML report's charts show.
CHART_WINDOW = timedelta(minutes=5)
#: sensor_report's per-reason counts feed quality.json, not the report files.
_REJECTED = "rejected"
#: Columns collected that are no column of the report files: the reject counts, the alerts listed.
_NOT_WRITTEN = (_REJECTED, ALERT_LIST)


@dataclass(frozen=True)
class ReportResult:
    folder: Path
    files: list[Path]
    columns: list[str]
    rows: list[tuple]
    records: int
    valid: int
    rejected: dict[str, int]
    alerts: dict[str, int]  # every kind of alert, counted over every sensor
    alerts_topic: str | None  # None: the cluster has no alerts topic


def read_topic(spark: SparkSession, settings: Settings, topic: str | None = None) -> DataFrame:
    """Everything in a topic (the input topic unless told) now, earliest to latest offsets."""
    return (
        spark.read.format("kafka")
        .options(**spark_kafka_options(settings))
        .option("subscribe", topic or settings.input_topic)
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


#: What `parse_alerts` reads of a Kafka record: the columns of a topic that is not there.
_NO_RECORDS = "key binary, value binary"


def _alerts(
    spark: SparkSession, settings: Settings, since: datetime | None, until: datetime | None, exists: bool
) -> DataFrame:
    """The alerts topic's alerts (`parse_alerts`) whose event time is in [since, until); none when the
    topic does not exist (Spark is not asked to read it: a broker that creates topics on demand would)."""
    records = read_topic(spark, settings, settings.alerts_topic) if exists else spark.createDataFrame([], _NO_RECORDS)
    alerts = parse_alerts(records)
    if since:
        alerts = alerts.where(F.col("event_time") >= F.lit(since))
    if until:
        alerts = alerts.where(F.col("event_time") < F.lit(until))
    return alerts


def build_report(
    spark: SparkSession,
    settings: Settings,
    since: datetime | None = None,
    until: datetime | None = None,
    alerts_topic_exists: bool = True,
    listed: bool = False,
) -> DataFrame:
    """sensor_report over the input topic, with the sensors' alert counts (`with_alerts`) from the
    alerts topic (none when it does not exist); with `listed`, the alerts too (for the HTML page).
    Readings and alerts selected by event time in [since, until), rejects by Kafka time."""
    alerts = sensor_alerts(_alerts(spark, settings, since, until, alerts_topic_exists), listed)
    return with_alerts(sensor_report(_records(spark, settings, since, until)), alerts)


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
    alerts: dict[str, list[html_report.Alert]] | None = None,
) -> tuple[Path, list[Path]]:
    """Write every format into a new time-stamped folder, atomically; returns (folder, files).
    `series` are the html format's charts (`chart_series`), `alerts` the alerts marked on them."""
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
                page = html_report.render(columns, rows, quality, series or {}, now, alerts or {})
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


def preflight(settings: Settings) -> bool:
    """Fail in seconds, before Spark starts, when the broker or the input topic is missing; return
    whether the alerts topic exists (without it the report counts no alerts)."""
    return settings.alerts_topic in require_topics(settings, [settings.input_topic])


def _listed(row: Row) -> list[html_report.Alert]:
    return sorted((html_report.Alert(**alert.asDict()) for alert in row[ALERT_LIST] or ()), key=lambda a: a.event_time)


def run(
    spark: SparkSession,
    settings: Settings,
    since: datetime | None = None,
    until: datetime | None = None,
    alerts_topic_exists: bool | None = None,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> ReportResult:
    """The report, written. `alerts_topic_exists`: what the caller's own `preflight` found (run calls
    it when None); `say` gets the one line about a missing alerts topic."""
    if alerts_topic_exists is None:
        alerts_topic_exists = preflight(settings)
    alerts_topic = settings.alerts_topic if alerts_topic_exists else None
    if alerts_topic is None:
        say(
            f"no alerts topic {settings.alerts_topic!r} on {settings.bootstrap_servers}: the report counts no "
            "alerts (the stream writes them with STREAM_DETECT=on; KAFKA_ALERTS_TOPIC names the topic)"
        )
    html = "html" in settings.report_formats
    table = build_report(spark, settings, since, until, alerts_topic_exists, listed=html)
    collected = table.collect()  # the one Spark job: one read of each topic, one parse per record

    rejected: dict[str, int] = {}
    for row in collected:
        for kind, count in (row[_REJECTED] or {}).items():
            if count:
                rejected[kind] = rejected.get(kind, 0) + count
    valid = sum(row["total_readings"] for row in collected)
    records = valid + sum(rejected.values())
    alerts = {kind: sum(row[name] for row in collected) for kind, name in zip(ALERT_KINDS, ALERT_COUNTS)}
    quality = {
        "input_topic": settings.input_topic,
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "records": records,
        "valid": valid,
        "rejected": dict(sorted(rejected.items())),
        "alerts_topic": alerts_topic,
        "alerts": alerts,
    }
    schema = StructType([f for f in table.schema.fields if f.name not in _NOT_WRITTEN])
    columns = schema.fieldNames()
    reported = sorted((r for r in collected if r["sensor_id"] is not None), key=_sensor_order)
    rows = [tuple(row[c] for c in columns) for row in reported]
    series = chart_series(spark, settings, since, until) if html else None
    marked = {row["sensor_id"]: _listed(row) for row in reported if html and row[ALERT_LIST]}
    folder, files = write_report(
        spark, schema, rows, settings.report_dir, settings.report_formats, quality, series=series, alerts=marked
    )
    return ReportResult(folder, files, columns, rows, records, valid, rejected, alerts, alerts_topic)


def console_table(result: ReportResult) -> str:
    """The report as a terminal-width table: avg (min..max) per metric, the alerts by kind; the files
    have every column."""
    index = {name: i for i, name in enumerate(result.columns)}
    columns = [
        "sensor_id",
        "readings",
        *[f"{m} {UNITS[m]} avg (min..max)" for m in METRICS],
        "missing_seq",
        "invalid",
        "alerts",
    ]
    rows = []
    for row in result.rows:
        cells = [row[index["sensor_id"]], row[index["total_readings"]]]
        for metric in METRICS:
            avg, low, high = (row[index[f"{kind}_{metric}"]] for kind in ("avg", "min", "max"))
            cells.append("-" if avg is None else f"{avg:.2f} ({low:.2f}..{high:.2f})")
        cells += [row[index["missing_seq"]], row[index["invalid_records"]]]
        raised = [f"{kind} {row[index[name]]}" for kind, name in zip(ALERT_KINDS, ALERT_COUNTS) if row[index[name]]]
        cells.append(", ".join(raised) or "-")
        rows.append(cells)
    return format_table(columns, rows)
