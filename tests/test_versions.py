"""One version per component: the Python pins and the pom's JVM pins agree, and what is installed
is what is pinned. Versions are read from pyproject.toml and pom.xml, never typed in here."""

import json
import re

from support.places import CHART, pom_property, pyproject_pin


def test_pyspark_matches_the_connector():
    assert pyproject_pin("pyspark") == pom_property("spark.version")


def test_installed_pyspark_is_the_pinned_one():
    import pyspark

    assert pyspark.__version__ == pom_property("spark.version")


def test_local_broker_runs_a_kafka_the_charts_strimzi_supports():
    pattern = json.loads((CHART / "values.schema.json").read_text())["properties"]["kafka"]["properties"]["version"]
    assert re.search(pattern["pattern"], pom_property("kafka.version"))


def test_kafka_python_supports_the_idempotent_producer():
    major, minor, *_ = (int(p) for p in pyproject_pin("kafka-python").split("."))
    assert (major, minor) >= (2, 2)


def test_optional_confluent_kafka_is_pinned_once_and_installed_for_tests():
    import confluent_kafka

    assert confluent_kafka.__version__ == pyproject_pin("confluent-kafka")
