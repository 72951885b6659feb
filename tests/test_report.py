"""The batch report on the real broker: every format, the original column names, atomic folders."""

import csv
import json
import os
import re
import time
import uuid
from datetime import timedelta

import pytest
from kafka import KafkaProducer
from pyspark.sql.types import StringType, StructField, StructType

from sensorstream import report
from sensorstream.brokers import existing_topics
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


ALERT_COLUMNS = ["alerts_spike", "alerts_stuck", "alerts_silent", "alerts_back"]


def _alert(settings, sensor, kind, after, offset, metric=None, value=None, expected=(None, None)):
    """(key, value) of an alert record as the stream writes it (jobs/jvm/detector, schema.alert_json):
    keyed by sensor, kind and source, the event time in microseconds with Z, null fields left out."""
    source = f"{settings.input_topic}|0|{offset}"
    fields = {
        "sensor_id": sensor,
        "kind": kind,
        "metric": metric,
        "value": value,
        "expected_low": expected[0],
        "expected_high": expected[1],
        "event_time": (T0 + after).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "source": source,
    }
    key = f"{sensor}|{kind}{':' + metric if metric else ''}|{source}"
    return key.encode(), json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


SINCE, UNTIL = T0 + timedelta(minutes=5), T0 + timedelta(minutes=50)


@pytest.fixture
def alerted(produced):
    """The readings, and on the alerts topic: alerts in [SINCE, UNTIL), one of them twice under its key
    (a replayed micro-batch), alerts before and after the period, and a record that is no alert."""
    settings, _sent = produced
    spike = _alert(settings, "sensor_1", "spike", timedelta(minutes=10), 60, "temperature", 60.0, (18.0, 24.0))
    records = [
        spike,
        _alert(settings, "sensor_1", "spike", timedelta(minutes=12), 72, "humidity", 99.5, (40.0, 60.0)),
        _alert(settings, "sensor_1", "stuck", timedelta(minutes=20), 120, value=21.5),
        _alert(settings, "sensor_2", "silent", timedelta(minutes=25), 150),
        _alert(settings, "sensor_2", "back", timedelta(minutes=35), 210),
        _alert(settings, "sensor_4", "back", timedelta(minutes=50) - timedelta(microseconds=1), 299),
        spike,  # the same alert again, under its key
        _alert(settings, "sensor_4", "silent", timedelta(minutes=50), 300),  # at `until`: outside
        _alert(settings, "sensor_2", "spike", timedelta(minutes=55), 330, "pressure", 1050.0, (1000.0, 1020.0)),
        _alert(settings, "sensor_3", "stuck", timedelta(minutes=2), 12, value=20.0),  # before `since`
        (b"junk", b"not an alert"),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    for key, value in records:
        producer.send(settings.alerts_topic, key=key, value=value)
    producer.flush()
    producer.close()
    return settings.replace(report_formats=("csv", "parquet", "json", "html"))


def test_alerts_of_the_period_are_counted_per_sensor_and_kind_in_every_format(alerted, spark):
    said: list[str] = []
    result = report.run(spark, alerted, since=SINCE, until=UNTIL, say=said.append)
    plan = report.build_report(spark, alerted, SINCE, UNTIL, listed=True)._jdf.queryExecution().executedPlan()
    scans = re.findall(r"Scan KafkaRelation\(strategy=Subscribe\[([^\]]+)\]", plan.toString())
    assert sorted(scans) == sorted([alerted.input_topic, alerted.alerts_topic])  # one read of each topic
    want = {"sensor_1": [2, 1, 0, 0], "sensor_2": [0, 0, 1, 1], "sensor_4": [0, 0, 0, 1]}
    expected = {f"sensor_{n}": want.get(f"sensor_{n}", [0, 0, 0, 0]) for n in range(1, 11)}
    assert said == []

    assert result.columns[result.columns.index("invalid_records") + 1 :] == ALERT_COLUMNS
    index = [result.columns.index(c) for c in ALERT_COLUMNS]
    assert {row[0]: [row[i] for i in index] for row in result.rows} == expected

    with open(result.folder / "sensor_report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["sensor_id"]: [int(r[c]) for c in ALERT_COLUMNS] for r in rows} == expected
    json_rows = [json.loads(line) for line in (result.folder / "sensor_report.json").read_text().splitlines()]
    assert {r["sensor_id"]: [r[c] for c in ALERT_COLUMNS] for r in json_rows} == expected
    parquet_rows = spark.read.parquet(str(result.folder / "sensor_report.parquet")).collect()
    assert {r["sensor_id"]: [r[c] for c in ALERT_COLUMNS] for r in parquet_rows} == expected
    quality = json.loads((result.folder / "quality.json").read_text())
    assert quality["alerts_topic"] == alerted.alerts_topic
    assert quality["alerts"] == result.alerts == {"spike": 2, "stuck": 1, "silent": 1, "back": 2}

    page = (result.folder / "sensor_report.html").read_text(encoding="utf-8")
    assert page.count('class="alert spike"') == 2  # each on its metric's chart
    assert page.count('class="alert stuck"') == 3  # on each of sensor_1's charts
    assert page.count('class="alert silent"') == 2 * 3  # sensor_2's silence and sensor_4's, each chart
    for title in (
        "<title>spike: temperature 60.00 °C, expected 18.00 to 24.00 °C, at 2026-01-31 08:10:00 UTC</title>",
        "<title>spike: humidity 99.50 %, expected 40.00 to 60.00 %, at 2026-01-31 08:12:00 UTC</title>",
        "<title>stuck: the same readings repeated (temperature 21.50 °C, ...), at 2026-01-31 08:20:00 UTC</title>",
        "<title>silent: no reading after 2026-01-31 08:25:00 UTC; back: a reading again at 2026-01-31 08:35:00 UTC",
    ):
        assert title in page, title
    assert "alerts: spike 2, stuck 1" in page and "<th>alerts_spike</th>" in page
    assert re.search(r"^\| sensor_1 .*\| spike 2, stuck 1 +\|$", report.console_table(result), re.MULTILINE)


def test_a_report_without_an_alerts_topic_counts_none_and_says_so_once(produced, spark):
    settings, _sent = produced
    settings = settings.replace(alerts_topic=f"absent-{uuid.uuid4().hex[:10]}", report_formats=("csv", "json"))
    said: list[str] = []
    result = report.run(spark, settings, say=said.append)
    assert len(said) == 1 and f"no alerts topic {settings.alerts_topic!r}" in said[0]
    with open(result.folder / "sensor_report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and all(int(r[c]) == 0 for r in rows for c in ALERT_COLUMNS)
    quality = json.loads((result.folder / "quality.json").read_text())
    assert quality["alerts_topic"] is None and set(quality["alerts"].values()) == {0}
    assert settings.alerts_topic not in existing_topics(settings)  # not created by a read either
