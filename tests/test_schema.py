"""parse_and_validate on a real SparkSession: every record lands in exactly one output."""

import json
import random

import pytest

from helpers import KAFKA_DDL, kafka_rows, stepping_clock
from sensorstream.schema import READING_COLUMNS, REJECT_COLUMNS, parse_and_validate
from sensorstream.simulator import Simulator, malformed

pytestmark = pytest.mark.spark

GOOD = {"sensor_id": "sensor_1", "timestamp": "2026-01-31T08:00:01.500000+00:00", "temperature": 21.5,
        "humidity": 40.0, "pressure": 1013.25, "seq": 1, "event_id": "e1"}


def with_(**changes):
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...})


CASES = [
    (with_(), None),
    (with_(timestamp="2026-01-31T09:00:01+01:00"), None),
    (with_(temperature=21), None),  # an integer is a number
    (with_(seq=..., event_id=...), None),  # optional fields
    ('{"sensor_id": "sensor_1", "temp', "invalid JSON"),
    ("not json at all", "invalid JSON"),
    ("[1, 2, 3]", "invalid JSON"),
    ("", "invalid JSON"),
    (None, "invalid JSON"),
    (with_(temperature=...), "missing field: temperature"),
    (with_(sensor_id=...), "missing field: sensor_id"),
    (with_(timestamp=None), "missing field: timestamp"),
    (with_(sensor_id="  "), "missing field: sensor_id"),
    (with_(humidity="hot"), "wrong type: humidity"),
    (with_(pressure="1013.2"), "wrong type: pressure"),
    (with_(seq="one"), "wrong type: seq"),
    (with_(timestamp="yesterday"), "bad timestamp: yesterday"),
    (with_(humidity=140.0), "out of range: humidity=140.0 not in [0, 100]"),
    (with_(temperature=-120.0), "out of range: temperature=-120.0 not in [-40, 85]"),
    (with_(pressure=12.0), "out of range: pressure=12.0 not in [300, 1100]"),
]


def split(spark, values):
    df = spark.createDataFrame(kafka_rows(values), KAFKA_DDL)
    good, bad = parse_and_validate(df)
    return good.collect(), bad.orderBy("source_offset").collect()


def test_each_kind_of_record_gets_its_reason(spark):
    values = [v for v, _ in CASES]
    good, bad = split(spark, values)
    expected_good = [i for i, (_, reason) in enumerate(CASES) if reason is None]
    assert len(good) == len(expected_good)
    reasons = {row["source_offset"]: row["reason"] for row in bad}
    for offset, (_value, reason) in enumerate(CASES):
        if reason is not None:
            assert reasons.get(offset) == reason, (offset, CASES[offset][0])
    assert len(good) + len(bad) == len(CASES)


def test_valid_readings_have_no_nulls_and_correct_values(spark):
    good, _ = split(spark, [with_(), with_(timestamp="2026-01-31T09:00:01+01:00")])
    assert list(good[0].asDict()) == list(READING_COLUMNS)
    for row in good:
        assert None not in (row["sensor_id"], row["event_time"], row["temperature"], row["humidity"], row["pressure"])
    # +01:00 is the same instant as 08:00:01 UTC (session time zone UTC)
    assert str(good[1]["event_time"]) == "2026-01-31 08:00:01"
    assert good[0]["temperature"] == 21.5 and good[0]["seq"] == 1


def test_rejects_keep_the_original_value_and_source(spark):
    _, bad = split(spark, ["{oops", with_(humidity=140.0)])
    assert list(bad[0].asDict()) == list(REJECT_COLUMNS)
    assert bad[0]["value"] == "{oops"
    assert (bad[0]["source_topic"], bad[0]["source_partition"], bad[0]["source_offset"]) == ("t", 0, 0)
    assert bad[1]["sensor_id"] == "sensor_1"


def test_every_simulated_malformed_record_is_rejected(spark):
    sim = Simulator(sensors=3, seed=8, clock=stepping_clock())
    rng = random.Random(8)
    values, kinds = [], []
    for kind in ("broken_json", "wrong_type", "missing_field", "out_of_range") * 25:
        values.append(malformed(sim.next_reading(), kind, rng))
        kinds.append(kind)
    good, bad = split(spark, values)
    assert good == []
    prefixes = {"broken_json": ("invalid JSON",), "wrong_type": ("wrong type",),
                "missing_field": ("missing field", "bad timestamp"), "out_of_range": ("out of range",)}
    for row in bad:
        assert row["reason"].startswith(prefixes[kinds[row["source_offset"]]]), (row["reason"], row["value"])
