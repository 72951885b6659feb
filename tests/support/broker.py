"""Settings isolated on the session's broker, and reading a topic back."""

from __future__ import annotations

import uuid
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from sensorstream.config import Settings, kafka_python_kwargs, load_settings
from sensorstream.local.topics import TopicSpec, ensure_topics

from .places import SPARK_JARS


def base_settings(**overrides) -> Settings:
    """Settings from defaults only (the developer's environment must not leak into tests)."""
    return load_settings(environ={}, overrides=overrides)


def isolated_settings(bootstrap: str, folder: Path, **overrides) -> Settings:
    """Settings pointing at the session broker, with fresh uniquely named topics and folders under
    `folder`; overrides are settings by name (sinks="kafka", ...)."""
    tag = uuid.uuid4().hex[:10]
    settings = base_settings(
        bootstrap_servers=bootstrap,
        checkpoint_location=str(folder / "checkpoints"),
        parquet_dir=str(folder / "windows"),
        report_dir=str(folder / "reports"),
        jars_dir=str(SPARK_JARS),
        **overrides,
    ).replace(
        input_topic=f"in-{tag}", output_topic=f"out-{tag}", dead_letter_topic=f"dlq-{tag}", alerts_topic=f"alerts-{tag}"
    )
    ensure_topics(
        bootstrap,
        [
            TopicSpec(settings.input_topic, partitions=3),
            TopicSpec(settings.output_topic, partitions=3),
            TopicSpec(settings.dead_letter_topic, partitions=1),
            TopicSpec(settings.alerts_topic, partitions=1),
        ],
    )
    return settings


#: kafka-python 2.3 refuses a network frame over 1,000,000 bytes by default, while its fetches bring
#: up to 1 MiB per partition: a full fetch failed ("InvalidReceiveError: Invalid frame length") and was
#: asked again, a logged error each time, on every large topic a test read whole.
WHOLE_FETCHES = {"receive_message_max_bytes": 64 * 1024 * 1024}


def consume_all(settings, topic):
    """Every record of a topic, from the beginning to the end offsets as they are now, read with the
    settings' bootstrap servers and security (SASL, TLS)."""
    return _read(KafkaConsumer(**kafka_python_kwargs(settings), enable_auto_commit=False, **WHOLE_FETCHES), topic)


def read_all(bootstrap: str, topic: str) -> list:
    """Every record of a topic at these bootstrap servers, from the beginning to its end offsets now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, **WHOLE_FETCHES)
    return _read(consumer, topic)


def _read(consumer: KafkaConsumer, topic: str) -> list:
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
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
