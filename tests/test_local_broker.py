"""The embedded broker through the real CLI: up, idempotent up, status, down; topics from values."""

import os

import pytest
import yaml

from sensorstream.local.broker import LocalKafka, free_port
from sensorstream.local.topics import specs_from_values
from support.cli import cli
from support.places import CHART, KAFKA_JARS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_local_up_status_down(cli_env, tmp_path):
    os.makedirs(tmp_path / "state" / "jars")
    os.symlink(KAFKA_JARS, tmp_path / "state" / "jars" / "kafka")
    port = str(free_port())
    up = cli(cli_env, "local", "up", "--port", port, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        assert f"local Kafka started at 127.0.0.1:{port}" in up.stdout
        assert "input_topic, output_topic, dead_letter_topic" in up.stdout
        again = cli(cli_env, "local", "up", "--port", port, timeout=180)
        assert again.returncode == 0 and "already up" in again.stdout
        status = cli(cli_env, "local", "status")
        assert status.returncode == 0 and "running (pid" in status.stdout
        cluster = LocalKafka(tmp_path / "state", port=int(port))
        pids = [n.pid for n in cluster.status()]
    finally:
        down = cli(cli_env, "local", "down", timeout=180)
    assert down.returncode == 0 and "stopped 1 broker" in down.stdout
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    status = cli(cli_env, "local", "status")
    assert status.returncode == 3 and "stopped" in status.stdout


def test_topics_come_from_the_chart_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["topics"]
    specs = specs_from_values()
    assert specs["input"].name == values["input"]["name"] == "input_topic"
    assert specs["input"].partitions == 3
    assert specs["deadLetter"].name == values["deadLetter"]["name"]
    assert specs["output"].config == {k: str(v) for k, v in (values["output"].get("config") or {}).items()}


def test_replicas_are_capped_to_the_broker_count(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"topics": {
        role: {"name": f"t-{role}", "partitions": 2, "replicas": 3} for role in ("input", "output", "deadLetter")
    }}))
    assert {s.replicas for s in specs_from_values(values, max_replicas=2).values()} == {2}
    assert {s.replicas for s in specs_from_values(values).values()} == {3}


def test_two_brokers_form_one_cluster(tmp_path):
    from kafka import KafkaAdminClient

    cluster = LocalKafka(tmp_path, brokers=2, port=free_port(), jars_dir=KAFKA_JARS)
    with cluster.running() as bootstrap:
        assert len(bootstrap.split(",")) == 2
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
        try:
            assert len(admin.describe_cluster()["brokers"]) == 2
        finally:
            admin.close()
