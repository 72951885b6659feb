"""The producer against the real broker: counts, keys, partitions, nothing lost, clean stop, with
each of its two clients (kafka-python, the default, and confluent-kafka)."""

import json
import os
import threading
from datetime import timedelta

import pytest

from sensorstream.config import PRODUCER_CLIENTS
from sensorstream.errors import BrokerUnavailableError, TopicMissingError
from sensorstream.local.topics import TopicSpec, ensure_topics
from sensorstream.producer import produce, worker_count
from sensorstream.simulator import FAULT_HEADER, Simulator
from support.broker import consume_all
from support.readings import stepping_clock

pytestmark = pytest.mark.kafka
each_client = pytest.mark.parametrize("client", PRODUCER_CLIENTS)


@each_client
def test_every_reading_arrives_once_keyed_by_sensor(kafka_settings, client):
    kafka_settings = kafka_settings.replace(producer_client=client)
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


@each_client
def test_ground_truth_headers_name_each_faulty_reading(kafka_settings, client):
    settings = kafka_settings.replace(producer_client=client, producer_workers=1, ground_truth="headers")
    twin = Simulator(sensors=10, seed=7, clock=stepping_clock())  # the same seed: the same records
    expected = [twin.next_record() for _ in range(3000)]
    stats = produce(settings, Simulator(sensors=10, seed=7, clock=stepping_clock()), count=3000, rate=0)
    assert stats.acked == 3000
    records = consume_all(settings, settings.input_topic)
    told = {json.loads(r.value)["event_id"]: dict(r.headers or []).get(FAULT_HEADER) for r in records}
    assert told == {e.reading.event_id: e.fault.encode() if e.fault else None for e in expected}
    assert {r.value for r in records} == {e.value for e in expected}  # the bytes are the default's
    assert {None, b"spike", b"stuck"} <= set(told.values())


def test_no_headers_by_default(kafka_settings):
    produce(kafka_settings.replace(producer_workers=1), Simulator(sensors=10, seed=7, clock=stepping_clock()), 2000, 0)
    assert not any(r.headers for r in consume_all(kafka_settings, kafka_settings.input_topic))


@each_client
def test_stop_flushes_and_accounts_for_everything(kafka_settings, client):
    kafka_settings = kafka_settings.replace(producer_client=client)
    stop = threading.Event()
    sim = Simulator(sensors=3, seed=2)
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    stats = produce(kafka_settings, sim, count=0, rate=200, stop=stop)
    timer.cancel()
    assert 0 < stats.sent < 10_000
    assert stats.acked + stats.failed == stats.sent and stats.failed == 0
    assert len(consume_all(kafka_settings, kafka_settings.input_topic)) == stats.acked


@each_client
def test_rate_paces_the_sends(kafka_settings, client):
    kafka_settings = kafka_settings.replace(producer_client=client)
    stats = produce(kafka_settings, Simulator(seed=3), count=0, rate=20, duration=1.0)
    # 20/s for one second: about 20, never hundreds
    assert 10 <= stats.sent <= 30


@each_client
def test_heartbeat_file_is_touched_after_deliveries(kafka_settings, tmp_path, client):
    kafka_settings = kafka_settings.replace(producer_client=client)
    beat = tmp_path / "heartbeat"
    produce(kafka_settings, Simulator(seed=4), count=5, rate=0, heartbeat_file=beat)
    assert beat.exists()


def test_missing_topic_is_one_clear_error(kafka_settings):
    settings = kafka_settings.replace(input_topic="no-such-topic")
    with pytest.raises(TopicMissingError, match="'no-such-topic' does not exist"):
        produce(settings, Simulator(seed=5), count=1)


def test_unreachable_broker_is_one_clear_error(kafka_settings):
    settings = kafka_settings.replace(bootstrap_servers="127.0.0.1:9", connect_timeout=timedelta(seconds=1))
    with pytest.raises(BrokerUnavailableError, match="sensorstream local up"):
        produce(settings, Simulator(seed=6), count=1)


