"""The kafka-python producer as the product makes it (no broker needed): a request that got no
answer fails its records and frees its partition, instead of kafka-python 2.3.3's TypeError that
left the partition muted for good (fault 1, the leader bounce). And every correction's private
kafka-python internals: there in the pinned version, and a clear stop where they are not."""

from __future__ import annotations

import logging
import socket
import sys
import time

import kafka
import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.errors import RequestTimedOutError
from kafka.producer.producer_batch import ProducerBatch
from kafka.producer.sender import Sender
from kafka.record.memory_records import MemoryRecordsBuilder

from sensorstream.brokers import admin_client
from sensorstream.cli import main
from sensorstream.config import kafka_python_kwargs
from sensorstream.errors import DependencyError
from sensorstream.kafka_producer import (
    INTERNALS,
    RECONNECT_BACKOFF_MAX_MS,
    kafka_producer,
    missing_kafka_python_internals,
    pinned_kafka_python,
)
from support.broker import base_settings
from support.places import pyproject_pin

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


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.used_by.split(":")[0])
def test_pinned_kafka_python_has_what_each_correction_needs(internal):
    """When this fails, the pinned kafka-python changed what a correction relies on: see
    jobs/README.md, "Why 2.3.3, not 3.0", before moving the pin."""
    assert internal.present(), f"kafka-python {kafka.__version__} lacks {internal.what} ({internal.used_by})"


def test_the_start_up_check_knows_the_pinned_version():
    assert pinned_kafka_python() == pyproject_pin("kafka-python") == kafka.__version__


def _without_controller_lookup(self, **configs):  # an admin client that no longer looks for a controller
    self.config = configs


#: How each internal goes missing, as it would in another kafka-python.
REMOVALS = {
    "sensorstream.kafka_producer": lambda mp: mp.delattr(Sender, "_fail_batch"),
    "sensorstream.producer": lambda mp: mp.delattr(Sender, "force_close"),
    "sensorstream.brokers": lambda mp: mp.setitem(sys.modules, "kafka.conn", None),
    "sensorstream.logs": lambda mp: mp.setitem(sys.modules, "kafka.future", None),
}


@pytest.fixture
def forget_the_check():
    """The check looks once per process: again after a test took something away, and after it."""
    missing_kafka_python_internals.cache_clear()
    yield
    missing_kafka_python_internals.cache_clear()


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.what.split(" ")[0])
def test_each_check_sees_its_internal_go(internal, monkeypatch, forget_the_check):
    user = internal.used_by.split(":")[0]
    if "controller" in internal.what:
        monkeypatch.setattr(KafkaAdminClient, "__init__", _without_controller_lookup)
    else:
        REMOVALS[user](monkeypatch)
    assert not internal.present()
    assert internal in missing_kafka_python_internals()


def test_a_producer_or_admin_client_without_them_is_one_clear_error(settings, monkeypatch, forget_the_check):
    monkeypatch.delattr(Sender, "_fail_batch")
    for make in (lambda: kafka_producer(settings, **OPTIONS), lambda: admin_client(settings).__enter__()):
        with pytest.raises(DependencyError) as raised:
            make()
        line = str(raised.value)
        assert "\n" not in line
        assert f"kafka-python {kafka.__version__} lacks" in line and "Sender._fail_batch" in line
        assert f"made for kafka-python {pyproject_pin('kafka-python')}" in line


@pytest.fixture
def restore_logging():
    loggers = [logging.getLogger(name) for name in ("", "kafka", "py4j")]
    saved = [(list(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, (handlers, level) in zip(loggers, saved):
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_every_kafka_command_stops_at_start_with_one_line(
    settings, monkeypatch, capsys, forget_the_check, restore_logging
):
    """Before anything connects: the bootstrap address is one nobody listens on."""
    monkeypatch.setitem(sys.modules, "kafka.conn", None)
    code = main(["--bootstrap-servers", settings.bootstrap_servers, "produce", "--count", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"sensorstream: error: kafka-python {kafka.__version__} lacks")
    assert "the kafka.conn logger" in err[0] and "sensorstream.brokers" in err[0]
