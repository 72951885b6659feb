"""Session fixtures: one real Kafka broker (started by the same code as `sensorstream local up`,
on a free port) and one real SparkSession (local[2], connector jars). Each test gets fresh topics."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sensorstream.config import REPO_ROOT, Settings, load_settings
from sensorstream.local.broker import LocalKafka, free_port
from sensorstream.local.topics import TopicSpec, ensure_topics

ROOT = REPO_ROOT or Path(__file__).resolve().parents[1]
JARS = ROOT / ".sensorstream" / "jars"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A real single-broker KRaft cluster for the whole test session."""
    state = tmp_path_factory.mktemp("kafka-state")
    cluster = LocalKafka(state, brokers=1, port=free_port(), jars_dir=JARS / "kafka")
    with cluster.running() as bootstrap:
        yield bootstrap


def base_settings(**overrides) -> Settings:
    """Settings from defaults only (the developer's environment must not leak into tests)."""
    return load_settings(environ={}, overrides=overrides)


def isolated_settings(bootstrap: str, folder: Path, **overrides) -> Settings:
    """Settings pointing at the session broker, with fresh uniquely named topics and folders under
    `folder`; overrides are settings by name (sinks="kafka", ...)."""
    tag = uuid.uuid4().hex[:10]
    settings = base_settings(
        bootstrap_servers=bootstrap,
        checkpoint_location=str(folder / "checkpoints"),
        parquet_dir=str(folder / "windows"),
        report_dir=str(folder / "reports"),
        jars_dir=str(JARS / "spark"),
        **overrides,
    ).replace(input_topic=f"in-{tag}", output_topic=f"out-{tag}", dead_letter_topic=f"dlq-{tag}")
    ensure_topics(bootstrap, [
        TopicSpec(settings.input_topic, partitions=3),
        TopicSpec(settings.output_topic, partitions=3),
        TopicSpec(settings.dead_letter_topic, partitions=1),
    ])
    return settings


@pytest.fixture
def kafka_settings(kafka_bootstrap, tmp_path) -> Settings:
    """Settings pointing at the session broker, with fresh uniquely named topics for this test."""
    return isolated_settings(kafka_bootstrap, tmp_path)


@pytest.fixture(scope="session")
def spark():
    """One SparkSession (local[2]) for the whole test session."""
    from sensorstream.spark import get_session

    session = get_session(base_settings(jars_dir=str(JARS / "spark")))
    yield session
    session.stop()


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """An environment for running the CLI as a subprocess, isolated from the developer's settings."""
    keep = ("PATH", "HOME", "JAVA_HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")  # PYTHONPATH: the code under test
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["SENSORSTREAM_STATE_DIR"] = str(tmp_path / "state")
    env["SENSORSTREAM_JARS_DIR"] = str(JARS / "spark")
    return env
