"""Session fixtures: one real Kafka broker (started by the same code as `sensorstream local up`,
on a free port) and one real SparkSession (local[2], connector jars). Each test gets fresh topics.
What the fixtures are built from is in tests/support/."""

from __future__ import annotations

import pytest

from sensorstream.config import Settings
from sensorstream.local.broker import LocalKafka
from sensorstream.local.ports import free_port
from support.broker import base_settings, isolated_settings
from support.cli import isolated_env
from support.places import KAFKA_JARS, SPARK_JARS


def pytest_collection_modifyitems(config, items):
    """The fault tests (marker `faults`, tests/faults/) run only when asked for by name (`-m faults`,
    `make test-faults`): they start a three-broker cluster and kill parts of it."""
    if "faults" in (config.option.markexpr or ""):
        return
    faults = [item for item in items if item.get_closest_marker("faults")]
    if faults:
        config.hook.pytest_deselected(items=faults)
        items[:] = [item for item in items if not item.get_closest_marker("faults")]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """A real single-broker KRaft cluster for the whole test session."""
    state = tmp_path_factory.mktemp("kafka-state")
    cluster = LocalKafka(state, brokers=1, port=free_port(), jars_dir=KAFKA_JARS)
    with cluster.running() as bootstrap:
        yield bootstrap


@pytest.fixture
def kafka_settings(kafka_bootstrap, tmp_path) -> Settings:
    """Settings pointing at the session broker, with fresh uniquely named topics for this test."""
    return isolated_settings(kafka_bootstrap, tmp_path)


@pytest.fixture(scope="session")
def spark():
    """One SparkSession (local[2]) for the whole test session."""
    from sensorstream.spark import get_session

    session = get_session(base_settings(jars_dir=str(SPARK_JARS)))
    yield session
    session.stop()


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """An environment for running the CLI as a subprocess, isolated from the developer's settings."""
    return isolated_env(tmp_path / "state")
