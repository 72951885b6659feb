"""Seeded sensor model: believable readings, and (on request) malformed or late records.

Each sensor has its own baseline, a daily temperature cycle (humidity moves against it), Gaussian
noise, a slow random-walk drift, and occasional faults:
    spike   one reading far off the baseline (still physically possible)
    stuck   the sensor repeats its last values for a few readings
    dropout a reading is skipped: its sequence number never arrives

Each record says which of the first two it is (`Record.fault`: the spike itself, each repeated
reading of a stuck sensor), so a detector can be scored against the simulator's own faults; the
producer can carry that as a record header (`FAULT_HEADER`, --ground-truth headers) without
changing a reading's bytes.

The same seed, sensor count and clock give the same records. No Kafka here: the producer sends
what `Simulator.next_record()` returns.

A record costs a few microseconds (the producer's load test needs tens of thousands a second):
the JSON is written by one format string instead of dataclass-to-dict-to-json, the timestamp's
text and the daily cycle are computed once per clock second, and event ids are formatted from the
seeded generator's bits directly. The bytes are the same as `json.dumps` of `Reading.to_json()`
with compact separators (a test holds the two together).

`Simulator.split(n)` deals the sensors out to n simulators (sensor i to part (i - 1) % n), for
producer processes that each own a disjoint set of sensors.
"""

from __future__ import annotations

import json
import math
import pickle
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from json.encoder import encode_basestring_ascii as _json_string
from typing import NamedTuple

from sensorstream.readings import METRICS, RANGES

FAULT_SPIKE = 0.004
FAULT_STUCK = 0.003
FAULT_DROPOUT = 0.005
MALFORMED_KINDS = ("broken_json", "wrong_type", "missing_field", "out_of_range")
#: What the simulator can do to a valid reading, as `Record.fault` names it.
FAULT_KINDS = ("spike", "stuck")
#: The Kafka record header naming a faulty reading's fault (its value: a FAULT_KINDS entry, UTF-8).
FAULT_HEADER = "sensorstream-fault"

_TWO_PI = 2 * math.pi
#: The physical ranges the values are clamped to, so a simulated reading is always valid.
_T_LOW, _T_HIGH = RANGES["temperature"]
_H_LOW, _H_HIGH = RANGES["humidity"]
_P_LOW, _P_HIGH = RANGES["pressure"]
_SECONDS_PER_DAY = 86400
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits of a UUID
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


class Reading(NamedTuple):
    """One valid reading. A named tuple: built once per record, so it must be cheap."""

    sensor_id: str
    timestamp: datetime
    temperature: float
    humidity: float
    pressure: float
    seq: int
    event_id: str

    def to_json(self) -> dict:
        record = self._asdict()
        record["timestamp"] = self.timestamp.isoformat(timespec="microseconds")
        return record


class Record(NamedTuple):
    """What goes on the wire: key, value bytes, and what the simulator meant it to be."""

    key: str
    value: bytes
    kind: str  # "reading", "late" or one of MALFORMED_KINDS
    reading: Reading | None = None
    fault: str | None = None  # a FAULT_KINDS entry for a reading the simulator made faulty, else None


class _Sensor:
    __slots__ = (
        "amplitude",
        "base_humidity",
        "base_pressure",
        "base_temperature",
        "drift",
        "json_prefix",
        "last",
        "phase",
        "sensor_id",
        "seq",
        "stuck_left",
    )

    def __init__(
        self,
        sensor_id: str,
        base_temperature: float,
        base_humidity: float,
        base_pressure: float,
        amplitude: float,
        phase: float,
    ):
        self.sensor_id = sensor_id
        self.json_prefix = '{"sensor_id":' + _json_string(sensor_id) + ',"timestamp":"'
        self.base_temperature = base_temperature
        self.base_humidity = base_humidity
        self.base_pressure = base_pressure
        self.amplitude = amplitude
        self.phase = phase
        self.drift = 0.0
        self.seq = 0
        self.stuck_left = 0
        self.last: tuple[float, float, float] | None = None


def utc_now() -> datetime:
    """The default clock: now, UTC (a module function, so a Simulator can go to another process)."""
    return datetime.now(timezone.utc)


