"""The producer against Kafka's own: repeatable figures, printed, never asserted.

    .venv/bin/python tests/bench/bench_produce.py [--records 500000] [--repeat 3]
        [--client kafka-python|confluent-kafka|both] [--workers N]

Starts its own local broker (free port, temporary folder), then, in turn for each repeat, each on
a fresh topic of 3 partitions:

    floor    org.apache.kafka.tools.ProducerPerformance (from the broker jars): --num-records N,
             records of the mean size of ours (key + value), no throttle, acks=all, idempotent
    project  what `sensorstream produce --rate 0 [--client C]` runs, for each client asked for
             (default both: kafka-python, the default client, and confluent-kafka, the `fast`
             extra): produce() with the default settings (its default processes, or --workers)
             and a Simulator of the default sensor count, N readings

For each: readings/s (the floor's from its own summary line, ours from the acknowledged count
over the wall time, process start included) and CPU seconds of this process tree (Python, its
producer processes, the java tool, the broker); then the medians and ours/floor. The machine is
shared, so only the ratio of the same run means much.

`measure_produce(bootstrap, records, repeat, say, client=..., workers=...)` is the same
measurement for another harness.
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
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_cpu import tree_cpu_seconds  # noqa: E402

from sensorstream.config import PRODUCER_CLIENTS, load_settings  # noqa: E402
from sensorstream.jvm import find_java, require_jars  # noqa: E402
from sensorstream.local.broker import LocalKafka  # noqa: E402
from sensorstream.local.ports import free_port  # noqa: E402
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
        [
            find_java(),
            "-Xmx512m",
            "-cp",
            classpath,
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(records),
            "--record-size",
            str(size),
            "--throughput",
            "-1",
            "--command-property",
            f"bootstrap.servers={bootstrap}",
            "acks=all",
            "enable.idempotence=true",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
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


def measure_produce(
    bootstrap: str,
    records: int = 500_000,
    repeat: int = 3,
    say=lambda _: None,
    client: str | Sequence[str] = "kafka-python",
    workers: int | None = None,
) -> dict:
    """ProducerPerformance vs `sensorstream produce --rate 0 --client C`, in turn, `repeat` times each.

    `client` is one client name or several (each measured against the same floor runs); `workers`
    overrides the default producer processes. Returns {"records", "record_size", "client", "workers",
    "project", "floor", "ratio", "project_cpu_s", "floor_cpu_s", "runs", "clients"}: project and
    floor are median records/s, ratio = project / floor, the CPU figures median CPU seconds of this
    process tree (broker included), runs every single run ("floor" and "project"). The top-level
    project figures are those of the first client; "clients" maps each client to its own
    {"project", "ratio", "project_cpu_s", "runs"}.
    """
    clients = (client,) if isinstance(client, str) else tuple(client)
    overrides = {"bootstrap_servers": bootstrap, "rate": "0", "count": str(records)}
    if workers is not None:
        overrides["producer_workers"] = str(workers)
    settings = load_settings(environ={}, overrides=overrides)
    size = record_size(settings.sensors)
    runs: dict[str, list[tuple[float, float]]] = {"floor": [], **{name: [] for name in clients}}
    for run in range(repeat):
        for name in runs:
            topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, [TopicSpec(topic, 3)])
            cpu = tree_cpu_seconds()
            if name == "floor":
                rate = run_floor(bootstrap, topic, records, size)
            else:
                rate = run_project(settings.replace(input_topic=topic, producer_client=name), records)
            runs[name].append((rate, tree_cpu_seconds() - cpu))
            say(f"  run {run + 1}: {name:<15} {rate:>10,.0f} records/s, {runs[name][-1][1]:6.1f} CPU s")
    floor = statistics.median(r for r, _ in runs["floor"])

    def figures(values: list[tuple[float, float]]) -> dict:
        project = statistics.median(r for r, _ in values)
        return {
            "project": project,
            "ratio": project / floor,
            "project_cpu_s": statistics.median(c for _, c in values),
            "runs": [{"records_per_s": r, "cpu_s": c} for r, c in values],
        }

    per_client = {name: figures(runs[name]) for name in clients}
    first = per_client[clients[0]]
    return {
        "records": records,
        "record_size": size,
        "client": clients[0],
        "workers": worker_count(settings.producer_workers, 0, settings.sensors, records),
        "project": first["project"],
        "floor": floor,
        "ratio": first["ratio"],
        "project_cpu_s": first["project_cpu_s"],
        "floor_cpu_s": statistics.median(c for _, c in runs["floor"]),
        "runs": {"floor": [{"records_per_s": r, "cpu_s": c} for r, c in runs["floor"]], "project": first["runs"]},
        "clients": per_client,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--client",
        choices=(*PRODUCER_CLIENTS, "both"),
        default="both",
        help="the producer client(s) to measure (default both)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="producer processes (default: the setting's default, one per core)"
    )
    args = parser.parse_args()
    clients = PRODUCER_CLIENTS if args.client == "both" else (args.client,)

    tmp = Path(tempfile.mkdtemp(prefix="sensorstream-bench-"))
    with LocalKafka(tmp, port=free_port(), jars_dir=KAFKA_JARS).running() as bootstrap:
        started = time.perf_counter()
        result = measure_produce(
            bootstrap,
            args.records,
            args.repeat,
            say=lambda line: print(line, file=sys.stderr, flush=True),
            client=clients,
            workers=args.workers,
        )
    print(
        f"\nsensorstream produce --rate 0 vs ProducerPerformance: median of {args.repeat} runs, "
        f"{args.records:,} records of {result['record_size']} bytes, acks=all, idempotent, "
        f"{result['workers']} producer process(es), {os.cpu_count()} cores ({time.perf_counter() - started:.0f} s)"
    )
    print(f"{'producer':<52} {'records/s':>11} {'CPU s':>8} {'CPU µs/record':>14} {'x floor':>8}")
    rows = [("ProducerPerformance (Java)", result["floor"], result["floor_cpu_s"], 1.0)]
    for name in clients:
        figures = result["clients"][name]
        label = f"sensorstream produce --client {name}" + (" (default)" if name == PRODUCER_CLIENTS[0] else "")
        rows.append((label, figures["project"], figures["project_cpu_s"], figures["ratio"]))
    for label, rate, cpu, ratio in rows:
        print(f"{label:<52} {rate:>11,.0f} {cpu:>8.1f} {cpu / args.records * 1e6:>14.1f} {ratio:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
