"""The detector scored against the simulator's own faults (`Record.fault`): one definition for
tests/test_detect.py and `make bench`'s detect stage.

A run is the simulator's readings from 10 sensors, a fixed seed, event times 0.1 s apart (each
sensor every second), with one sensor stopped from 40 % to 60 % of the run. As they are made, the
faulty ones are remembered by event id: each spike, and each run of a stuck sensor's repeated
readings. The score reads the input topic back to learn each reading's source (topic|partition|
offset, what an alert names) and compares the alerts with the truth.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

from kafka import KafkaProducer

from sensorstream.simulator import Record, Simulator
from support.broker import consume_all
from support.readings import stepping_clock

SENSORS = 10
SEED = 7
STOPPED = "sensor_3"


class FaultyRun:
    """`readings` simulator readings (fewer: the stopped sensor's), their faults remembered."""

    def __init__(self, readings: int, seed: int = SEED, stopped: str = STOPPED) -> None:
        self.readings, self.seed, self.stopped = readings, seed, stopped
        self.spikes: set[str] = set()  # event ids
        self.stuck_runs: list[set[str]] = []  # event ids of each run of one sensor's stuck readings
        self.sent = 0

    def records(self) -> Iterator[Record]:
        simulator = Simulator(sensors=SENSORS, seed=self.seed, clock=stepping_clock(step=timedelta(seconds=0.1)))
        quiet = range(2 * self.readings // 5, 3 * self.readings // 5)
        open_runs: dict[str, set[str]] = {}
        for index in range(self.readings):
            record = simulator.next_record()
            if record.key == self.stopped and index in quiet:
                continue
            if record.fault == "spike":
                self.spikes.add(record.reading.event_id)
            if record.fault == "stuck":
                open_runs.setdefault(record.key, set()).add(record.reading.event_id)
            elif record.key in open_runs and record.reading is not None:
                self.stuck_runs.append(open_runs.pop(record.key))
            self.sent += 1
            yield record
        self.stuck_runs += open_runs.values()

    def send(self, bootstrap: str, topic: str) -> None:
        """Every reading to `topic`, keyed by sensor, as the producer sends them."""
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
        try:
            for record in self.records():
                producer.send(topic, key=record.key.encode(), value=record.value)
            producer.flush()
        finally:
            producer.close()

    def score(self, settings, alerts: list[tuple[str, dict]]) -> dict:
        """Precision and recall of spike and stuck alerts, the silent/back alerts by sensor, and the
        keys used twice. `alerts`: (key, alert) as read from the alerts topic."""
        faulty = self.spikes.union(*self.stuck_runs)
        source_of: dict[str, str] = {}  # event id -> topic|partition|offset, for the faulty readings
        for message in consume_all(settings, settings.input_topic):
            event = json.loads(message.value)["event_id"]
            if event in faulty:
                source_of[event] = f"{message.topic}|{message.partition}|{message.offset}"
        spikes = {source_of[e] for e in self.spikes}
        runs = [{source_of[e] for e in run} for run in self.stuck_runs]
        stuck = set().union(*runs)
        raised = {kind: [a["source"] for _, a in alerts if a["kind"] == kind] for kind in ("spike", "stuck")}
        keys = Counter(key for key, _ in alerts)

        def ratio(part: int, whole: int) -> float | None:
            return part / whole if whole else None

        return {
            "readings": self.sent,
            "spike": {
                "faults": len(spikes),
                "alerts": len(raised["spike"]),
                "precision": ratio(sum(s in spikes for s in raised["spike"]), len(raised["spike"])),
                "recall": ratio(len(spikes & set(raised["spike"])), len(spikes)),
            },
            "stuck": {
                "faults": len(runs),
                "alerts": len(raised["stuck"]),
                "precision": ratio(sum(s in stuck for s in raised["stuck"]), len(raised["stuck"])),
                "recall": ratio(sum(bool(run & set(raised["stuck"])) for run in runs), len(runs)),
            },
            "silence": dict(
                Counter(f"{a['sensor_id']} {a['kind']}" for _, a in alerts if a["kind"] in ("silent", "back"))
            ),
            "repeated_keys": sum(n - 1 for n in keys.values()),
        }
