"""The batch report on the real broker: every format, the original column names, atomic folders."""

import csv
import json
import os
import re
import time
from datetime import timedelta

import pytest
from pyspark.sql.types import StringType, StructField, StructType

from sensorstream import report
from sensorstream.producer import produce
from support.readings import T0, RecordingSimulator, assert_stats_equal, reference_report, stepping_clock

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

ORIGINAL_COLUMNS = ["sensor_id", "total_readings"] + [
    f"{stat}_{m}" for m in ("temperature", "humidity", "pressure") for stat in ("avg", "min", "max")
]


@pytest.fixture
def produced(kafka_settings):
    sim = RecordingSimulator(
        sensors=10, seed=23, clock=stepping_clock(step=timedelta(seconds=6)), bad_ratio=0.05, late_ratio=0.05
    )
    assert produce(kafka_settings, sim, count=600, rate=0).acked == 600
    return kafka_settings, sim.sent


def test_report_in_every_format_matches_python(produced, spark):
    settings, sent = produced
    settings = settings.replace(report_formats=("csv", "parquet", "json"))
    result = report.run(spark, settings)
    names = sorted(p.name for p in result.files)
    assert names == ["quality.json", "sensor_report.csv", "sensor_report.json", "sensor_report.parquet"]
    assert result.folder.parent == settings.report_dir
    assert [p.name for p in settings.report_dir.iterdir()] == [result.folder.name]  # nothing half-written left

    readings = [r.reading.to_json() for r in sent if r.kind in ("reading", "late")]
    expected = reference_report(readings)
    with open(result.folder / "sensor_report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(ORIGINAL_COLUMNS)] == ORIGINAL_COLUMNS
    assert {"stddev_temperature", "first_seen", "last_seen", "missing_seq", "invalid_records"} <= set(rows[0])
    assert len(rows) == 10
    for row in rows:
        want = expected[row["sensor_id"]]
        assert int(row["total_readings"]) == want["total_readings"]
        assert_stats_equal(
            {k: float(row[k]) for k in want if k.startswith(("avg", "min", "max", "stddev"))},
            {k: v for k, v in want.items() if k.startswith(("avg", "min", "max", "stddev"))},
        )
        assert int(row["missing_seq"]) == want["missing_seq"]

    json_rows = [json.loads(line) for line in (result.folder / "sensor_report.json").read_text().splitlines()]
    assert [r["sensor_id"] for r in json_rows] == [r["sensor_id"] for r in rows]
    parquet_rows = spark.read.parquet(str(result.folder / "sensor_report.parquet")).collect()
    assert sorted(r["sensor_id"] for r in parquet_rows) == sorted(r["sensor_id"] for r in rows)

    bad = [r for r in sent if r.kind not in ("reading", "late")]
    quality = json.loads((result.folder / "quality.json").read_text())
    assert quality["records"] == 600 and quality["valid"] == 600 - len(bad)
    assert sum(quality["rejected"].values()) == len(bad)
    assert sum(int(r["invalid_records"]) for r in rows) <= len(bad)


def test_each_run_gets_its_own_folder(produced, spark):
    settings, _ = produced
    first = report.run(spark, settings)
    second = report.run(spark, settings)
    assert first.folder != second.folder
    assert sorted(p.name for p in settings.report_dir.iterdir()) == sorted([first.folder.name, second.folder.name])


def test_a_report_removes_what_a_killed_one_left_half_written(tmp_path):
    """Hidden staging folders older than ABANDONED_AFTER go; a recent one (another report writing
    right now, say) stays, and so does every visible report."""
    old, recent = tmp_path / ".20260101T000000Z.partial", tmp_path / ".20260101T000100Z.partial"
    visible = tmp_path / "20250101T000000Z"
    for folder in (old, recent, visible):
        folder.mkdir()
        (folder / "sensor_report.csv").write_text("sensor_id\r\n")
    long_ago = time.time() - report.ABANDONED_AFTER.total_seconds() - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(visible, (long_ago, long_ago))
    schema = StructType([StructField("sensor_id", StringType())])
    folder, _ = report.write_report(None, schema, [("sensor-01",)], tmp_path, ("csv",), quality={})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.name, visible.name, folder.name])


def test_time_range_selects_readings_by_event_time(produced, spark):
    settings, sent = produced
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)
    result = report.run(spark, settings, since=since, until=until)
    inside = [r.reading for r in sent if r.kind in ("reading", "late") and since <= r.reading.timestamp < until]
    index = result.columns.index("total_readings")
    assert sum(row[index] for row in result.rows) == len(inside) > 0


def test_console_table_is_readable(produced, spark):
    settings, _ = produced
    table = report.console_table(report.run(spark, settings))
    assert "temperature °C avg (min..max)" in table
    assert len(re.findall(r"^\| sensor_\d+ ", table, re.MULTILINE)) == 10
