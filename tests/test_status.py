"""`sensorstream status`: the stream's checkpoint against the topic's end offsets (real broker, real
Spark writing the checkpoint), and its exit code as a health signal."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sensorstream import status, streaming
from sensorstream.producer import produce
from sensorstream.simulator import Simulator
from support.cli import cli, topic_env
from support.readings import stepping_clock

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]


def _produce(settings, count: int) -> None:
    simulator = Simulator(sensors=6, seed=5, clock=stepping_clock(step=timedelta(seconds=5)))
    assert produce(settings, simulator, count=count, rate=0).acked == count


def test_status_shows_the_lag_of_the_streams_checkpoint(kafka_settings, spark, cli_env):
    settings = kafka_settings.replace(sinks=("kafka",))
    env = topic_env(cli_env, settings)

    before = cli(env, "status")  # no stream has run: nothing committed, which is behind
    assert before.returncode == status.BEHIND, before.stderr
    assert "no committed batch yet" in before.stdout and settings.input_topic in before.stdout

    _produce(settings, 120)
    streaming.run(spark, settings, available_now=True, say=lambda _: None)
    caught_up = status.read_status(settings)
    assert caught_up.batch_id is not None and caught_up.lag == 0
    assert sum(p.end for p in caught_up.partitions) == 120 and len(caught_up.partitions) == 3
    assert caught_up.watermark is not None and caught_up.last_batch_at is not None
    assert {settings.input_topic, settings.output_topic, settings.dead_letter_topic} <= set(caught_up.topics)

    _produce(settings, 40)  # arrives while no stream runs: the lag
    behind = status.read_status(settings)
    assert behind.lag == 40 and behind.batch_id == caught_up.batch_id
    assert sum(p.committed or 0 for p in behind.partitions) == 120

    ok = cli(env, "status", "--max-lag", "40")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "lag of" in ok.stdout and "40 record(s)" in ok.stdout and "keeping up" in ok.stdout
    assert "| partition | committed | end | lag |" in ok.stdout
    late = cli({**env, "STATUS_MAX_LAG": "39"}, "status")
    assert late.returncode == status.BEHIND and "behind" in late.stdout, late.stdout + late.stderr


def test_status_of_an_unreachable_broker_is_one_line(cli_env):
    result = cli({**cli_env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "KAFKA_CONNECT_TIMEOUT": "1s"}, "status")
    assert result.returncode == 1 and result.stderr.count("sensorstream: error:") == 1, result.stderr
