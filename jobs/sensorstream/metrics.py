"""Prometheus metrics of the producer and the stream, served at http://METRICS_HOST:METRICS_PORT/metrics.

Nothing here is on a hot path: the producer's figures are read from the DeliveryStats that its
progress callback hands over about once a second (`ProducerMetrics.update`), and the stream's
from the BatchProgress of each micro-batch (`StreamMetrics.observe`) and the Pulse of each Spark
progress or idle event (`StreamMetrics.pulse`: lag per partition, last progress). Each endpoint has
its own registry, so one process (a test) can hold several, and each serves
sensorstream_build_info, so a dashboard tells which versions produced a figure.

The stream's driver also serves Spark's own metrics (PrometheusServlet, with
spark.sql.streaming.metricsEnabled) on its Spark UI port at /metrics/prometheus: see
`spark.metrics_conf()`.

Every name the Grafana dashboard (charts/sensorstream/dashboards/) queries is served by one of
these endpoints; a test scrapes a running producer and stream to keep it so.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sensorstream import __version__
from sensorstream.config import Settings, invalid
from sensorstream.readings import ALERT_KINDS, REASON_KINDS

if TYPE_CHECKING:
    from sensorstream.producer import DeliveryStats
    from sensorstream.streaming import BatchProgress, Pulse


@dataclass
class Endpoint:
    """A running /metrics endpoint; `close()` stops it."""

    url: str
    _server: WSGIServer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(registry: CollectorRegistry, settings: Settings) -> Endpoint | None:
    """Serve the registry at METRICS_HOST:METRICS_PORT/metrics; None when METRICS_PORT is unset."""
    if not settings.metrics_port:
        return None
    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host, registry)
    except OSError as exc:
        raise invalid(
            "metrics_port", f"cannot listen on {settings.metrics_host}:{settings.metrics_port} ({exc.strerror or exc})"
        ) from None
    host = settings.metrics_host if settings.metrics_host not in ("0.0.0.0", "::") else "127.0.0.1"
    return Endpoint(f"http://{host}:{settings.metrics_port}/metrics", server)


def _installed(distribution: str) -> str:
    """The installed version of a distribution, read from its metadata (nothing imported): "" when absent."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def build_info(registry: CollectorRegistry) -> None:
    """sensorstream_build_info = 1, its labels the versions this process runs with (the producer has
    no pyspark in some installs: its spark_version is then empty)."""
    info = {
        "version": __version__,
        "python_version": platform.python_version(),
        "spark_version": _installed("pyspark"),
        "kafka_python_version": _installed("kafka-python"),
        "confluent_kafka_version": _installed("confluent-kafka"),
    }
    Gauge(
        "sensorstream_build_info",
        "Versions of sensorstream and of what it runs on (always 1)",
        labelnames=tuple(info),
        registry=registry,
    ).labels(**info).set(1)


