"""The producer against the real broker: counts, keys, partitions, nothing lost, clean stop."""

import json
import threading

import pytest
from kafka import KafkaConsumer, TopicPartition

from helpers import stepping_clock
from sensorstream.errors import BrokerUnavailableError, TopicMissingError
from sensorstream.producer import produce
from sensorstream.simulator import Simulator

pytestmark = pytest.mark.kafka


def consume_all(settings, topic):
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers.split(","), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        records = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_every_reading_arrives_once_keyed_by_sensor(kafka_settings):
    sim = Simulator(sensors=10, seed=1, clock=stepping_clock())
    stats = produce(kafka_settings, sim, count=1000, rate=0)
    assert (stats.sent, stats.acked, stats.failed) == (1000, 1000, 0)
    records = consume_all(kafka_settings, kafka_settings.input_topic)
    assert len(records) == 1000
    bodies = [json.loads(r.value) for r in records]
    assert len({b["event_id"] for b in bodies}) == 1000  # no duplicates
    partitions_of = {}
    for record, body in zip(records, bodies):
        assert record.key.decode() == body["sensor_id"]
        partitions_of.setdefault(body["sensor_id"], set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_of.values())  # one sensor, one partition: ordered
    assert len({p for ps in partitions_of.values() for p in ps}) > 1  # spread over partitions
    # per-sensor order is kept
    for sensor in partitions_of:
        seqs = [b["seq"] for b in bodies if b["sensor_id"] == sensor]
        assert seqs == sorted(seqs)


def test_stop_flushes_and_accounts_for_everything(kafka_settings):
    stop = threading.Event()
    sim = Simulator(sensors=3, seed=2)
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    stats = produce(kafka_settings, sim, count=0, rate=200, stop=stop)
    timer.cancel()
    assert 0 < stats.sent < 10_000
    assert stats.acked + stats.failed == stats.sent and stats.failed == 0
    assert len(consume_all(kafka_settings, kafka_settings.input_topic)) == stats.acked


def test_rate_paces_the_sends(kafka_settings):
    stats = produce(kafka_settings, Simulator(seed=3), count=0, rate=20, duration=1.0)
    # 20/s for one second: about 20, never hundreds
    assert 10 <= stats.sent <= 30


def test_heartbeat_file_is_touched_after_deliveries(kafka_settings, tmp_path):
    beat = tmp_path / "heartbeat"
    produce(kafka_settings, Simulator(seed=4), count=5, rate=0, heartbeat_file=beat)
    assert beat.exists()


def test_missing_topic_is_one_clear_error(kafka_settings):
    settings = kafka_settings.replace(input_topic="no-such-topic")
    with pytest.raises(TopicMissingError, match="'no-such-topic' does not exist"):
        produce(settings, Simulator(seed=5), count=1)


def test_unreachable_broker_is_one_clear_error(kafka_settings):
    settings = kafka_settings.replace(bootstrap_servers="127.0.0.1:9")
    with pytest.raises(BrokerUnavailableError, match="sensorstream local up"):
        produce(settings, Simulator(seed=6), count=1)
