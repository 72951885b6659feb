"""One version per component: the Python pins and the pom's JVM pins agree."""

import re
import xml.etree.ElementTree as ET

from conftest import ROOT

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_property(name: str) -> str:
    root = ET.parse(ROOT / "jobs/jvm/pom.xml").getroot()
    return root.find(f"m:properties/m:{name}", POM_NS).text


def pyproject_pin(package: str) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    pins = set(re.findall(rf'"{re.escape(package)}==([^"]+)"', text))
    assert len(pins) == 1, f"{package} is pinned {len(pins)} ways in pyproject.toml: {pins}"
    return pins.pop()


def test_pyspark_matches_the_connector():
    assert pyproject_pin("pyspark") == pom_property("spark.version") == "4.0.4"


def test_installed_pyspark_is_the_pinned_one():
    import pyspark

    assert pyspark.__version__ == pom_property("spark.version")


def test_local_broker_is_strimzis_default_kafka():
    assert pom_property("kafka.version") == "4.3.1"


def test_kafka_python_supports_the_idempotent_producer():
    major, minor, *_ = (int(p) for p in pyproject_pin("kafka-python").split("."))
    assert (major, minor) >= (2, 2)


def test_optional_confluent_kafka_is_pinned_once_and_installed_for_tests():
    import confluent_kafka

    assert confluent_kafka.__version__ == pyproject_pin("confluent-kafka")
