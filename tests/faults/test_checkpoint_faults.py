"""A stopped stream's checkpoint that no longer fits its input: records deleted under it, the topic
deleted and recreated, a damaged offsets file. Each is one line naming the fix, in seconds (before
Spark starts); the explicit --skip-lost-records goes on and says how many it skipped."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from kafka import TopicPartition

from sensorstream.producer import produce
from sensorstream.simulator import Simulator
from support.cli import assert_one_line_error, cli, isolated_env
from support.cluster import env_for
from support.readings import stepping_clock

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

STREAM = ("stream", "--sinks", "kafka", "--available-now")


def send(settings, count: int, seed: int) -> None:
    sim = Simulator(sensors=10, seed=seed, clock=stepping_clock())
    assert produce(settings, sim, count=count, rate=0).acked == count


@pytest.fixture(scope="module")
def streamed_once(cluster, tmp_path_factory):
    """One topic streamed to its end, once for the module: its settings and checkpoint folder."""
    settings = cluster.settings(tmp_path_factory.mktemp("streamed"))
    send(settings, 3_000, seed=81)
    env = env_for(isolated_env(tmp_path_factory.mktemp("state")), settings)
    result = cli(env, *STREAM, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return settings


@pytest.fixture
def streamed(streamed_once, cli_env, tmp_path):
    """The module's streamed topic, with a copy of its checkpoint for this test to break.

    The tests below run in file order: the damaged checkpoints leave the topic alone, the retention
    gap deletes records from it, the last one deletes and recreates it.
    """
    settings = streamed_once.replace(checkpoint_location=tmp_path / "checkpoints")
    shutil.copytree(streamed_once.checkpoint_location, settings.checkpoint_location)
    return settings, env_for(cli_env, settings), settings.checkpoint_location / "stream"


def timed(env, *args):
    started = time.monotonic()
    result = cli(env, *args, timeout=600)
    return result, time.monotonic() - started


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_checkpoint(streamed, figures, damage):
    _settings, env, checkpoint = streamed
    newest = max((p for p in (checkpoint / "offsets").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    text = newest.read_text()
    newest.write_text(text[: len(text) // 2] if damage == "truncated" else "")
    result, took = timed(env, *STREAM)
    figures(
        f"{damage} {newest.relative_to(checkpoint)}: exit {result.returncode} in {took:.0f} s: "
        f"{result.stderr.strip().splitlines()[-1]}"
    )
    assert_one_line_error(result, "damaged", "--reset-checkpoint")


def test_retention_gap(cluster, streamed, figures):
    settings, env, _ = streamed
    send(settings, 3_000, seed=82)  # unread by the stopped stream...
    admin = cluster.admin()
    try:  # ...and half of it deleted, as retention or kafka-delete-records would
        ends = _ends(cluster, settings.input_topic)
        admin.delete_records({TopicPartition(settings.input_topic, p): o - 500 for p, o in ends.items() if o > 500})
    finally:
        admin.close()
    result, took = timed(env, *STREAM)
    error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    figures(f"without the flag: exit {result.returncode} in {took:.0f} s: {error}")
    assert_one_line_error(result, settings.input_topic, "--skip-lost-records", "--reset-checkpoint")
    lost = sum(int(n.replace(",", "")) for n in re.findall(r"([\d,]+) record\(s\) of input topic", error))
    skipped, took = timed(env, *STREAM, "--skip-lost-records")
    line = next((text for text in skipped.stderr.splitlines() if text.startswith("skipping")), "")
    batches = re.findall(r"batch \d+: ([\d,]+) records", skipped.stderr)
    read = sum(int(n.replace(",", "")) for n in batches)
    figures(
        f"with --skip-lost-records: exit {skipped.returncode} in {took:.0f} s; '{line}'; read {read} of the "
        f"3000 sent after the stop ({lost} lost)"
    )
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert line.startswith(f"skipping {lost:,} record(s)")
    assert read == 3_000 - lost


def _ends(cluster, topic):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap.split(","))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: o for tp, o in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def test_topic_deleted_and_recreated(cluster, streamed, figures):
    settings, env, _ = streamed
    admin = cluster.admin()
    try:
        admin.delete_topics([settings.input_topic])
    finally:
        admin.close()
    deadline = time.monotonic() + 60
    while True:  # deletion is asynchronous
        try:
            cluster.create(settings.input_topic, 3)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    send(settings, 300, seed=83)
    result, took = timed(env, *STREAM)
    figures(f"exit {result.returncode} in {took:.0f} s: {result.stderr.strip().splitlines()[-1]}")
    assert_one_line_error(result, settings.input_topic, "deleted and created again", "--reset-checkpoint")
    fresh, took = timed(env, *STREAM, "--reset-checkpoint")
    read = sum(int(n.replace(",", "")) for n in re.findall(r"batch \d+: ([\d,]+) records", fresh.stderr))
    figures(f"with --reset-checkpoint: exit {fresh.returncode} in {took:.0f} s, read {read} of 300")
    assert fresh.returncode == 0 and read == 300
