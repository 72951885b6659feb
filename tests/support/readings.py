"""Independent Python references (windows, reports, the validation contract), sample records,
simulated clocks."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sensorstream.readings import METRICS, RANGES
from sensorstream.schema import KAFKA_DDL  # noqa: F401 - re-exported: Kafka's columns, as the parse reads them
from sensorstream.simulator import Simulator

T0 = datetime(2026, 1, 31, 8, 0, tzinfo=timezone.utc)


def stepping_clock(start: datetime = T0, step: timedelta = timedelta(seconds=2)):
    """A simulated clock: each call returns the next event time."""
    state = {"now": start - step}

    def clock() -> datetime:
        state["now"] += step
        return state["now"]

    return clock


def kafka_rows(values: Iterable[bytes | str | None], topic: str = "t") -> list[tuple]:
    """Rows shaped like Spark's Kafka source (value, topic, partition, offset, timestamp)."""
    rows = []
    for offset, value in enumerate(values):
        raw = value.encode() if isinstance(value, str) else value
        rows.append((None if raw is None else bytearray(raw), topic, 0, offset, T0.replace(tzinfo=None)))
    return rows


def reference_windows(readings: Iterable[dict], window: timedelta) -> dict[tuple, dict]:
    """{(window_start, sensor_id): stats} computed in plain Python over reading dicts."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    size = int(window.total_seconds())
    for r in readings:
        ts = r["timestamp"] if isinstance(r["timestamp"], datetime) else datetime.fromisoformat(r["timestamp"])
        epoch = int(ts.timestamp())
        start = datetime.fromtimestamp(epoch - epoch % size, timezone.utc)
        groups[(start, r["sensor_id"])].append(r)
    return {key: {"num_readings": len(rows), **_metric_stats(rows)} for key, rows in groups.items()}


def _metric_stats(rows: list[dict], stddev: bool = False) -> dict:
    stats = {}
    for m in METRICS:
        values = [row[m] for row in rows]
        stats[f"avg_{m}"] = math.fsum(values) / len(values)
        stats[f"min_{m}"] = min(values)
        stats[f"max_{m}"] = max(values)
        if stddev:
            stats[f"stddev_{m}"] = statistics.stdev(values) if len(values) > 1 else None
    return stats


def reference_report(readings: Iterable[dict]) -> dict[str, dict]:
    by_sensor: dict[str, list[dict]] = defaultdict(list)
    for r in readings:
        by_sensor[r["sensor_id"]].append(r)
    result = {}
    for sensor, rows in by_sensor.items():
        stats = {"total_readings": len(rows), **_metric_stats(rows, stddev=True)}
        seqs = [row["seq"] for row in rows]
        stats["missing_seq"] = max(seqs) - min(seqs) + 1 - len(set(seqs))
        result[sensor] = stats
    return result


def assert_stats_equal(actual: dict, expected: dict, tolerance: float = 1e-9) -> None:
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, float):
            assert math.isclose(got, want, rel_tol=tolerance, abs_tol=tolerance), (name, got, want)
        else:
            assert got == want, (name, got, want)


def decode(value: bytes) -> dict:
    return json.loads(value.decode())


# The README's validation contract, in plain Python, independent of Spark: the oracle for schema.py.
_REFERENCE_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reference_reason(raw: bytes | None) -> str | None:
    """The reason the README gives for a record, or None for a valid reading."""
    try:
        record = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)  # a repeated name: the last
    except (AttributeError, ValueError):
        return "invalid JSON"
    if not isinstance(record, dict):
        return "invalid JSON"
    for field in ("sensor_id", "timestamp", *RANGES):
        value = record.get(field)
        if value is None or (field == "sensor_id" and isinstance(value, str) and not value.strip(" \t\r\n")):
            return f"missing field: {field}"
    for field in ("sensor_id", "timestamp"):
        if not isinstance(record[field], str):
            return f"wrong type: {field}"
    for field in RANGES:
        if not _is_number(record[field]):
            return f"wrong type: {field}"
    seq = record.get("seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not -(2**63) <= seq < 2**63):
        return "wrong type: seq"
    stamp = record["timestamp"]
    try:
        if not _REFERENCE_TIMESTAMP.fullmatch(stamp):
            raise ValueError(stamp)
        offset = datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset()
        if offset is not None and abs(offset) > timedelta(hours=18):
            raise ValueError(stamp)
    except ValueError:
        return f"bad timestamp: {stamp}"
    for field, (low, high) in RANGES.items():
        if not low <= record[field] <= high:
            return f"out of range: {field}"
    return None


# Records as a foreign producer might send them.
GOOD = {
    "sensor_id": "sensor_1",
    "timestamp": "2026-01-31T08:00:01.500000+00:00",
    "temperature": 21.5,
    "humidity": 40.0,
    "pressure": 1013.25,
    "seq": 1,
    "event_id": "e1",
}
GOOD_TEXT = json.dumps(GOOD)


def with_(**changes):
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def swap(old, new):
    """GOOD's JSON text with one piece of text replaced (for what json.dumps cannot write)."""
    assert old in GOOD_TEXT
    return GOOD_TEXT.replace(old, new, 1)


#: The issue's table: values a foreign producer sent that the README and the jobs disagreed on.
FOREIGN = [
    ("json line", GOOD_TEXT + "\n", None),
    ("tab before, CRLF after", "\t" + GOOD_TEXT + "\r\n", None),
    ("two objects", GOOD_TEXT + with_(sensor_id="sensor_2"), "invalid JSON"),
    ("single quotes", GOOD_TEXT.replace('"', "'"), "invalid JSON"),
    ("numeric sensor_id", with_(sensor_id=123), "wrong type: sensor_id"),
    ("object sensor_id", with_(sensor_id={"id": "sensor_1"}), "wrong type: sensor_id"),
    ("boolean sensor_id", with_(sensor_id=True), "wrong type: sensor_id"),
    ("array sensor_id", with_(sensor_id=["sensor_1"]), "wrong type: sensor_id"),
    ("time of day only", with_(timestamp="10:15:30"), "bad timestamp: 10:15:30"),
    ("NaN as a string", with_(temperature="NaN"), "wrong type: temperature"),
    ("Infinity as a string", with_(temperature="Infinity"), "wrong type: temperature"),
    ("-INF as a string", with_(temperature="-INF"), "wrong type: temperature"),
    ("empty sensor_id", with_(sensor_id=""), "missing field: sensor_id"),
    ("blank sensor_id", with_(sensor_id="   "), "missing field: sensor_id"),
    ("quotes and a comma in sensor_id", with_(sensor_id='lab "B", rack 2'), None),
]


class RecordingSimulator(Simulator):
    """The simulator, keeping a copy of every record it hands out (what was sent)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def next_record(self):
        record = super().next_record()
        self.sent.append(record)
        return record
