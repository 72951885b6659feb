"""The producer against Kafka's own: repeatable figures, printed, never asserted.

    .venv/bin/python tests/bench/bench_produce.py [--records 500000] [--repeat 3]

Starts its own local broker (free port, temporary folder), then, in turn for each repeat, each on
a fresh topic of 3 partitions:

    floor    org.apache.kafka.tools.ProducerPerformance (from the broker jars): --num-records N,
             records of the mean size of ours (key + value), no throttle, acks=all, idempotent
    project  what `sensorstream produce --rate 0` runs: produce() with the default settings (its
             default processes) and a Simulator of the default sensor count, N readings

For each: readings/s (the floor's from its own summary line, ours from the acknowledged count
over the wall time, process start included) and CPU seconds of this process tree (Python, its
producer processes, the java tool, the broker); then the medians and ours/floor. The machine is
shared, so only the ratio of the same run means much.

`measure_produce(bootstrap, records, repeat)` is the same measurement for another harness.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_cpu import tree_cpu_seconds  # noqa: E402
from sensorstream.config import load_settings  # noqa: E402
from sensorstream.jvm import find_java, require_jars  # noqa: E402
from sensorstream.local.broker import LocalKafka, free_port  # noqa: E402
from sensorstream.local.topics import TopicSpec, ensure_topics  # noqa: E402
from sensorstream.producer import produce, worker_count  # noqa: E402
from sensorstream.simulator import Simulator  # noqa: E402

KAFKA_JARS = ROOT / ".sensorstream" / "jars" / "kafka"
_SUMMARY = re.compile(r"(\d+) records sent, ([\d.]+) records/sec")


def record_size(sensors: int, sample: int = 20_000) -> int:
    """The mean size of our records on the wire (key + value bytes), for the floor's --record-size."""
    sim = Simulator(sensors, seed=1)
    return round(sum(len(r.key) + len(r.value) for r in (sim.next_record() for _ in range(sample))) / sample)


def run_floor(bootstrap: str, topic: str, records: int, size: int) -> float:
    """Kafka's ProducerPerformance; returns its records/s."""
    classpath = os.pathsep.join(str(j) for j in require_jars(KAFKA_JARS, "Kafka tools", "kafka-tools-"))
    out = subprocess.run(
        [find_java(), "-Xmx512m", "-cp", classpath, "org.apache.kafka.tools.ProducerPerformance",
         "--topic", topic, "--num-records", str(records), "--record-size", str(size), "--throughput", "-1",
         "--command-property", f"bootstrap.servers={bootstrap}", "acks=all", "enable.idempotence=true"],
        capture_output=True, text=True, timeout=600)
    summaries = _SUMMARY.findall(out.stdout)
    if out.returncode != 0 or not summaries or int(summaries[-1][0]) != records:
        raise RuntimeError(f"ProducerPerformance failed ({out.returncode}): {(out.stderr or out.stdout)[-500:]}")
    return float(summaries[-1][1])


def run_project(settings, records: int) -> float:
    """`sensorstream produce --rate 0 --count N`'s code path; returns acknowledged readings/s."""
    stats = produce(settings, Simulator(settings.sensors, settings.seed), count=records, rate=0)
    if stats.acked != records:
        raise RuntimeError(f"produce lost readings: {stats.summary()}")
    return stats.rate


def measure_produce(bootstrap: str, records: int = 500_000, repeat: int = 3, say=lambda _: None) -> dict:
    """ProducerPerformance vs `sensorstream produce --rate 0`, alternating, `repeat` times each.

    Returns {"records", "record_size", "workers", "project", "floor", "ratio", "project_cpu_s",
    "floor_cpu_s", "runs"}: project and floor are median records/s, ratio = project / floor, the
    CPU figures median CPU seconds of this process tree (broker included), runs every single run.
    """
    settings = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "rate": "0",
                                                    "count": str(records)})
    size = record_size(settings.sensors)
    runs: dict[str, list[tuple[float, float]]] = {"floor": [], "project": []}
    for run in range(repeat):
        for name in ("floor", "project"):
            topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, [TopicSpec(topic, 3)])
            cpu = tree_cpu_seconds()
            if name == "floor":
                rate = run_floor(bootstrap, topic, records, size)
            else:
                rate = run_project(settings.replace(input_topic=topic), records)
            runs[name].append((rate, tree_cpu_seconds() - cpu))
            say(f"  run {run + 1}: {name:<7} {rate:>10,.0f} records/s, {runs[name][-1][1]:6.1f} CPU s")
    project = statistics.median(r for r, _ in runs["project"])
    floor = statistics.median(r for r, _ in runs["floor"])
    return {
        "records": records,
        "record_size": size,
        "workers": worker_count(settings.producer_workers, 0, settings.sensors, records),
        "project": project,
        "floor": floor,
        "ratio": project / floor,
        "project_cpu_s": statistics.median(c for _, c in runs["project"]),
        "floor_cpu_s": statistics.median(c for _, c in runs["floor"]),
        "runs": {name: [{"records_per_s": r, "cpu_s": c} for r, c in values] for name, values in runs.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sensorstream-bench-"))
    with LocalKafka(tmp, port=free_port(), jars_dir=KAFKA_JARS).running() as bootstrap:
        started = time.perf_counter()
        result = measure_produce(bootstrap, args.records, args.repeat,
                                 say=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"\nsensorstream produce --rate 0 vs ProducerPerformance: median of {args.repeat} runs, "
          f"{args.records:,} records of {result['record_size']} bytes, acks=all, idempotent, "
          f"{result['workers']} producer process(es), {os.cpu_count()} cores ({time.perf_counter() - started:.0f} s)")
    print(f"{'producer':<28} {'records/s':>11} {'CPU s':>8} {'CPU µs/record':>14}")
    for name, label in (("floor", "ProducerPerformance (Java)"), ("project", "sensorstream produce")):
        cpu = result[f"{name}_cpu_s"]
        print(f"{label:<28} {result[name]:>11,.0f} {cpu:>8.1f} {cpu / args.records * 1e6:>14.1f}")
    print(f"sensorstream produce = {result['ratio']:.2f}x ProducerPerformance's throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
