"""The embedded broker through the real CLI: up, idempotent up, status, down; topics from values."""

import os
import socket

import pytest
import yaml

from sensorstream.errors import LocalStackError
from sensorstream.local.broker import LocalKafka
from sensorstream.local.ports import free_port
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
    values.write_text(
        yaml.safe_dump(
            {
                "topics": {
                    role: {"name": f"t-{role}", "partitions": 2, "replicas": 3}
                    for role in ("input", "output", "deadLetter")
                }
            }
        )
    )
    assert {s.replicas for s in specs_from_values(values, max_replicas=2).values()} == {2}
    assert {s.replicas for s in specs_from_values(values).values()} == {3}


def test_two_brokers_form_one_cluster(tmp_path):
    """Two brokers serve one cluster; when one of them cannot start, `up` stops the other again (it
    started it) and names the one that failed, leaving no broker running behind the error."""
    from kafka import KafkaAdminClient

    cluster = LocalKafka(tmp_path, brokers=2, port=free_port(), jars_dir=KAFKA_JARS)
    with cluster.running() as bootstrap:
        assert len(bootstrap.split(",")) == 2
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","))
        try:
            assert len(admin.describe_cluster()["brokers"]) == 2
        finally:
            admin.close()

    taken = socket.socket()  # broker 2's port, held by "another program"
    taken.bind(("127.0.0.1", cluster.status()[1].port))
    taken.listen()
    try:
        with pytest.raises(LocalStackError, match="broker 2"):
            cluster.up()
    finally:
        taken.close()
    assert [node.running for node in cluster.status()] == [False, False]


# --- the secured listener (`local up --sasl-ssl DIR`); the broker itself runs in tests/faults ---


def _tls_dir(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    for name in ("broker.pem", "broker.key", "ca.pem"):
        (folder / name).write_text(f"-----BEGIN {name}-----\n")
    return folder


def _secured_settings(**env):
    from sensorstream.config import load_settings

    return load_settings(environ={"KAFKA_SASL_USERNAME": "app", "KAFKA_SASL_PASSWORD": "pw-1", **env})


def test_sasl_ssl_reads_the_clients_user_and_the_folders_files(tmp_path):
    from sensorstream.local.broker import SaslSsl

    tls = _tls_dir(tmp_path)
    security = SaslSsl.from_settings(tls, _secured_settings())
    assert (security.username, security.password.reveal(), security.ca) == ("app", "pw-1", tls / "ca.pem")
    assert security.scram_argument() == "SCRAM-SHA-512=[name=app,password=pw-1]"
    clients = security.client_settings(_secured_settings())
    assert (clients.security_protocol, clients.sasl_mechanism, clients.ssl_ca_location) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        tls / "ca.pem",
    )
    props = security.listener_properties("127.0.0.1", 9092, 9100, 9200, tmp_path / "keystore.pem")
    assert props["listeners"] == ("SASL_SSL://127.0.0.1:9092,INTERNAL://127.0.0.1:9100,CONTROLLER://127.0.0.1:9200")
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert "pw-1" not in repr(props) and "pw-1" not in repr(security)
    other_ca = tmp_path / "other.pem"
    other_ca.write_text("x")
    assert SaslSsl.from_settings(tls, _secured_settings(KAFKA_SSL_CA_LOCATION=str(other_ca))).ca == other_ca


@pytest.mark.parametrize(
    "env, missing, words",
    [
        ({}, "broker.key", ["broker.key not found", "--sasl-ssl"]),
        ({}, "ca.pem", ["KAFKA_SSL_CA_LOCATION", "ca.pem not found"]),
        ({"KAFKA_SASL_PASSWORD": ""}, None, ["KAFKA_SASL_PASSWORD", "required with --sasl-ssl"]),
        ({"KAFKA_SASL_USERNAME": "a,b"}, None, ["KAFKA_SASL_USERNAME", "commas"]),
    ],
)
def test_sasl_ssl_says_what_is_missing(tmp_path, env, missing, words):
    from sensorstream.errors import ConfigError
    from sensorstream.local.broker import SaslSsl

    tls = _tls_dir(tmp_path)
    if missing:
        (tls / missing).unlink()
    with pytest.raises(ConfigError) as raised:
        SaslSsl.from_settings(tls, _secured_settings(**env))
    for word in words:
        assert word in str(raised.value)


def test_local_up_sasl_ssl_without_a_password_is_one_line(cli_env, tmp_path):
    from support.cli import assert_one_line_error

    result = cli({**cli_env, "KAFKA_SASL_USERNAME": "app"}, "local", "up", "--sasl-ssl", str(_tls_dir(tmp_path)))
    assert_one_line_error(result, "KAFKA_SASL_PASSWORD", "--sasl-ssl", code=2)


def test_a_cluster_keeps_the_security_it_was_formatted_with(tmp_path):
    from sensorstream.errors import LocalStackError
    from sensorstream.local.broker import SaslSsl

    home = tmp_path / "state" / "local"
    home.mkdir(parents=True)
    (home / "cluster.json").write_text('{"cluster_id": "x", "ports": [9092], "controller_ports": [9093]}')
    security = SaslSsl.from_settings(_tls_dir(tmp_path), _secured_settings())
    with pytest.raises(LocalStackError, match="created without --sasl-ssl"):
        LocalKafka(tmp_path / "state", security=security)._prepare("java", "")
    (home / "cluster.json").write_text(
        '{"cluster_id": "x", "ports": [9092], "controller_ports": [9093], '
        '"sasl_ssl": {"tls_dir": "/t", "user": "other"}}'
    )
    with pytest.raises(LocalStackError, match="created with --sasl-ssl DIR"):
        LocalKafka(tmp_path / "state")._prepare("java", "")
    with pytest.raises(LocalStackError, match="SCRAM user 'other'"):
        LocalKafka(tmp_path / "state", security=security)._prepare("java", "")


def test_a_cluster_keeps_the_address_it_was_formatted_with(tmp_path):
    """`local up --port/--host` on a cluster formatted for another address is one line naming the way
    out; without the flags, or with the same ones, it starts where it was formatted."""
    home = tmp_path / "state" / "local"
    home.mkdir(parents=True)
    (home / "cluster.json").write_text(
        '{"cluster_id": "x", "host": "10.244.0.1", "ports": [19092], "controller_ports": [9093]}'
    )
    for asked in ({"port": 9092}, {"host": "127.0.0.1"}, {"host": "10.244.0.1", "port": 9092}):
        with pytest.raises(LocalStackError, match=r"listening on 10\.244\.0\.1:19092, not .*local down --purge"):
            LocalKafka(tmp_path / "state", **asked)._prepare("java", "")
    for asked in ({}, {"port": 19092}, {"host": "10.244.0.1", "port": 19092}):
        assert LocalKafka(tmp_path / "state", **asked)._prepare("java", "")["ports"] == [19092]
    assert LocalKafka(tmp_path / "state").bootstrap == "10.244.0.1:19092"
    # A cluster formatted before the host was recorded listens on 127.0.0.1.
    (home / "cluster.json").write_text('{"cluster_id": "x", "ports": [9092], "controller_ports": [9093]}')
    assert LocalKafka(tmp_path / "state").bootstrap == "127.0.0.1:9092"
