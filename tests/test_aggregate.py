"""The shared aggregations against an independent Python computation of the same readings."""

import json
from datetime import timedelta, timezone

import pytest

from sensorstream.aggregate import sensor_report, window_stats
from sensorstream.schema import parse, parse_and_validate
from sensorstream.simulator import Simulator
from support.readings import (
    KAFKA_DDL,
    assert_stats_equal,
    kafka_rows,
    reference_report,
    reference_windows,
    stepping_clock,
)

pytestmark = pytest.mark.spark


def simulated(n=1200, sensors=10, seed=21, step=timedelta(seconds=3)):
    sim = Simulator(sensors=sensors, seed=seed, clock=stepping_clock(step=step))
    return [sim.next_reading().to_json() for _ in range(n)]


def readings_df(spark, readings):
    good, _ = parse_and_validate(spark.createDataFrame(kafka_rows(json.dumps(r) for r in readings), KAFKA_DDL))
    return good


def test_tumbling_windows_match_python(spark):
    readings = simulated()  # 1 hour of readings: 12 five-minute windows x 10 sensors
    rows = window_stats(readings_df(spark, readings), timedelta(minutes=5)).collect()
    expected = reference_windows(readings, timedelta(minutes=5))
    assert len(rows) == len(expected) == 120
    for row in rows:
        key = (row["window_start"].astimezone(timezone.utc), row["sensor_id"])
        assert row["window_end"] - row["window_start"] == timedelta(minutes=5)
        assert_stats_equal(row.asDict(), expected[key])


def test_sliding_windows_count_each_reading_in_every_window_it_falls_in(spark):
    readings = simulated(n=600, sensors=2)
    rows = window_stats(readings_df(spark, readings), timedelta(minutes=10), timedelta(minutes=5)).collect()
    # every reading belongs to two 10-minute windows sliding by 5 minutes
    assert sum(r["num_readings"] for r in rows) == 2 * len(readings)


def records_df(spark, values):
    return parse(spark.createDataFrame(kafka_rows(values), KAFKA_DDL))


def test_sensor_report_matches_python(spark):
    readings = simulated(n=2000, seed=5)
    rows = sensor_report(records_df(spark, [json.dumps(r) for r in readings])).collect()
    expected = reference_report(readings)
    assert sorted(r["sensor_id"] for r in rows) == sorted(f"sensor_{i}" for i in range(1, 11))
    for row in rows:
        assert_stats_equal(row.asDict(), expected[row["sensor_id"]])
        assert row["invalid_records"] == 0
    assert sum(r["missing_seq"] for r in rows) > 0  # dropouts are counted


def test_sensor_report_counts_rejects_per_sensor(spark):
    values = [json.dumps(r) for r in simulated(n=20, sensors=2)]
    values += ['{"sensor_id": "sensor_1", "temperature": "hot"}', '{"sensor_id": "sensor_3"}', "garbage"]
    rows = {r["sensor_id"]: r for r in sensor_report(records_df(spark, values)).collect()}
    assert rows["sensor_1"]["invalid_records"] == 1
    assert rows["sensor_1"]["rejected"]["missing field"] == 1  # timestamp, before the wrong type
    assert rows["sensor_2"]["invalid_records"] == 0
    assert rows["sensor_3"]["total_readings"] == 0 and rows["sensor_3"]["invalid_records"] == 1
    assert rows[None]["invalid_records"] == 1 and rows[None]["rejected"]["invalid JSON"] == 1  # named no sensor
