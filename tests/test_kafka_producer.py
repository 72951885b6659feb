"""The kafka-python producer as the product makes it (no broker needed): a request that got no
answer fails its records and frees its partition, instead of kafka-python 2.3.3's TypeError that
left the partition muted for good (fault 1, the leader bounce)."""

from __future__ import annotations

import socket
import time

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.errors import RequestTimedOutError
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder

from sensorstream.config import kafka_python_kwargs
from sensorstream.kafka_producer import RECONNECT_BACKOFF_MAX_MS, kafka_producer
from support.broker import base_settings

TP = TopicPartition("readings", 0)
#: No retries, so a lost request fails its batch at once; one request in flight, so the partition
#: is muted while it is out (as `sensorstream produce` runs); a fixed API version: no broker asked.
OPTIONS = {"retries": 0, "enable_idempotence": False, "max_in_flight_requests_per_connection": 1, "api_version": (2, 5)}


@pytest.fixture
def settings():
    with socket.socket() as sock:  # a port nobody listens on: the sender thread never reaches a broker
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return base_settings(bootstrap_servers=f"127.0.0.1:{port}")


def request_lost(producer: KafkaProducer):
    """One batch of one record in flight for TP, whose request then times out unanswered (the
    connection's error instance, as kafka-python's client fails the request's future)."""
    batch = ProducerBatch(TP, MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1024), now=time.time())
    future = batch.try_append(int(time.time() * 1000), b"sensor-1", b"{}", [])
    producer._accumulator._incomplete.add(batch)
    producer._accumulator.muted.add(TP)  # what draining it for the request did
    try:
        producer._sender._failed_produce([batch], 0, RequestTimedOutError("Request timed out after 10000.0 ms"))
    finally:
        if not future.is_done:  # kafka-python's own bug: forget the batch, or closing the producer waits for it
            producer._accumulator.deallocate(batch)
    return future


def test_a_lost_request_fails_its_records_and_frees_the_partition(settings):
    producer = kafka_producer(settings, **OPTIONS)
    try:
        future = request_lost(producer)
        assert future.is_done and isinstance(future.exception, RequestTimedOutError)
        assert "timed out after 10000.0 ms" in str(future.exception)
        assert TP not in producer._accumulator.muted  # the next batch of the partition can go
    finally:
        producer.close(timeout=0)


def test_pinned_kafka_python_still_has_the_bug_the_producer_corrects(settings):
    """When this fails, kafka-python no longer calls the error instance: the correction in
    sensorstream.kafka_producer (`_fail_lost_requests_cleanly`) can go."""
    producer = KafkaProducer(**kafka_python_kwargs(settings), **OPTIONS)
    try:
        with pytest.raises(TypeError, match="object is not callable"):
            request_lost(producer)
        assert TP in producer._accumulator.muted  # for good: nothing else unmutes it
    finally:
        producer.close(timeout=0)


def test_reconnects_to_a_broker_that_is_down_at_least_every_second(settings):
    producer = kafka_producer(settings, **OPTIONS)
    try:
        assert producer.config["reconnect_backoff_max_ms"] == RECONNECT_BACKOFF_MAX_MS == 1000
        assert producer._sender._client.config["reconnect_backoff_max_ms"] == 1000
    finally:
        producer.close(timeout=0)
