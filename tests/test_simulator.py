import json
from datetime import timedelta

from helpers import T0, stepping_clock
from sensorstream.schema import RANGES
from sensorstream.simulator import MALFORMED_KINDS, Simulator


def records(n, **kwargs):
    sim = Simulator(clock=stepping_clock(), **kwargs)
    return [sim.next_record() for _ in range(n)]


def test_same_seed_same_records():
    a = records(500, sensors=10, seed=42, bad_ratio=0.1, late_ratio=0.1)
    b = records(500, sensors=10, seed=42, bad_ratio=0.1, late_ratio=0.1)
    assert a == b
    assert records(50, seed=1) != records(50, seed=2)


def test_readings_are_complete_and_physically_plausible():
    recs = records(5000, sensors=10, seed=3)
    assert {r.kind for r in recs} == {"reading"}
    sensors = {r.key for r in recs}
    assert sensors == {f"sensor_{i}" for i in range(1, 11)}
    for r in recs:
        body = json.loads(r.value)
        assert set(body) == {"sensor_id", "timestamp", "temperature", "humidity", "pressure", "seq", "event_id"}
        assert body["sensor_id"] == r.key
        assert body["timestamp"].endswith("+00:00")
        for metric, (low, high) in RANGES.items():
            assert low <= body[metric] <= high, (metric, body[metric])
    assert len({json.loads(r.value)["event_id"] for r in recs}) == len(recs)


def test_sequence_numbers_rise_per_sensor_with_occasional_dropouts():
    recs = records(5000, sensors=5, seed=9)
    last = {}
    gaps = 0
    for r in recs:
        seq = json.loads(r.value)["seq"]
        if r.key in last:
            assert seq > last[r.key]
            gaps += seq - last[r.key] - 1
        last[r.key] = seq
    assert gaps > 0  # the dropout fault happens


def test_model_has_a_daily_cycle_noise_and_faults():
    sim = Simulator(sensors=1, seed=5, clock=stepping_clock(step=timedelta(minutes=10)))
    temps = [sim.next_reading().temperature for _ in range(144)]  # one day
    assert max(temps) - min(temps) > 3  # the daily cycle
    assert len(set(temps)) > 100  # noise, not a constant


def test_malformed_and_late_ratios():
    recs = records(4000, sensors=10, seed=11, bad_ratio=0.1, late_ratio=0.1)
    kinds = [r.kind for r in recs]
    bad = [k for k in kinds if k in MALFORMED_KINDS]
    assert set(bad) == set(MALFORMED_KINDS)
    assert 300 < len(bad) < 500
    assert 300 < kinds.count("late") < 500
    broken = [r for r in recs if r.kind == "broken_json"]
    for r in broken:
        try:
            json.loads(r.value)
        except ValueError:
            continue
        raise AssertionError(f"broken_json record parses: {r.value!r}")


def test_late_readings_are_behind_the_clock():
    clock = stepping_clock()
    sim = Simulator(sensors=2, seed=4, clock=clock, late_ratio=1.0)
    rec = sim.next_record()
    assert rec.kind == "late"
    assert rec.reading.timestamp < T0 - timedelta(seconds=29)
