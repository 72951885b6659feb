"""The metrics as Prometheus sees them: a running producer and stream (real broker, real Spark, each
its own process as in a pod) are scraped, and every metric the Grafana dashboard queries is there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sensorstream.local.ports import free_port
from sensorstream.readings import REASON_KINDS
from sensorstream.spark import SPARK_METRICS_PATH
from support.cli import assert_one_line_error, cli, topic_env
from support.places import CHART
from support.scrape import dashboard_metrics, scrape, value

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

DASHBOARD = CHART / "dashboards" / "sensorstream.json"
STREAM_QUERY_METRIC = "metrics_sensorstream_driver_spark_streaming_sensorstream_stream_inputRate_total_Value"


def _start(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sensorstream", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, output


def test_every_metric_the_dashboard_queries_is_served(cli_env, kafka_settings, tmp_path):
    producer_port, stream_port, spark_port = free_port(), free_port(), free_port()
    heartbeat = tmp_path / "alive"
    env = topic_env(cli_env, kafka_settings)
    producer = _start(
        env,
        "produce",
        "--count",
        "0",
        "--rate",
        "40",
        "--bad-ratio",
        "0.1",
        "--late-ratio",
        "0.1",
        "--metrics-port",
        str(producer_port),
    )
    stream = _start(
        {**env, "LOG_FORMAT": "json"},
        "stream",
        "--sinks",
        "kafka",
        "--metrics-port",
        str(stream_port),
        "--spark-ui-port",
        str(spark_port),
        "--heartbeat-file",
        str(heartbeat),
    )
    urls = {
        "producer": f"http://127.0.0.1:{producer_port}/metrics",
        "stream": f"http://127.0.0.1:{stream_port}/metrics",
        "spark": f"http://127.0.0.1:{spark_port}{SPARK_METRICS_PATH}",
    }
    try:
        deadline = time.monotonic() + 300
        while True:
            scraped = {name: scrape(url) for name, url in urls.items()}
            ready = (
                value(scraped["producer"], "sensorstream_producer_records_acked_total") > 0
                and value(scraped["stream"], "sensorstream_stream_batches_total") >= 2
                and value(scraped["stream"], "sensorstream_stream_dead_letters_total") > 0
                and "sensorstream_stream_lag_records" in scraped["stream"]  # Spark's report, after a batch
                and STREAM_QUERY_METRIC in scraped["spark"]
            )
            if ready:
                break
            assert producer.poll() is None and stream.poll() is None, "a process ended early"
            assert time.monotonic() < deadline, f"not all endpoints ready in 300 s: {urls}"
            time.sleep(2)
    finally:
        producer_exit, producer_log = _stop(producer)
        stream_exit, stream_log = _stop(stream)
    assert producer_exit == 0, producer_log
    assert stream_exit == 0, stream_log

    served = set().union(*scraped.values())
    queried = dashboard_metrics(DASHBOARD)
    assert len(queried) >= 12, queried
    assert not queried - served, f"the dashboard queries metrics nobody serves: {sorted(queried - served)}"

    producer_metrics, stream_metrics = scraped["producer"], scraped["stream"]
    assert value(producer_metrics, "sensorstream_producer_records_sent_total", 'kind="reading"') > 0
    assert value(stream_metrics, "sensorstream_stream_input_records_total") > 0
    assert value(stream_metrics, "sensorstream_stream_watermark_timestamp_seconds") > 1.7e9
    assert value(stream_metrics, "sensorstream_stream_batch_duration_seconds_count") >= 2
    assert value(stream_metrics, "sensorstream_stream_last_progress_timestamp_seconds") > 1.7e9
    partitions = {labels for labels, _ in stream_metrics["sensorstream_stream_lag_records"]}
    assert partitions == {f'{{partition="{i}",topic="{kafka_settings.input_topic}"}}' for i in range(3)}, partitions
    assert heartbeat.exists(), "the stream touches its heartbeat file on Spark's progress reports"
    for samples in (producer_metrics, stream_metrics):  # the versions, on both endpoints
        ((labels, one),) = samples["sensorstream_build_info"]
        assert one == 1 and 'version="0.1.0"' in labels and 'kafka_python_version="2.' in labels, labels
    # dead letters by kind of reason: every kind served (0 until one comes), no other
    reasons = {labels for labels, _ in stream_metrics["sensorstream_stream_dead_letters_total"]}
    assert reasons == {f'{{reason="{kind}"}}' for kind in REASON_KINDS}, reasons
    # the endpoints' addresses are printed, and LOG_FORMAT=json gives a batch's figures as fields
    assert f"http://127.0.0.1:{producer_port}/metrics" in producer_log
    assert urls["spark"] in stream_log and urls["stream"] in stream_log
    batches = [json.loads(line) for line in stream_log.splitlines() if line.startswith('{"time"')]
    batches = [b for b in batches if "batch_id" in b]
    assert batches and {"records", "rejected", "late", "watermark", "seconds"} <= set(batches[0])


def test_a_taken_metrics_port_is_one_line_naming_the_setting(cli_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(cli_env, "produce", "--metrics-port", str(port))
    assert_one_line_error(result, "--metrics-port", "METRICS_PORT", f"127.0.0.1:{port}", code=2)
