"""Independent Python reference computations and small builders the tests share."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Iterable

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


KAFKA_DDL = "value binary, topic string, partition int, offset long, timestamp timestamp"


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
    for m in ("temperature", "humidity", "pressure"):
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
