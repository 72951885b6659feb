"""The `sensorstream` command run as a user runs it: a subprocess with its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .places import SPARK_JARS


def isolated_env(state_dir: Path) -> dict[str, str]:
    """An environment for running the CLI as a subprocess, isolated from the developer's settings."""
    keep = ("PATH", "HOME", "JAVA_HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")  # PYTHONPATH: the code under test
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["SENSORSTREAM_STATE_DIR"] = str(state_dir)
    env["SENSORSTREAM_JARS_DIR"] = str(SPARK_JARS)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sensorstream", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def topic_env(cli_env: dict[str, str], settings) -> dict[str, str]:
    """The CLI's environment pointed at an isolated settings' broker, topics and folders."""
    return {
        **cli_env,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "KAFKA_INPUT_TOPIC": settings.input_topic,
        "KAFKA_OUTPUT_TOPIC": settings.output_topic,
        "KAFKA_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "KAFKA_ALERTS_TOPIC": settings.alerts_topic,
        "CHECKPOINT_LOCATION": str(settings.checkpoint_location),
        "REPORT_DIR": str(settings.report_dir),
    }


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, code: int = 1) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sensorstream: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
