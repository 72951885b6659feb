"""Seeded sensor model: believable readings, and (on request) malformed or late records.

Each sensor has its own baseline, a daily temperature cycle (humidity moves against it), Gaussian
noise, a slow random-walk drift, and occasional faults:
    spike   one reading far off the baseline (still physically possible)
    stuck   the sensor repeats its last values for a few readings
    dropout a reading is skipped: its sequence number never arrives

The same seed, sensor count and clock give the same records. No Kafka here: the producer sends
what `Simulator.next_record()` returns.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

FAULT_SPIKE = 0.004
FAULT_STUCK = 0.003
FAULT_DROPOUT = 0.005
MALFORMED_KINDS = ("broken_json", "wrong_type", "missing_field", "out_of_range")


@dataclass(frozen=True)
class Reading:
    sensor_id: str
    timestamp: datetime
    temperature: float
    humidity: float
    pressure: float
    seq: int
    event_id: str

    def to_json(self) -> dict:
        record = asdict(self)
        record["timestamp"] = self.timestamp.isoformat(timespec="microseconds")
        return record


@dataclass(frozen=True)
class Record:
    """What goes on the wire: key, value bytes, and what the simulator meant it to be."""

    key: str
    value: bytes
    kind: str  # "reading", "late" or one of MALFORMED_KINDS
    reading: Reading | None = None


@dataclass
class _Sensor:
    sensor_id: str
    base_temperature: float
    base_humidity: float
    base_pressure: float
    amplitude: float
    phase: float
    drift: float = 0.0
    seq: int = 0
    stuck_left: int = 0
    last: tuple[float, float, float] | None = None


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class Simulator:
    """Readings from `sensors` sensors in turn (sensor_1, sensor_2, ...).

    clock: returns the event time of the next reading (default: now, UTC). Tests pass a simulated
    clock so that readings span several windows.
    """

    def __init__(self, sensors: int = 10, seed: int | None = None,
                 clock: Callable[[], datetime] | None = None,
                 bad_ratio: float = 0.0, late_ratio: float = 0.0,
                 max_lateness: timedelta = timedelta(minutes=15)):
        if sensors < 1:
            raise ValueError("sensors must be 1 or more")
        self.rng = random.Random(seed)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.bad_ratio = bad_ratio
        self.late_ratio = late_ratio
        self.max_lateness = max_lateness
        self._turn = 0
        self.sensors = [
            _Sensor(
                sensor_id=f"sensor_{i}",
                base_temperature=self.rng.uniform(16.0, 28.0),
                base_humidity=self.rng.uniform(35.0, 70.0),
                base_pressure=self.rng.uniform(1000.0, 1025.0),
                amplitude=self.rng.uniform(2.0, 6.0),
                phase=self.rng.uniform(0, 2 * math.pi),
            )
            for i in range(1, sensors + 1)
        ]

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def next_reading(self) -> Reading:
        """The next valid reading, sensors in turn; dropouts skip a sequence number."""
        sensor = self.sensors[self._turn % len(self.sensors)]
        self._turn += 1
        now = self.clock()
        sensor.seq += 1
        if self.rng.random() < FAULT_DROPOUT:
            sensor.seq += 1  # the reading with the previous seq was lost on the way
        sensor.drift += self.rng.gauss(0, 0.02)
        if sensor.stuck_left > 0 and sensor.last:
            sensor.stuck_left -= 1
            temperature, humidity, pressure = sensor.last
        else:
            day = 2 * math.pi * (now.hour * 3600 + now.minute * 60 + now.second) / 86400
            cycle = math.sin(day + sensor.phase)
            temperature = sensor.base_temperature + sensor.amplitude * cycle + sensor.drift + self.rng.gauss(0, 0.3)
            humidity = sensor.base_humidity - 2.5 * sensor.amplitude * cycle + self.rng.gauss(0, 1.0)
            pressure = sensor.base_pressure + 0.5 * sensor.drift + self.rng.gauss(0, 0.4)
            fault = self.rng.random()
            if fault < FAULT_SPIKE:
                temperature += self.rng.choice((-1, 1)) * self.rng.uniform(12, 25)
            elif fault < FAULT_SPIKE + FAULT_STUCK:
                sensor.stuck_left = self.rng.randint(3, 8)
            temperature = round(_clamp(temperature, -40.0, 85.0), 2)
            humidity = round(_clamp(humidity, 0.0, 100.0), 2)
            pressure = round(_clamp(pressure, 850.0, 1085.0), 2)
            sensor.last = (temperature, humidity, pressure)
        return Reading(sensor.sensor_id, now, temperature, humidity, pressure, sensor.seq, self._uuid())

    def next_record(self) -> Record:
        """The next record to send: usually a reading; late or malformed at the configured ratios."""
        reading = self.next_reading()
        roll = self.rng.random()
        if roll < self.bad_ratio:
            kind = self.rng.choice(MALFORMED_KINDS)
            return Record(reading.sensor_id, malformed(reading, kind, self.rng), kind)
        if roll < self.bad_ratio + self.late_ratio:
            lateness = timedelta(seconds=self.rng.uniform(30, self.max_lateness.total_seconds()))
            reading = Reading(**{**asdict(reading), "timestamp": reading.timestamp - lateness})
            return Record(reading.sensor_id, encode(reading), "late", reading)
        return Record(reading.sensor_id, encode(reading), "reading", reading)


def encode(reading: Reading) -> bytes:
    return json.dumps(reading.to_json(), separators=(",", ":")).encode()


def malformed(reading: Reading, kind: str, rng: random.Random) -> bytes:
    """A record the pipeline must reject, derived from a real reading."""
    record = reading.to_json()
    if kind == "broken_json":
        text = json.dumps(record)
        return text[: rng.randint(5, len(text) - 2)].encode()
    if kind == "wrong_type":
        field = rng.choice(("temperature", "humidity", "pressure"))
        record[field] = rng.choice(("hot", "n/a", "", "21,5"))
    elif kind == "missing_field":
        del record[rng.choice(("timestamp", "temperature", "humidity", "pressure", "sensor_id"))]
    elif kind == "out_of_range":
        field, value = rng.choice((("temperature", 250.0), ("humidity", 140.0), ("pressure", 12.0),
                                   ("temperature", -120.0)))
        record[field] = value
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(record).encode()