class ProducerMetrics(Collector):
    """The producer's counts, as of its last progress report."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._stats: DeliveryStats | None = None
        self.registry.register(self)
        build_info(self.registry)

    def update(self, stats: DeliveryStats) -> None:
        """Take the newest counts (called from the producer's progress callback)."""
        self._stats = stats

    def collect(self):
        stats = self._stats
        sent = CounterMetricFamily(
            "sensorstream_producer_records_sent",
            "Records handed to the Kafka client, by kind (reading, late, or the kind of malformed record)",
            labels=["kind"],
        )
        for kind, n in sorted((stats.by_kind if stats else {}).items()):
            sent.add_metric([kind], n)
        yield sent
        yield CounterMetricFamily(
            "sensorstream_producer_records_acked",
            "Records acknowledged by the brokers (acks=all)",
            value=stats.acked if stats else 0,
        )
        yield CounterMetricFamily(
            "sensorstream_producer_records_failed", "Records whose delivery failed", value=stats.failed if stats else 0
        )
        errors = CounterMetricFamily("sensorstream_producer_errors", "Failed deliveries by error", labels=["error"])
        for name, n in sorted((stats.errors if stats else {}).items()):
            errors.add_metric([name], n)
        yield errors
        yield GaugeMetricFamily(
            "sensorstream_producer_records_in_flight",
            "Records sent, not yet acknowledged or failed",
            value=stats.in_flight if stats else 0,
        )
        yield GaugeMetricFamily(
            "sensorstream_producer_ack_rate",
            "Acknowledged records per second since the start",
            value=stats.rate if stats else 0.0,
        )


class StreamMetrics:
    """The stream's figures, one micro-batch at a time (fed from streaming.run's on_progress)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry = registry or CollectorRegistry()
        build_info(registry)
        self.batches = Counter("sensorstream_stream_batches", "Micro-batches completed", registry=registry)
        self.records = Counter("sensorstream_stream_input_records", "Input records read", registry=registry)
        self.dead_letters = Counter(
            "sensorstream_stream_dead_letters",
            "Records rejected to the dead-letter topic, by kind of reason",
            labelnames=("reason",),
            registry=registry,
        )
        for kind in REASON_KINDS:  # every kind served from the start, at 0
            self.dead_letters.labels(reason=kind)
        self.alerts = Counter(
            "sensorstream_alerts",
            "The detector's alerts (STREAM_DETECT=on), by kind: spike, stuck, silent, back",
            labelnames=("kind",),
            registry=registry,
        )
        for kind in ALERT_KINDS:
            self.alerts.labels(kind=kind)
        self.late = Counter(
            "sensorstream_stream_late_readings_dropped",
            "Readings dropped because the watermark had passed their window",
            registry=registry,
        )
        self.updated = Counter("sensorstream_stream_windows_updated", "Window rows updated", registry=registry)
        self.final = Counter("sensorstream_stream_windows_final", "Windows closed by the watermark", registry=registry)
        self.open = Gauge(
            "sensorstream_stream_open_windows",
            "Windows held open (the stream's state rows; NaN with the rocksdb store, which does not count them)",
            registry=registry,
        )
        self.duration = Histogram(
            "sensorstream_stream_batch_duration_seconds",
            "Time to process a micro-batch",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.processed = Gauge(
            "sensorstream_stream_processing_rate",
            "Records per second the last batch was processed at",
            registry=registry,
        )
        self.arriving = Gauge(
            "sensorstream_stream_input_rate",
            "Records per second arriving, over the time between the last two batches",
            registry=registry,
        )
        self.watermark = Gauge(
            "sensorstream_stream_watermark_timestamp_seconds", "The event-time watermark (Unix time)", registry=registry
        )
        self.last_batch = Gauge(
            "sensorstream_stream_last_batch_timestamp_seconds",
            "When the last micro-batch completed (Unix time)",
            registry=registry,
        )
        self.last_progress = Gauge(
            "sensorstream_stream_last_progress_timestamp_seconds",
            "When Spark last reported the query alive: after a micro-batch, or every 10 s while idle (Unix time)",
            registry=registry,
        )
        self.lag = Gauge(
            "sensorstream_stream_lag_records",
            "Records an input partition was behind the topic's end when Spark planned the last batch",
            labelnames=("topic", "partition"),
            registry=registry,
        )

    def pulse(self, pulse: Pulse) -> None:
        """Take Spark's report of a batch or an idle stretch (called from Spark's listener thread)."""
        self.last_progress.set(pulse.at.timestamp())
        for (topic, partition), behind in pulse.lag.items():
            self.lag.labels(topic=topic, partition=str(partition)).set(behind)

    def observe(self, progress: BatchProgress) -> None:
        self.batches.inc()
        self.records.inc(progress.records)
        for kind, count in progress.rejected_by_reason.items():
            self.dead_letters.labels(reason=kind or "unknown").inc(count)
        for kind, count in progress.alerts_by_kind.items():
            self.alerts.labels(kind=kind).inc(count)
        self.late.inc(progress.late)
        self.updated.inc(progress.windows_updated)
        self.final.inc(progress.windows_final)
        self.open.set(progress.open_windows if progress.open_windows is not None else float("nan"))  # NaN: uncounted
        self.duration.observe(progress.seconds)
        self.processed.set(progress.records / progress.seconds if progress.seconds > 0 else 0.0)
        if progress.arriving_per_s is not None:
            self.arriving.set(progress.arriving_per_s)
        self.watermark.set(progress.watermark.timestamp())
        self.last_batch.set(time.time())
