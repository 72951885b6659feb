"""What the JVM side needs on this machine: Java 17+ and the jar folders `make jars` fills."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from sensorstream.config import default_state_dir
from sensorstream.errors import DependencyError

MIN_JAVA = 17
JAVA_HINT = "install a Java 17+ JDK (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"


def find_java() -> str:
    """The java executable (JAVA_HOME first, then PATH), checked to be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise DependencyError(f"Java not found; {JAVA_HINT}")
    version = java_major_version(candidate)
    if version < MIN_JAVA:
        raise DependencyError(
            f"Java {version} found at {candidate}, but Kafka 4 and Spark 4 need Java {MIN_JAVA}+; {JAVA_HINT}"
        )
    return candidate


def java_major_version(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise DependencyError(f"cannot run {java}: {exc.strerror}; {JAVA_HINT}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise DependencyError(f"cannot tell the version of {java}; {JAVA_HINT}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def jars_folder(kind: str) -> Path:
    """The folder `make jars` fills with one kind of jars: "spark" (the Kafka connector) or "kafka"
    (the broker), under the local state folder (.sensorstream/jars/<kind> in the checkout)."""
    return default_state_dir() / "jars" / kind


def require_jars(folder: Path, what: str, marker: str) -> list[Path]:
    """The jars in `folder`, or a DependencyError naming the make target that fetches them."""
    jars = sorted(Path(folder).glob("*.jar"))
    if not any(marker in jar.name for jar in jars):
        raise DependencyError(
            f"{what} jars not found in {folder} (no {marker}*.jar); fetch them with `make jars` "
            "(Maven resolves jobs/jvm/pom.xml)"
        )
    return jars
