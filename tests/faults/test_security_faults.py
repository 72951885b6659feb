"""Fault 12, security: a local broker whose clients must use SASL_SSL (SCRAM-SHA-512, TLS from a CA
made here). `produce`, `stream` and `report` work end to end over it; a wrong password or an
untrusted CA fails in seconds with one line naming the fix; the password is in no line any command
prints, in no file of the broker's, and `config show` hides it.

This test starts its own single secured broker (`local up --sasl-ssl`), not the suite's three-broker
cluster, and stops exactly what that started, by its pid files.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from sensorstream.config import load_settings
from sensorstream.local.broker import LocalKafka
from sensorstream.local.ports import free_port
from support.broker import consume_all
from support.cli import assert_one_line_error, cli, isolated_env
from support.places import KAFKA_JARS
from support.readings import assert_stats_equal, reference_reason, reference_windows
from support.tls import make_broker_tls, make_ca

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

USER = "sensor-app"
#: Distinctive, so a grep of every output finds it wherever it leaked.
PASSWORD = f"pw-{uuid.uuid4().hex}"
WRONG = f"wrong-{uuid.uuid4().hex}"
READINGS = 3000
WINDOW = timedelta(minutes=5)
#: Only a guard against hanging: the failures below take well under a second of their own.
FAIL_WITHIN_S = 30


@pytest.fixture
def all_brokers_up():
    """Replaces the suite's fixture of the same name: this module never needs the three-broker cluster."""
    yield


