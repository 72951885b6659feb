"""The detector end to end (STREAM_DETECT=on): real broker, real Spark, scored against the
simulator's own faults (`Record.fault`). Needs the detector's jar: `make detector`."""

import json

import pytest

from sensorstream import streaming
from support.broker import consume_all, isolated_settings
from support.detection import STOPPED, FaultyRun

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

READINGS = 30_000  # `make bench` scores 1,000,000


@pytest.fixture(scope="module")
def detected(kafka_bootstrap, spark, tmp_path_factory):
    settings = isolated_settings(
        kafka_bootstrap, tmp_path_factory.mktemp("detect"), sinks="kafka", detect="on", max_offsets_per_trigger="5000"
    )
    run = FaultyRun(READINGS)
    run.send(kafka_bootstrap, settings.input_topic)
    said: list[str] = []
    batches: list[streaming.BatchProgress] = []
    streaming.run(spark, settings, available_now=True, say=said.append, on_progress=batches.append)
    alerts = [(m.key.decode(), json.loads(m.value)) for m in consume_all(settings, settings.alerts_topic)]
    return run.score(settings, alerts), alerts, said, batches


def test_spikes_found_and_true(detected):
    score, _alerts, _said, _batches = detected
    assert score["spike"]["faults"] > 50
    assert score["spike"]["precision"] >= 0.95 and score["spike"]["recall"] >= 0.95, score


def test_stuck_sensors_found_and_true(detected):
    """A run of one sensor's stuck readings is found when one of its readings raised the alert."""
    score, _alerts, _said, _batches = detected
    assert score["stuck"]["faults"] > 30
    assert score["stuck"]["precision"] >= 0.95 and score["stuck"]["recall"] >= 0.95, score


def test_the_stopped_sensor_is_silent_once_and_back_once(detected):
    score, _alerts, _said, _batches = detected
    assert score["silence"] == {f"{STOPPED} silent": 1, f"{STOPPED} back": 1}


def test_the_silence_is_told_within_t_and_two_triggers(detected):
    """The stopped sensor's last reading is about 40 % into the run; the stream's event time passes
        it by T (STREAM_SILENT_AFTER, 2 minutes: 1,200 readings of 0.1 s) in the micro-batch that reads
        that far (5,000 readings a batch): the alert comes in that batch or the next (the watermark moves
    at a batch's end), within T and two triggers."""
    _score, _alerts, _said, batches = detected
    [silent_batch] = [b.batch_id for b in batches if b.alerts_by_kind.get("silent")]
    reached = (2 * READINGS // 5 + 1_200) // 5_000  # the batch carrying the last reading + T
    assert reached <= silent_batch <= reached + 1, (silent_batch, reached)


def test_each_alert_has_its_own_key_and_a_log_line(detected):
    score, alerts, said, _batches = detected
    assert score["repeated_keys"] == 0
    lines = [line for line in said if line.startswith("alert: ")]
    assert lines and len(lines) <= len(alerts)


def test_without_the_jar_one_line_names_make_detector(tmp_path, monkeypatch):
    from sensorstream.config import load_settings
    from sensorstream.errors import DependencyError
    from sensorstream.spark import require_detector

    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "spark"))
    settings = load_settings(environ={}, overrides={"detect": "on", "jars_dir": str(tmp_path / "jars")})
    with pytest.raises(DependencyError, match=r"make detector") as caught:
        require_detector(settings)
    assert "\n" not in str(caught.value)
