"""The command line as a user meets it: help, settings, one-line errors, clean stops."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sensorstream.cli import build_parser
from support.cli import assert_one_line_error, cli, topic_env


@pytest.mark.parametrize(
    "command", [[], ["local"], ["local", "up"], ["produce"], ["stream"], ["report"], ["config", "show"]]
)
def test_help_is_there_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*command, "--help"])
    assert done.value.code == 0
    assert "usage: sensorstream" in capsys.readouterr().out


def test_config_show_redacts_secrets_and_names_sources(cli_env):
    env = {
        **cli_env,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "alice",
        "KAFKA_SASL_PASSWORD": "hunter2-secret",
    }
    result = cli(env, "--bootstrap-servers", "broker:9093", "config", "show")
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert re.search(r"sasl_password\s+\|\s+KAFKA_SASL_PASSWORD\s+\|\s+\*{8}", result.stdout)
    assert re.search(r"bootstrap_servers .* broker:9093 .* flag", result.stdout)
    assert re.search(r"sasl_username .* alice .* environment", result.stdout)


def test_invalid_setting_names_it_and_its_env_var(cli_env):
    assert_one_line_error(cli({**cli_env, "PRODUCER_RATE": "-2"}, "produce"), "--rate", "PRODUCER_RATE", code=2)
    assert_one_line_error(cli(cli_env, "stream", "--window", "soon"), "--window", "WINDOW_DURATION", code=2)
    assert_one_line_error(cli(cli_env, "report", "--format", "xlsx"), "--format", "REPORT_FORMATS", code=2)


@pytest.mark.parametrize("command", [["produce", "--count", "1"], ["stream", "--available-now"], ["report"]])
def test_unreachable_broker_is_one_line_naming_servers_and_the_fix(cli_env, command):
    env = {**cli_env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "KAFKA_CONNECT_TIMEOUT": "1s"}
    result = cli(env, *command, timeout=60)
    assert_one_line_error(result, "127.0.0.1:9", "sensorstream local up")


def test_a_port_that_does_not_speak_kafka_names_the_security_protocol(cli_env):
    """Something listens but never answers as Kafka (as a TLS or SASL listener does to a PLAINTEXT
    client): the line says so and names KAFKA_SECURITY_PROTOCOL, not 'start the local broker'."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # take connections, say nothing
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        result = cli(
            {**cli_env, "KAFKA_BOOTSTRAP_SERVERS": address, "KAFKA_CONNECT_TIMEOUT": "2s"},
            "produce",
            "--count",
            "1",
            timeout=60,
        )
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()
    assert_one_line_error(result, f"a program listens at {address}", "KAFKA_SECURITY_PROTOCOL=PLAINTEXT")


@pytest.mark.kafka
def test_missing_java_is_named_with_the_fix(cli_env, kafka_settings, tmp_path):
    env = {**topic_env(cli_env, kafka_settings), "JAVA_HOME": str(tmp_path / "no-jdk")}
    assert_one_line_error(cli(env, "report"), "Java not found", "JAVA_HOME")
    old = tmp_path / "old-jdk" / "bin"
    old.mkdir(parents=True)
    (old / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    (old / "java").chmod(0o755)
    env["JAVA_HOME"] = str(old.parent)
    assert_one_line_error(cli(env, "report"), "Java 11", "17")


@pytest.mark.kafka
def test_missing_connector_jars_name_the_make_target(cli_env, kafka_settings, tmp_path):
    env = {**topic_env(cli_env, kafka_settings), "SENSORSTREAM_JARS_DIR": str(tmp_path / "empty")}
    assert_one_line_error(cli(env, "stream", "--available-now"), "spark-sql-kafka-0-10_", "make jars")


@pytest.mark.kafka
def test_missing_topic_is_named(cli_env, kafka_settings):
    env = {**topic_env(cli_env, kafka_settings), "KAFKA_INPUT_TOPIC": "nope"}
    assert_one_line_error(cli(env, "produce", "--count", "1"), "'nope' does not exist")


@pytest.mark.kafka
def test_produce_prints_a_summary(cli_env, kafka_settings):
    result = cli(topic_env(cli_env, kafka_settings), "produce", "--count", "50", "--rate", "0", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "done: sent 50, acked 50, failed 0" in result.stdout


@pytest.mark.kafka
def test_produce_from_several_processes_adds_up(cli_env, kafka_settings):
    env = {**topic_env(cli_env, kafka_settings), "PRODUCER_SENSORS": "5"}
    result = cli(env, "produce", "--count", "301", "--rate", "0", "--workers", "2", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "from 2 processes" in result.stderr
    assert "done: sent 301, acked 301, failed 0" in result.stdout


@pytest.mark.kafka
def test_produce_with_the_confluent_client(cli_env, kafka_settings):
    env = {**topic_env(cli_env, kafka_settings), "PRODUCER_SENSORS": "5"}
    result = cli(
        env, "produce", "--count", "301", "--rate", "0", "--client", "confluent-kafka", "--workers", "2", "--seed", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "with confluent-kafka from 2 processes" in result.stderr
    assert "done: sent 301, acked 301, failed 0" in result.stdout


def test_missing_confluent_kafka_is_one_line_naming_the_fix(cli_env):
    # The package made unimportable in this interpreter only, as if it were not installed.
    code = (
        "import sys; sys.modules['confluent_kafka'] = None; from sensorstream.cli import main; "
        "sys.exit(main(['produce', '--client', 'confluent-kafka', '--count', '1']))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cli_env, capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "PRODUCER_CLIENT", ".venv/bin/pip install -e '.[fast]'")


@pytest.mark.kafka
@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_sigterm_flushes_and_prints_totals(cli_env, kafka_settings, client):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensorstream", "produce", "--count", "0", "--rate", "100", "--client", client],
        env=topic_env(cli_env, kafka_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping cleanly" in err
    match = re.search(r"done: sent (\d+), acked (\d+), failed 0", out)
    assert match and int(match.group(1)) == int(match.group(2)) > 0


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_stream_and_report_commands(cli_env, kafka_settings):
    env = topic_env(cli_env, kafka_settings)
    assert cli(env, "produce", "--count", "100", "--rate", "0", "--bad-ratio", "0.1", "--seed", "3").returncode == 0
    stream = cli(env, "stream", "--available-now", timeout=300)
    assert stream.returncode == 0, stream.stderr
    assert "window row(s) updated" in stream.stdout and "| sensor_1 " in stream.stdout
    report = cli(env, "report", "--format", "csv,json", timeout=300)
    assert report.returncode == 0, report.stderr
    assert "report written to" in report.stdout
    assert f"alerts 0 from {kafka_settings.alerts_topic} (spike 0, stuck 0, silent 0, back 0)" in report.stdout
    folder = next(p for p in os.scandir(kafka_settings.report_dir) if p.is_dir())
    assert sorted(os.listdir(folder.path)) == ["quality.json", "sensor_report.csv", "sensor_report.json"]


def test_help_names_the_exit_codes_the_commands_return(cli_env):
    """`--help` and the exit codes agree: status exits BEHIND (3) when behind and says so."""
    from sensorstream import status

    text = " ".join(cli(cli_env, "status", "--help").stdout.split())
    assert f"Exit code {status.BEHIND} when the stream is behind" in text, text