class Secured:
    """The secured broker, the CLI's environment for it, and every output a command printed here."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.tls = make_broker_tls(folder / "tls")
        self.state = folder / "state"
        (self.state / "jars").mkdir(parents=True)
        (self.state / "jars" / "kafka").symlink_to(KAFKA_JARS)
        self.port = free_port()
        self.env = {
            **isolated_env(self.state),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.port}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": PASSWORD,
            "KAFKA_SSL_CA_LOCATION": str(self.tls / "ca.pem"),
            "SPARK_MASTER": "local[1]",
            "CHECKPOINT_LOCATION": str(folder / "checkpoints"),
            "REPORT_DIR": str(folder / "reports"),
            "STREAM_PARQUET_DIR": str(folder / "windows"),
        }
        self.outputs: list[tuple[str, str]] = []  # (command, what it printed)

    @property
    def settings(self):
        return load_settings(environ=self.env)

    def run(self, *args: str, env: dict | None = None, timeout: float = 600):
        result = cli({**self.env, **(env or {})}, *args, timeout=timeout)
        self.outputs.append((" ".join(args), result.stdout + result.stderr))
        return result

    def stop(self) -> None:
        LocalKafka(self.state).down()  # signals only the pids `local up` wrote


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    broker = Secured(tmp_path_factory.mktemp("secured"))
    try:
        started = time.monotonic()
        up = broker.run("local", "up", "--sasl-ssl", str(broker.tls), "--port", str(broker.port), timeout=240)
        assert up.returncode == 0, up.stderr[-3000:]
        assert "SASL_SSL" in up.stdout and "input_topic" in up.stdout, up.stdout
        broker.up_seconds = time.monotonic() - started
        yield broker
    finally:
        broker.stop()


def test_produce_stream_report_over_sasl_ssl(secured, figures):
    produced = secured.run(
        "produce", "--count", str(READINGS), "--rate", "0", "--workers", "1", "--seed", "12", "--bad-ratio", "0.05"
    )
    assert produced.returncode == 0, produced.stderr[-3000:]
    assert f"done: sent {READINGS}, acked {READINGS}, failed 0" in produced.stdout, produced.stdout

    settings = secured.settings
    records = consume_all(settings, settings.input_topic)  # read back over SASL_SSL too
    reasons = [reference_reason(r.value) for r in records]
    readings = [json.loads(r.value) for r, reason in zip(records, reasons) if reason is None]
    truth = reference_windows(readings, WINDOW)

    streamed = secured.run("stream", "--available-now", "--sinks", "kafka")
    assert streamed.returncode == 0, streamed.stderr[-3000:]
    counted = sum(int(n.replace(",", "")) for n in re.findall(r"batch \d+: ([\d,]+) records", streamed.stderr))
    output = {r.key.decode(): json.loads(r.value) for r in consume_all(settings, settings.output_topic)}
    dead = consume_all(settings, settings.dead_letter_topic)

    reported = secured.run("report", "--format", "csv")
    assert reported.returncode == 0, reported.stderr[-3000:]
    totals = re.search(r"records (\d+): valid (\d+), rejected (\d+)", reported.stdout)

    figures(
        f"secured broker up in {secured.up_seconds:.0f} s; produced {READINGS} over SASL_SSL (in the topic "
        f"{len(records)}, {len(readings)} valid); streamed {counted} records into {len(output)} window keys "
        f"(truth {len(truth)}), {len(dead)} dead letters for {len(records) - len(readings)} rejects; "
        f"reported {totals.group(1) if totals else '?'} records, {totals.group(2) if totals else '?'} valid"
    )
    assert len(records) == READINGS and counted == READINGS
    assert len(dead) == len(records) - len(readings)
    assert set(output) == {f"{sensor}|{start:%Y-%m-%dT%H:%M:%SZ}" for start, sensor in truth}
    for (start, sensor), stats in truth.items():
        assert_stats_equal(output[f"{sensor}|{start:%Y-%m-%dT%H:%M:%SZ}"], stats)
    assert totals and (int(totals.group(1)), int(totals.group(2))) == (READINGS, len(readings)), reported.stdout


def fails_fast(secured, figures, label: str, command, env: dict[str, str], *fragments: str) -> None:
    """`command` with `env` ends in one error line holding `fragments`, within FAIL_WITHIN_S."""
    started = time.monotonic()
    result = secured.run(*command, env=env, timeout=120)
    took = time.monotonic() - started
    figures(
        f"{label}: exit {result.returncode} in {took:.1f} s: "
        f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}"
    )
    assert_one_line_error(result, *fragments)
    assert took < FAIL_WITHIN_S


@pytest.mark.parametrize(
    "command", [("produce", "--count", "10"), ("stream", "--available-now"), ("report",), ("status",)]
)
def test_wrong_password_fails_in_seconds(secured, command, figures):
    fails_fast(
        secured,
        figures,
        f"{command[0]} with a wrong password",
        command,
        {"KAFKA_SASL_PASSWORD": WRONG},
        "refused the login",
        "authentication failed",
        "KAFKA_SASL_PASSWORD",
    )


def test_untrusted_ca_fails_in_seconds(secured, figures):
    other = make_ca(secured.folder / "other", name="other-ca")
    fails_fast(
        secured,
        figures,
        "produce trusting another CA",
        ("produce", "--count", "10"),
        {"KAFKA_SSL_CA_LOCATION": str(other)},
        "not trusted",
        "KAFKA_SSL_CA_LOCATION",
    )


def test_plaintext_client_is_told_the_protocol(secured, figures):
    """A client left on PLAINTEXT: the broker's TLS listener never answers it as Kafka; the one line
    names KAFKA_SECURITY_PROTOCOL instead of 'start the local broker'."""
    fails_fast(
        secured,
        figures,
        "produce in PLAINTEXT against the SASL_SSL listener",
        ("produce", "--count", "10"),
        {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "KAFKA_SASL_MECHANISM": "", "KAFKA_CONNECT_TIMEOUT": "3s"},
        "gave no Kafka answer",
        "KAFKA_SECURITY_PROTOCOL=PLAINTEXT",
    )


def test_confluent_kafka_producer_over_sasl_ssl(secured, figures):
    """The other producer client takes the same settings in librdkafka's names."""
    result = secured.run("produce", "--count", "100", "--rate", "0", "--workers", "1", "--client", "confluent-kafka")
    figures(f"produce --client confluent-kafka: exit {result.returncode}: {result.stdout.strip().splitlines()[-1:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done: sent 100, acked 100, failed 0" in result.stdout


def test_no_secret_in_any_output(secured, figures):
    """Every output of this module's commands, a produce at DEBUG level, `config show`, and every file
    the broker wrote: neither the password nor the wrong one appears."""
    shown = secured.run("config", "show")
    assert shown.returncode == 0, shown.stderr
    (password_row,) = [line for line in shown.stdout.splitlines() if "KAFKA_SASL_PASSWORD" in line]
    assert "********" in password_row
    debug = secured.run("produce", "--count", "20", "--workers", "1", env={"LOG_LEVEL": "DEBUG"})
    assert debug.returncode == 0, debug.stderr[-3000:]
    files = [p for p in (secured.state / "local").rglob("*") if p.is_file()]
    texts = secured.outputs + [(str(p), p.read_text(errors="replace")) for p in files]
    lines = sum(len(text.splitlines()) for _, text in texts)
    leaks = [where for where, text in texts for secret in (PASSWORD, WRONG) if secret in text]
    figures(
        f"{len(secured.outputs)} command outputs and {len(files)} broker files, {lines:,} lines: "
        f"{len(leaks)} with a secret"
    )
    assert leaks == []
