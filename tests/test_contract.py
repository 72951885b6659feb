"""The validation contract end to end: a foreign producer's records through the real broker, the
stream and the report, as a new user would send them (kafka-python straight to the input topic)."""

import csv
import json

import pytest
from kafka import KafkaProducer

from sensorstream import report, streaming
from support.broker import consume_all, isolated_settings
from support.readings import FOREIGN

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

VALID = [value for _, value, reason in FOREIGN if reason is None]
INVALID = {value: reason for _, value, reason in FOREIGN if reason is not None}
#: The sensors the valid records name (sensor_1 appears with whitespace around the JSON).
SENSORS = {"sensor_1", 'lab "B", rack 2'}


@pytest.fixture(scope="module")
def sent(kafka_bootstrap, tmp_path_factory):
    """The issue's table, sent as raw bytes by a plain kafka-python producer."""
    settings = isolated_settings(
        kafka_bootstrap, tmp_path_factory.mktemp("contract"), sinks="kafka", report_formats="csv,json"
    )
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for _, value, _ in FOREIGN:
            producer.send(settings.input_topic, key=b"any", value=value.encode()).get(timeout=30)
    finally:
        producer.close()
    return settings


def test_stream_sends_each_reject_with_the_readme_reason_and_windows_only_valid_readings(sent, spark):
    streaming.run(spark, sent, available_now=True, say=lambda _: None)
    letters = [json.loads(rec.value) for rec in consume_all(sent, sent.dead_letter_topic)]
    assert {letter["value"]: letter["reason"] for letter in letters} == INVALID
    assert len(letters) == len(INVALID)
    windows = {}
    for rec in consume_all(sent, sent.output_topic):
        windows[rec.key.decode()] = json.loads(rec.value)
    assert {w["sensor_id"] for w in windows.values()} == SENSORS
    assert sum(w["num_readings"] for w in windows.values()) == len(VALID)


def test_with_the_detector_on_the_same_dead_letters_and_windows(sent, spark, kafka_bootstrap, tmp_path):
    """With STREAM_DETECT=on the rejects' dead letters pass through the detector (plan.detector_rows)
    instead of the records' own branch: the same letters, once each, with the same keys."""
    on = isolated_settings(kafka_bootstrap, tmp_path, sinks="kafka", detect="on").replace(input_topic=sent.input_topic)
    streaming.run(spark, on, available_now=True, say=lambda _: None)
    records = consume_all(on, on.dead_letter_topic)
    letters = [json.loads(rec.value) for rec in records]
    assert {letter["value"]: letter["reason"] for letter in letters} == INVALID
    assert len(letters) == len(INVALID)
    keys = [rec.key.decode() for rec in records]
    assert keys == [f"{x['source_topic']}|{x['source_partition']}|{x['source_offset']}" for x in letters]
    assert len(set(keys)) == len(keys)
    windows = {rec.key.decode(): json.loads(rec.value) for rec in consume_all(on, on.output_topic)}
    assert {w["sensor_id"] for w in windows.values()} == SENSORS
    assert sum(w["num_readings"] for w in windows.values()) == len(VALID)


def test_report_counts_only_valid_readings_and_writes_standard_csv(sent, spark):
    result = report.run(spark, sent)
    assert result.valid == len(VALID) and result.records == len(FOREIGN)
    expected_kinds = {}
    for reason in INVALID.values():
        expected_kinds[reason.split(":")[0]] = expected_kinds.get(reason.split(":")[0], 0) + 1
    assert result.rejected == expected_kinds
    with open(result.folder / "sensor_report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {row["sensor_id"] for row in rows} == SENSORS  # no "", "   ", "123", "true" rows
    assert all(None not in row for row in rows)  # no row split into extra fields
    raw = (result.folder / "sensor_report.csv").read_bytes()
    assert b'"lab ""B"", rack 2"' in raw and raw.endswith(b"\r\n")  # RFC 4180 quoting and line ends
    by_sensor = {row["sensor_id"]: row for row in rows}
    assert int(by_sensor['lab "B", rack 2']["total_readings"]) == 1
    assert by_sensor["sensor_1"]["first_seen"] == "2026-01-31T08:00:01.500000Z"  # UTC, with a Z
    json_rows = [json.loads(line) for line in (result.folder / "sensor_report.json").read_text().splitlines()]
    assert {r["sensor_id"] for r in json_rows} == SENSORS
