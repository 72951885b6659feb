from datetime import timedelta

import pytest

from sensorstream.config import (
    Secret,
    confluent_kafka_config,
    describe,
    kafka_python_kwargs,
    load_settings,
    parse_duration,
    spark_interval,
    spark_kafka_options,
)
from sensorstream.errors import ConfigError


def test_defaults_match_the_original_course():
    s = load_settings(environ={})
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert (s.input_topic, s.output_topic) == ("input_topic", "output_topic")
    assert s.window_duration == timedelta(minutes=5)
    assert s.watermark_delay == timedelta(minutes=10)
    # the one departure: the course's 10 s trigger, chosen from measurements (jobs/README.md, "The trigger choice")
    assert s.trigger_interval == timedelta(milliseconds=250)
    assert (s.sensors, s.count, s.rate) == (10, 100, 0.5)
    # the course's CSV, and a page to look at (sensor_report.html)
    assert s.report_formats == ("csv", "html")


def test_precedence_defaults_file_environment_flags(tmp_path):
    env_file = tmp_path / "config.env"
    env_file.write_text(
        "# the original config.env keys\n"
        "KAFKA_BOOTSTRAP_SERVERS=file:9092\nKAFKA_INPUT_TOPIC=from_file\n"
        "export SPARK_APP_NAME='quoted app'\nBATCH_DURATION=30\nKAFKA_OUTPUT_TOPIC=file_out\n"
    )
    s = load_settings(
        env_file=env_file,
        environ={"KAFKA_INPUT_TOPIC": "from_env", "KAFKA_OUTPUT_TOPIC": "env_out"},
        overrides={"output_topic": "flag_out", "sensors": None},
    )
    assert s.bootstrap_servers == "file:9092"
    assert s.spark_app_name == "quoted app"
    assert s.trigger_interval == timedelta(seconds=30)
    assert s.input_topic == "from_env"
    assert s.output_topic == "flag_out"
    assert s.sensors == 10
    assert s.sources["bootstrap_servers"] == "env file"
    assert s.sources["input_topic"] == "environment"
    assert s.sources["output_topic"] == "flag"
    assert s.sources["sensors"] == "default"


def test_env_file_named_by_environment(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("PRODUCER_SENSORS=3\n")
    assert load_settings(environ={"SENSORSTREAM_ENV_FILE": str(env_file)}).sensors == 3


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("5 minutes", timedelta(minutes=5)),
        ("5m", timedelta(minutes=5)),
        ("300", timedelta(seconds=300)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2 days", timedelta(days=2)),
    ],
)
def test_parse_duration(raw, expected):
    assert parse_duration(raw) == expected


def test_spark_interval():
    assert spark_interval(timedelta(minutes=5)) == "300 seconds"
    assert spark_interval(timedelta(milliseconds=1500)) == "1500 milliseconds"


@pytest.mark.parametrize(
    "env, value, flag",
    [
        ("PRODUCER_RATE", "-1", "--rate"),
        ("WINDOW_DURATION", "five minutes", "--window"),
        ("WATERMARK_DELAY", "0s", "--watermark"),
        ("REPORT_FORMATS", "csv,xml", "--format"),
        ("STREAM_SINKS", "console,s3", "--sinks"),
        ("PRODUCER_SENSORS", "0", "--sensors"),
        ("PRODUCER_COUNT", "lots", "--count"),
        ("STARTING_OFFSETS", "yesterday", "--starting-offsets"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS", "security_protocol"),
    ],
)
def test_invalid_settings_name_the_setting_and_env_var(env, value, flag):
    with pytest.raises(ConfigError) as err:
        load_settings(environ={env: value})
    message = str(err.value)
    assert env in message and flag in message and value.split(",")[-1] in message
    assert "\n" not in message


def test_max_reject_ratio_is_off_unless_set():
    assert load_settings(environ={}).max_reject_ratio is None
    assert load_settings(environ={"STREAM_MAX_REJECT_RATIO": " "}).max_reject_ratio is None
    assert load_settings(environ={"STREAM_MAX_REJECT_RATIO": "0.5"}).max_reject_ratio == 0.5
    assert load_settings(environ={}, overrides={"max_reject_ratio": "1"}).max_reject_ratio == 1.0


@pytest.mark.parametrize("value", ["0", "-0.1", "1.01", "nan", "inf", "half", "50%"])
def test_max_reject_ratio_takes_a_share_above_zero_up_to_one(value):
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"STREAM_MAX_REJECT_RATIO": value})
    message = str(err.value)
    assert "STREAM_MAX_REJECT_RATIO" in message and "--max-reject-ratio" in message and value in message
    assert "\n" not in message