def _number(value: float) -> str:
    """A JSON number exactly as json.dumps writes it."""
    return repr(value) if math.isfinite(value) else json.dumps(value)


def _json(
    prefix: str, stamp: str, temperature: float, humidity: float, pressure: float, seq: int, event_id: str
) -> bytes:
    """The one wire format of a reading: compact JSON, fields in Reading's order."""
    return (
        f'{prefix}{stamp}","temperature":{_number(temperature)},"humidity":{_number(humidity)},'
        f'"pressure":{_number(pressure)},"seq":{seq},"event_id":{_json_string(event_id)}}}'
    ).encode()


class Simulator:
    """Readings from `sensors` sensors in turn (sensor_1, sensor_2, ...).

    clock: returns the event time of the next reading (default: now, UTC). Tests pass a simulated
    clock so that readings span several windows.
    """

    def __init__(
        self,
        sensors: int = 10,
        seed: int | None = None,
        clock: Callable[[], datetime] | None = None,
        bad_ratio: float = 0.0,
        late_ratio: float = 0.0,
        max_lateness: timedelta = timedelta(minutes=15),
    ):
        if sensors < 1:
            raise ValueError("sensors must be 1 or more")
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = clock or utc_now
        self.bad_ratio = bad_ratio
        self.late_ratio = late_ratio
        self.max_lateness = max_lateness
        self.sensor_count = sensors
        self._turn = 0
        self.sensors = [
            _Sensor(
                sensor_id=f"sensor_{i}",
                base_temperature=self.rng.uniform(16.0, 28.0),
                base_humidity=self.rng.uniform(35.0, 70.0),
                base_pressure=self.rng.uniform(1000.0, 1025.0),
                amplitude=self.rng.uniform(2.0, 6.0),
                phase=self.rng.uniform(0, _TWO_PI),
            )
            for i in range(1, sensors + 1)
        ]
        self._second: tuple | None = None  # the clock second (and zone) the values below belong to
        self._stamp_prefix = ""
        self._day_angle = 0.0
        self._fault: str | None = None  # what _values did to the last reading

    @property
    def portable(self) -> bool:
        """Whether this simulator's parts can go to other processes (its clock pickles)."""
        try:
            pickle.dumps(self.clock)
        except (pickle.PicklingError, AttributeError, TypeError):
            return False
        return True

    def split(self, parts: int) -> list[Simulator]:
        """`parts` simulators with the same model, each owning a disjoint share of the sensors
        (sensor i goes to part (i - 1) % parts), each with its own generator derived from the
        seed: the same seed and number of parts give the same records. One part is a fresh copy."""
        parts = max(1, min(parts, self.sensor_count))
        result = []
        for index in range(parts):
            part = Simulator(
                self.sensor_count, self.seed, self.clock, self.bad_ratio, self.late_ratio, self.max_lateness
            )
            part.sensors = part.sensors[index::parts]
            if parts > 1:
                part.rng = random.Random(None if self.seed is None else f"{self.seed}/{index}/{parts}")
            result.append(part)
        return result

    def _uuid(self) -> str:
        value = self.rng.getrandbits(128) & _UUID_CLEAR | _UUID_V4
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _values(self, sensor: _Sensor, now: datetime) -> tuple[float, float, float]:
        """Advance one sensor by one reading: seq, drift, faults; returns its three values."""
        rng = self.rng
        self._fault = None
        sensor.seq += 1
        if rng.random() < FAULT_DROPOUT:
            sensor.seq += 1  # the reading with the previous seq was lost on the way
        sensor.drift += rng.gauss(0, 0.02)
        if sensor.stuck_left > 0 and sensor.last:
            sensor.stuck_left -= 1
            self._fault = "stuck"
            return sensor.last
        cycle = math.sin(self._day_angle + sensor.phase)
        temperature = sensor.base_temperature + sensor.amplitude * cycle + sensor.drift + rng.gauss(0, 0.3)
        humidity = sensor.base_humidity - 2.5 * sensor.amplitude * cycle + rng.gauss(0, 1.0)
        pressure = sensor.base_pressure + 0.5 * sensor.drift + rng.gauss(0, 0.4)
        fault = rng.random()
        if fault < FAULT_SPIKE:
            temperature += rng.choice((-1, 1)) * rng.uniform(12, 25)
            self._fault = "spike"
        elif fault < FAULT_SPIKE + FAULT_STUCK:
            sensor.stuck_left = rng.randint(3, 8)
        values = (
            round(max(_T_LOW, min(_T_HIGH, temperature)), 2),
            round(max(_H_LOW, min(_H_HIGH, humidity)), 2),
            round(max(_P_LOW, min(_P_HIGH, pressure)), 2),
        )
        sensor.last = values
        return values

    def _tick(self) -> tuple[_Sensor, datetime]:
        """The next sensor in turn and the clock's time; refreshes the per-second caches."""
        sensor = self.sensors[self._turn]
        self._turn = (self._turn + 1) % len(self.sensors)
        now = self.clock()
        second = (now.replace(microsecond=0), now.tzinfo)
        if second != self._second:
            self._second = second
            self._day_angle = _TWO_PI * (now.hour * 3600 + now.minute * 60 + now.second) / _SECONDS_PER_DAY
            # "+00:00" is what isoformat() writes for any zero offset; other zones take the slow path
            self._stamp_prefix = now.strftime("%Y-%m-%dT%H:%M:%S.") if now.utcoffset() == timedelta(0) else ""
        return sensor, now

    def next_reading(self) -> Reading:
        """The next valid reading, sensors in turn; dropouts skip a sequence number."""
        sensor, now = self._tick()
        temperature, humidity, pressure = self._values(sensor, now)
        return Reading(sensor.sensor_id, now, temperature, humidity, pressure, sensor.seq, self._uuid())

    def next_record(self) -> Record:
        """The next record to send: usually a reading; late or malformed at the configured ratios."""
        sensor, now = self._tick()
        temperature, humidity, pressure = self._values(sensor, now)
        reading = Reading(sensor.sensor_id, now, temperature, humidity, pressure, sensor.seq, self._uuid())
        roll = self.rng.random()
        if roll < self.bad_ratio:
            kind = self.rng.choice(MALFORMED_KINDS)
            return Record(sensor.sensor_id, malformed(reading, kind, self.rng), kind)
        if roll < self.bad_ratio + self.late_ratio:
            lateness = timedelta(seconds=self.rng.uniform(30, self.max_lateness.total_seconds()))
            reading = reading._replace(timestamp=now - lateness)
            return Record(sensor.sensor_id, encode(reading), "late", reading, self._fault)
        if self._stamp_prefix:
            stamp = f"{self._stamp_prefix}{now.microsecond:06d}+00:00"
        else:
            stamp = now.isoformat(timespec="microseconds")
        value = _json(sensor.json_prefix, stamp, temperature, humidity, pressure, sensor.seq, reading.event_id)
        return Record(sensor.sensor_id, value, "reading", reading, self._fault)


def encode(reading: Reading) -> bytes:
    """The JSON bytes of a reading (the same as json.dumps of to_json() with compact separators)."""
    return _json(
        '{"sensor_id":' + _json_string(reading.sensor_id) + ',"timestamp":"',
        reading.timestamp.isoformat(timespec="microseconds"),
        reading.temperature,
        reading.humidity,
        reading.pressure,
        reading.seq,
        reading.event_id,
    )


def malformed(reading: Reading, kind: str, rng: random.Random) -> bytes:
    """A record the pipeline must reject, derived from a real reading."""
    record = reading.to_json()
    if kind == "broken_json":
        text = json.dumps(record)
        return text[: rng.randint(5, len(text) - 2)].encode()
    if kind == "wrong_type":
        field = rng.choice(METRICS)
        record[field] = rng.choice(("hot", "n/a", "", "21,5"))
    elif kind == "missing_field":
        del record[rng.choice(("timestamp", *METRICS, "sensor_id"))]
    elif kind == "out_of_range":
        field, value = rng.choice(
            (("temperature", 250.0), ("humidity", 140.0), ("pressure", 12.0), ("temperature", -120.0))
        )
        record[field] = value
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(record).encode()
