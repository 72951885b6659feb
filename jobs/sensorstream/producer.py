"""Send simulated readings to Kafka with kafka-python: paced, batched, every delivery accounted for.

The producer is idempotent with acks=all, so a retry never duplicates a reading. Every record's
delivery is counted from its callback (acked or failed), and a stop (Ctrl+C, SIGTERM, --count or
--duration reached) flushes what is in flight before the totals are reported.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError

from sensorstream.brokers import require_topics
from sensorstream.config import Settings, kafka_python_kwargs
from sensorstream.simulator import Simulator

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0

#: Throughput-minded batching: wait up to 20 ms to fill batches of up to 128 KiB.
PRODUCER_TUNING = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 20,
    "batch_size": 128 * 1024,
    # kafka-python keeps ordering under idempotence only with one request in flight per broker.
    "max_in_flight_requests_per_connection": 1,
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 120_000,
    "buffer_memory": 64 * 1024 * 1024,
}


@dataclass
class DeliveryStats:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_sent(self, kind: str) -> None:
        with self._lock:
            self.sent += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def record_ack(self) -> None:
        with self._lock:
            self.acked += 1

    def record_failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        rate = self.acked / self.elapsed if self.elapsed > 0 else 0.0
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        text = (f"sent {self.sent}, acked {self.acked}, failed {self.failed} "
                f"in {self.elapsed:.1f}s ({rate:.0f}/s)")
        if kinds:
            text += f" [{kinds}]"
        if self.errors:
            text += " errors: " + ", ".join(f"{k} x{v}" for k, v in self.errors.items())
        return text


class _Heartbeat:
    """Touches a file at most once a second after an acknowledged delivery (liveness probe)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._last = 0.0

    def beat(self) -> None:
        if not self.path:
            return
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self.path.touch()


def produce(
    settings: Settings,
    simulator: Simulator,
    count: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[DeliveryStats], None] | None = None,
    heartbeat_file: Path | None = None,
) -> DeliveryStats:
    """Send readings until `count` (0 = unlimited), `duration` seconds or `stop`; flush; return stats.

    `rate` readings per second paces the sends (0 = as fast as the client takes them).
    """
    count = settings.count if count is None else count
    rate = settings.rate if rate is None else rate
    stop = stop or threading.Event()
    require_topics(settings, [settings.input_topic])
    producer = KafkaProducer(
        **kafka_python_kwargs(settings),
        **PRODUCER_TUNING,
        client_id="sensorstream-producer",
        key_serializer=str.encode,
    )
    stats = DeliveryStats()
    heartbeat = _Heartbeat(heartbeat_file)

    def on_ack(_metadata) -> None:
        stats.record_ack()
        heartbeat.beat()

    def on_error(exc: BaseException) -> None:
        stats.record_failure(exc)
        log.warning("delivery failed: %s", exc)

    deadline = time.monotonic() + duration if duration else None
    next_report = time.monotonic() + 1.0
    try:
        while not stop.is_set():
            if count and stats.sent >= count:
                break
            if deadline and time.monotonic() >= deadline:
                break
            record = simulator.next_record()
            stats.record_sent(record.kind)
            try:
                future = producer.send(settings.input_topic, key=record.key, value=record.value)
            except KafkaError as exc:  # buffer full past max_block_ms, or the producer is closing
                on_error(exc)
                continue
            future.add_callback(on_ack)
            future.add_errback(on_error)
            if progress and time.monotonic() >= next_report:
                progress(stats)
                next_report = time.monotonic() + 1.0
            if rate > 0:
                wait = stats.started + stats.sent / rate - time.monotonic()
                if wait > 0:
                    stop.wait(wait)
    finally:
        producer.flush(timeout=FLUSH_TIMEOUT_S)
        producer.close(timeout=FLUSH_TIMEOUT_S)
        # Anything neither acked nor failed by now was lost with the closing client: say so.
        for _ in range(stats.in_flight):
            stats.record_failure(TimeoutError("not acknowledged before shutdown"))
    if progress:
        progress(stats)
    return stats
