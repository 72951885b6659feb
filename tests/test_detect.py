"""The detector end to end (STREAM_DETECT=on): real broker, real Spark, scored against the
simulator's own faults (`Record.fault`). Needs the detector's jar: `make detector`."""

import json
from collections import Counter
from datetime import timedelta

import pytest
from kafka import KafkaProducer

from sensorstream import streaming
from sensorstream.simulator import Simulator
from support.broker import consume_all, isolated_settings
from support.readings import stepping_clock

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

READINGS = 30_000
STOPPED = "sensor_3"  # sends nothing from 40 % to 60 % of the run (about 10 minutes of event time)


@pytest.fixture(scope="module")
def detected(kafka_bootstrap, spark, tmp_path_factory):
    settings = isolated_settings(
        kafka_bootstrap, tmp_path_factory.mktemp("detect"), sinks="kafka", detect="on", max_offsets_per_trigger="5000"
    )
    sim = Simulator(sensors=10, seed=7, clock=stepping_clock(step=timedelta(seconds=0.1)))
    records = [sim.next_record() for _ in range(READINGS)]
    sent = [r for i, r in enumerate(records) if not (r.key == STOPPED and 2 * READINGS // 5 <= i < 3 * READINGS // 5)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for r in sent:
        producer.send(settings.input_topic, key=r.key.encode(), value=r.value)
    producer.flush()
    producer.close()
    said: list[str] = []
    streaming.run(spark, settings, available_now=True, say=said.append)
    fault_of = {r.reading.event_id: r.fault for r in sent}
    events = [
        (f"{settings.input_topic}|{m.partition}|{m.offset}", json.loads(m.value)["event_id"])
        for m in consume_all(settings, settings.input_topic)
    ]
    source_fault = {source: fault_of[event] for source, event in events}
    alerts = [(m.key.decode(), json.loads(m.value)) for m in consume_all(settings, settings.alerts_topic)]
    return sent, source_fault, alerts, said, events


def _events(detected):
    return detected[4]


def _precision(alerts, source_fault, kind):
    raised = [a for _, a in alerts if a["kind"] == kind]
    return sum(source_fault[a["source"]] == kind for a in raised) / len(raised)


def test_spikes_found_and_true(detected):
    _sent, source_fault, alerts, _said, _ev = detected
    spikes = {a["source"] for _, a in alerts if a["kind"] == "spike"}
    truth = {s for s, f in source_fault.items() if f == "spike"}
    assert len(truth) > 50
    assert _precision(alerts, source_fault, "spike") >= 0.95
    assert len(spikes & truth) / len(truth) >= 0.95


def test_stuck_sensors_found_and_true(detected):
    sent, source_fault, alerts, _said, _e = detected
    assert _precision(alerts, source_fault, "stuck") >= 0.95
    # a run of one sensor's stuck readings is found when one of its readings raised the alert
    raised = {a["source"] for _, a in alerts if a["kind"] == "stuck"}
    source_of = {event: source for source, event in _events(detected)}
    runs: list[set[str]] = []
    open_runs: dict[str, set[str]] = {}
    for r in sent:
        if r.fault == "stuck":
            open_runs.setdefault(r.key, set()).add(source_of[r.reading.event_id])
        elif r.key in open_runs:
            runs.append(open_runs.pop(r.key))
    runs += open_runs.values()
    assert len(runs) > 30
    assert sum(bool(run & raised) for run in runs) / len(runs) >= 0.95


def test_the_stopped_sensor_is_silent_once_and_back_once(detected):
    _sent, _truth, alerts, _said, _e = detected
    said = Counter((a["sensor_id"], a["kind"]) for _, a in alerts if a["kind"] in ("silent", "back"))
    assert said == {(STOPPED, "silent"): 1, (STOPPED, "back"): 1}


def test_each_alert_has_its_own_key_and_a_log_line(detected):
    _sent, _truth, alerts, said, _e = detected
    keys = [k for k, _ in alerts]
    assert len(keys) == len(set(keys))
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