@each_client
def test_several_processes_send_exact_counts_in_per_sensor_order(kafka_settings, client):
    kafka_settings = kafka_settings.replace(producer_client=client)
    sim = Simulator(sensors=7, seed=8, bad_ratio=0.02)
    stats = produce(kafka_settings, sim, count=2001, rate=0, workers=3)
    assert (stats.sent, stats.acked, stats.failed) == (2001, 2001, 0)
    assert sum(stats.by_kind.values()) == 2001 and stats.by_kind["reading"] > 1900
    records = consume_all(kafka_settings, kafka_settings.input_topic)
    assert len(records) == 2001
    seqs, partition_of = {}, {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        sensor = record.key.decode()
        assert partition_of.setdefault(sensor, record.partition) == record.partition
        if record.value.startswith(b'{"sensor_id":"sensor_'):  # a reading (malformed ones may lack seq)
            seq = json.loads(record.value)["seq"]
            assert seq > seqs.get(sensor, 0)  # one sensor, one process, one partition: in order
            seqs[sensor] = seq
    assert len(partition_of) == 7


@each_client
def test_a_stop_reaches_every_process_and_totals_add_up(kafka_settings, tmp_path, client):
    kafka_settings = kafka_settings.replace(producer_client=client)
    stop = threading.Event()
    beat = tmp_path / "heartbeat"
    seen = []
    timer = threading.Timer(4.0, stop.set)
    timer.start()
    stats = produce(
        kafka_settings,
        Simulator(sensors=4, seed=9),
        count=0,
        rate=400,
        stop=stop,
        workers=2,
        progress=lambda s: seen.append((s.sent, s.acked)),
        heartbeat_file=beat,
    )
    timer.cancel()
    assert 0 < stats.sent < 10_000
    assert stats.acked + stats.failed == stats.sent and stats.failed == 0
    assert len(consume_all(kafka_settings, kafka_settings.input_topic)) == stats.acked
    assert seen[-1] == (stats.sent, stats.acked) and len(seen) > 1  # live progress, then the totals
    assert beat.exists()


def test_both_clients_put_each_sensor_on_the_same_partition(kafka_settings):
    """confluent-kafka is set to murmur2, the hash of kafka-python and the Java client: switching
    clients keeps each sensor on its partition, hence in order for the consumers."""
    partition_of = {}
    for client in PRODUCER_CLIENTS:
        settings = kafka_settings.replace(producer_client=client, input_topic=f"{kafka_settings.input_topic}-{client}")
        ensure_topics(settings.bootstrap_servers, [TopicSpec(settings.input_topic, partitions=3)])
        stats = produce(settings, Simulator(sensors=20, seed=10), count=400, rate=0, workers=1)
        assert (stats.acked, stats.failed) == (400, 0)
        partition_of[client] = {r.key.decode(): r.partition for r in consume_all(settings, settings.input_topic)}
    assert len(partition_of["kafka-python"]) == 20
    assert partition_of["confluent-kafka"] == partition_of["kafka-python"]
    assert len(set(partition_of["kafka-python"].values())) == 3


def test_workers_are_one_per_core_at_full_speed_and_never_more_than_sensors():
    cores = os.cpu_count() or 1
    assert worker_count(0, rate=0, sensors=100, count=0) == cores
    assert worker_count(0, rate=5, sensors=100, count=0) == 1
    assert worker_count(4, rate=5, sensors=100, count=0) == 4
    assert worker_count(4, rate=0, sensors=3, count=0) == 3
    assert worker_count(4, rate=0, sensors=10, count=2) == 2


def test_failed_deliveries_are_summed_up_not_logged_one_by_one(caplog, monkeypatch):
    """With brokers down every record fails: one warning per kind of error every few seconds,
    carrying the count of those it did not print, never one line per record."""
    from sensorstream import producer
    from sensorstream.producer import DeliveryStats

    stats = DeliveryStats()
    with caplog.at_level("WARNING", logger="sensorstream.producer"):
        for _ in range(1000):
            stats.record_failure(TimeoutError("expired"))
        monkeypatch.setattr(producer, "FAILURE_LOG_INTERVAL_S", 0.0)
        stats.record_failure(TimeoutError("expired"))
    assert [r.getMessage() for r in caplog.records] == [
        "delivery failed: expired",
        "delivery failed: expired (and 999 more TimeoutError since the last such line)",
    ]
    assert stats.failed == 1001 and stats.errors == {"TimeoutError": 1001}
