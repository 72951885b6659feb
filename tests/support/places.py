"""Where things are, and the versions pinned in one place each (pom.xml for the JVM,
pyproject.toml for Python), read rather than typed into tests."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from sensorstream.config import REPO_ROOT
from sensorstream.jvm import jars_folder

ROOT = REPO_ROOT or Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sensorstream"
K8S = ROOT / "k8s"
#: The jars `make jars` fetches: the Spark Kafka connector and the Kafka broker.
SPARK_JARS = jars_folder("spark")
KAFKA_JARS = jars_folder("kafka")

_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def pom_property(name: str) -> str:
    """A <properties> value of jobs/jvm/pom.xml: the JVM pins (spark.version, kafka.version...)."""
    return ET.parse(ROOT / "jobs" / "jvm" / "pom.xml").getroot().find(f"m:properties/m:{name}", _POM_NS).text


def pyproject_pin(package: str) -> str:
    """The one version pyproject.toml pins a package to (fails when it pins it several ways)."""
    text = (ROOT / "pyproject.toml").read_text()
    pins = set(re.findall(rf'"{re.escape(package)}==([^"]+)"', text))
    assert len(pins) == 1, f"{package} is pinned {len(pins)} ways in pyproject.toml: {pins}"
    return pins.pop()