def test_slide_longer_than_window_is_rejected():
    with pytest.raises(ConfigError, match="SLIDE_DURATION"):
        load_settings(environ={"SLIDE_DURATION": "10 minutes"})


def test_sasl_needs_a_mechanism():
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM"):
        load_settings(environ={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


SECURE = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "sensor",
    "KAFKA_SASL_PASSWORD": "s3cr3t-value",
}


def test_security_settings_reach_both_clients(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load_settings(environ={**SECURE, "KAFKA_SSL_CA_LOCATION": str(ca)})
    kw = kafka_python_kwargs(s)
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("sensor", "s3cr3t-value")
    assert kw["ssl_cafile"] == str(ca)
    opts = spark_kafka_options(s)
    assert opts["kafka.security.protocol"] == "SASL_SSL"
    assert opts["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert "ScramLoginModule required" in opts["kafka.sasl.jaas.config"]
    assert 'password="s3cr3t-value"' in opts["kafka.sasl.jaas.config"]
    assert opts["kafka.ssl.truststore.location"] == str(ca)


def test_security_settings_reach_confluent_kafka_in_librdkafka_names(tmp_path):
    ca, cert, key = (tmp_path / f"{name}.pem" for name in ("ca", "cert", "key"))
    s = load_settings(
        environ={
            **SECURE,
            "KAFKA_SSL_CA_LOCATION": str(ca),
            "KAFKA_SSL_CERT_LOCATION": str(cert),
            "KAFKA_SSL_KEY_LOCATION": str(key),
            "KAFKA_BOOTSTRAP_SERVERS": "a:9093,b:9093",
        }
    )
    assert confluent_kafka_config(s) == {
        "bootstrap.servers": "a:9093,b:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "sensor",
        "sasl.password": "s3cr3t-value",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
    }
    assert confluent_kafka_config(load_settings(environ={})) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
    }


def test_librdkafka_takes_the_sasl_names():
    from confluent_kafka import Producer

    s = load_settings(
        environ={**SECURE, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    )
    # An unknown name or value would raise here; no connection is needed to know.
    Producer({**confluent_kafka_config(s), "log_level": 0}).close()


def test_producer_client_is_kafka_python_unless_chosen():
    assert load_settings(environ={}).producer_client == "kafka-python"
    assert load_settings(environ={"PRODUCER_CLIENT": "Confluent-Kafka"}).producer_client == "confluent-kafka"
    assert (
        load_settings(environ={}, overrides={"producer_client": "confluent-kafka"}).producer_client == "confluent-kafka"
    )
    with pytest.raises(ConfigError, match=r"--client \(env PRODUCER_CLIENT\).*kafka-python, confluent-kafka"):
        load_settings(environ={"PRODUCER_CLIENT": "rdkafka"})


def test_secrets_are_redacted_everywhere():
    s = load_settings(environ=SECURE)
    assert "s3cr3t" not in repr(s)
    assert "s3cr3t" not in str(s.sasl_password)
    shown = {name: value for name, _env, value, _src in describe(s)}
    assert shown["sasl_password"] == "********"
    assert s.sasl_password == Secret("s3cr3t-value")
