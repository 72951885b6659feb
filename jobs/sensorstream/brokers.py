"""Talking to a Kafka cluster's metadata: is it reachable, do the topics exist.

Every job checks here first, so a missing broker or topic is one clear line within seconds
instead of a client retrying forever or a JVM stack trace.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, NoBrokersAvailable, NodeNotReadyError

from sensorstream.config import Settings, kafka_python_kwargs
from sensorstream.errors import BrokerUnavailableError, QuorumLostError, TopicMissingError

@contextmanager
def admin_client(settings: Settings) -> Iterator[KafkaAdminClient]:
    """A kafka-python admin client, or BrokerUnavailableError within about `settings.connect_timeout`."""
    timeout_s = settings.connect_timeout.total_seconds()
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    client = None
    # kafka-python logs every refused connection at ERROR level; the caller gets one clear error.
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        while client is None:
            try:
                client = KafkaAdminClient(
                    **kafka_python_kwargs(settings),
                    client_id="sensorstream-admin",
                    request_timeout_ms=int(timeout_s * 1000),
                    api_version_auto_timeout_ms=int(min(timeout_s, 5) * 1000),
                )
            except (NoBrokersAvailable, KafkaError, OSError) as exc:
                last = exc
                if time.monotonic() >= deadline:
                    if isinstance(last, NodeNotReadyError):  # a broker answered; no controller did
                        raise QuorumLostError(settings.bootstrap_servers) from None
                    raise BrokerUnavailableError(settings.bootstrap_servers, type(last).__name__) from None
                time.sleep(0.5)
    finally:
        quiet.setLevel(level)
    try:
        yield client
    finally:
        client.close()


def existing_topics(settings: Settings) -> set[str]:
    with admin_client(settings) as admin:
        return set(admin.list_topics())


def require_topics(settings: Settings, topics: Iterable[str], wait_s: float = 3.0) -> None:
    """Raise TopicMissingError naming the first topic the cluster does not have.

    A topic created a moment ago may not have reached the broker's metadata yet: a missing topic
    is looked for again for up to `wait_s` seconds.
    """
    topics = list(topics)
    deadline = time.monotonic() + wait_s
    while True:
        present = existing_topics(settings)
        missing = [topic for topic in topics if topic not in present]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TopicMissingError(
                f"topic {missing[0]!r} does not exist on {settings.bootstrap_servers}; create it "
                "(`sensorstream local up` creates the chart's topics on the local broker)"
            )
        time.sleep(0.25)
