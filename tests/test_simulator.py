import json
import pickle
import re
from datetime import timedelta, timezone

from sensorstream.readings import FIELDS, METRICS, RANGES
from sensorstream.simulator import MALFORMED_KINDS, Simulator, encode
from support.readings import T0, stepping_clock


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
        assert tuple(body) == FIELDS
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


def test_the_wire_format_is_compact_json_of_the_reading():
    """The fast encoder writes exactly what json.dumps writes for the reading's fields."""
    for rec in records(3000, sensors=7, seed=8, late_ratio=0.2):
        assert rec.value == json.dumps(rec.reading.to_json(), separators=(",", ":")).encode()
        assert rec.value == encode(rec.reading)
    real_clock = Simulator(sensors=3, seed=8)  # the default clock: now, UTC, with microseconds
    for _ in range(200):
        rec = real_clock.next_record()
        body = json.loads(rec.value)
        assert body["timestamp"] == rec.reading.timestamp.isoformat(timespec="microseconds")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", body["timestamp"])
        assert [type(body[f]) for f in (*METRICS, "seq", "event_id")] == [float, float, float, int, str]


def test_other_time_zones_keep_their_offset():
    clock = stepping_clock(start=T0.astimezone(timezone(timedelta(hours=-3))))
    rec = Simulator(sensors=1, seed=1, clock=clock).next_record()
    assert json.loads(rec.value)["timestamp"] == "2026-01-31T05:00:00.000000-03:00"


def test_split_deals_out_disjoint_sensors_deterministically():
    sim = Simulator(sensors=10, seed=12, bad_ratio=0.05)
    parts = sim.split(3)
    owned = [{s.sensor_id for s in part.sensors} for part in parts]
    assert owned == [{f"sensor_{i}" for i in range(1, 11) if (i - 1) % 3 == n} for n in range(3)]
    for part, again in zip(parts, Simulator(sensors=10, seed=12, bad_ratio=0.05).split(3)):
        part.clock, again.clock = stepping_clock(), stepping_clock()
        assert [part.next_record() for _ in range(300)] == [again.next_record() for _ in range(300)]
    assert len(sim.split(50)) == 10  # never more parts than sensors
    # a part is a simulator like any other: per-sensor sequence numbers still rise
    part = Simulator(sensors=4, seed=3, clock=stepping_clock()).split(2)[1]
    seqs = {}
    for _ in range(400):
        rec = part.next_record()
        seq = json.loads(rec.value)["seq"]
        assert seq > seqs.get(rec.key, 0)
        seqs[rec.key] = seq
    assert set(seqs) == {"sensor_2", "sensor_4"}


def test_a_simulator_can_go_to_another_process():
    sim = Simulator(sensors=5, seed=2)
    copy = pickle.loads(pickle.dumps(sim.split(2)[0]))
    assert copy.next_record().key == "sensor_1"


def test_faulty_readings_say_which_fault():
    recs = records(30000, sensors=10, seed=7)
    previous = {}
    faults = {"spike": 0, "stuck": 0}
    for r in recs:
        values = (r.reading.temperature, r.reading.humidity, r.reading.pressure)
        repeated = values == previous.get(r.key)
        # a stuck reading repeats the sensor's last values, and nothing else does
        assert repeated == (r.fault == "stuck"), r
        if r.fault == "spike":
            assert abs(r.reading.temperature - previous[r.key][0]) > 8
        if r.fault:
            faults[r.fault] += 1
        previous[r.key] = values
    assert faults["spike"] > 50 and faults["stuck"] > 100  # FAULT_SPIKE 0.4 %, FAULT_STUCK 0.3 % x 3-8 readings
    assert {r.fault for r in recs} == {None, "spike", "stuck"}


def test_malformed_records_carry_no_fault():
    recs = records(5000, sensors=10, seed=7, bad_ratio=0.2)
    assert all(r.fault is None for r in recs if r.kind in MALFORMED_KINDS)
    assert any(r.fault for r in recs if r.kind == "reading")
