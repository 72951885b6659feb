"""The shape of the stream's query, over records as Kafka gives them (a batch DataFrame of Kafka's
columns: the same plan Spark runs each micro-batch, without a broker)."""

import json
from datetime import datetime, timezone

from sensorstream.config import load_settings
from sensorstream.streaming.plan import state_conf, stream_plan, stream_session

KAFKA_COLUMNS = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
KAFKA_COLUMNS += "timestampType int"


def kafka_records(values: list[bytes]) -> list[tuple]:
    at = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    return [(None, v, "in", i % 3, i, at, 0) for i, v in enumerate(values)]


def reading(sensor: str, second: int) -> bytes:
    return json.dumps(
        {
            "sensor_id": sensor,
            "timestamp": f"2026-12-07T12:00:{second:02d}Z",
            "temperature": 21.5,
            "humidity": 40.0,
            "pressure": 1013.0,
        }
    ).encode()


def test_a_batch_runs_one_task_per_state_partition(spark):
    """The windows' branch and the records' branch each have the state's partitions; their union
    is coalesced, so a micro-batch runs one task per state partition, not two."""
    settings = load_settings(environ={"STREAM_STATE_PARTITIONS": "4", "STREAM_SINKS": "kafka"})
    values = [reading(f"sensor_{i % 5}", i) for i in range(30)] + [b"not json"]
    session = stream_session(spark)  # as the stream runs it: its session, its state's settings
    saved = {key: session.conf.get(key, None) for key in state_conf(settings)}
    try:
        for key, value in state_conf(settings).items():
            session.conf.set(key, value)
        rows = stream_plan(session.createDataFrame(kafka_records(values), KAFKA_COLUMNS), settings)
        assert rows.rdd.getNumPartitions() == settings.state_partitions
    finally:
        for key, value in saved.items():
            if value is None:
                session.conf.unset(key)
            else:
                session.conf.set(key, value)
    kinds = {r.kind: r.n for r in rows.groupBy("kind").count().withColumnRenamed("count", "n").collect()}
    assert kinds == {"window": 6, "reading": 30, "reject": 1}  # 5 sensors' windows, the rejects' epoch one
