"""`make bench`: every stage against its floor, measured in the same run; printed and saved, never asserted.

    .venv/bin/python tests/bench/bench.py [--records 200000,2000000] [--repeat 2] [--rate 10000]
                                          [--seconds 60] [--produce-records 300000] [--skip STAGE,...]
                                          [--scale-sensors 10,10000,100000,1000000]
                                          [--scale-records 1000000] [--scale-cap 50000]
                                          [--scale-latency-sensors 100000] [--detect-readings 1000000]
                                          [--detect-repeat 5]

Starts its own local broker (free port, temporary folder) and one SparkSession (local[2]), then:

    produce   `sensorstream produce --rate 0` with each client (kafka-python, the default, and the
              confluent-kafka extra) vs Kafka's own ProducerPerformance, same record size,
              acks=all, idempotent (bench_produce.py)
    stream    `sensorstream stream --available-now` with the default sinks vs Spark's floor: Kafka
              -> from_json -> the same 5-minute window aggregation (stateful, watermark) -> noop,
              per topic size; records/s of the query, so the JVM start is left out
    report    `sensorstream report` vs Kafka -> from_json -> the same per-sensor aggregation -> noop
              (bench_report.py), per topic size
    latency   end-to-end latency p50/p99 at a steady input rate (bench_latency.py)
    detect    the stream with the fault detector (STREAM_DETECT=on) vs without, over --detect-readings
              simulator readings; the detector's precision and recall against the simulator's own
              faults; the time from a faulty reading's arrival to its alert, at --rate (bench_detect.py)
    scale     the stream vs the same floor as the sensors multiply (10 to a million), each batch
              capped (maxOffsetsPerTrigger): records/s, batch durations, state rows, peak memory
              of the Python driver and of the JVM apart; then the latency at --rate from
              --scale-latency-sensors sensors (bench_scale.py; its own table)

For stream and report: wall and CPU seconds (the whole process tree) and the peak resident memory
of the Spark JVM + this Python process. The figures go to stdout as a table (also appended, dated,
with the machine, to tests/bench/RESULTS.md) and to data/bench/<UTC time>.json. Topics are filled
with simulator-shaped readings, 1% out of range.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detect import measure_detect, score_line
from bench_latency import measure_latency
from bench_produce import measure_produce
from bench_report import JARS, ROOT, fill_topic, floor_job, fresh_topics
from bench_scale import measure_scale, stream_floor
from proc_cpu import PeakRss, tree_cpu_seconds

from sensorstream import report, streaming
from sensorstream.config import load_settings
from sensorstream.local.broker import LocalKafka
from sensorstream.local.ports import free_port
from sensorstream.spark import get_session

STAGES = ("produce", "stream", "report", "latency", "detect", "scale")


def timed(job, pids) -> dict:
    """Wall and CPU seconds of one run, and the peak resident memory of `pids` during it."""
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    with PeakRss(pids) as rss, contextlib.redirect_stdout(io.StringIO()):  # console tables: not figures
        job()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": tree_cpu_seconds() - cpu, "peak_rss_mib": rss.peak / 2**20}


def compare(size: int, jobs: dict, repeat: int, pids, say) -> dict:
    """floor and project alternately, `repeat` times after one warm-up each; medians and the ratio."""
    for job in jobs.values():
        with contextlib.redirect_stdout(io.StringIO()):
            job()
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    for run in range(repeat):
        for name, job in jobs.items():
            runs[name].append(timed(job, pids))
            figures = runs[name][-1]
            say(
                f"  {size:>9,} {name:<8} run {run + 1}: {figures['wall_s']:6.2f} s, {figures['cpu_s']:6.2f} CPU s, "
                f"{figures['peak_rss_mib']:,.0f} MiB"
            )
    result: dict = {"records": size}
    for name, values in runs.items():
        wall = statistics.median(v["wall_s"] for v in values)
        result[name] = {
            "records_per_s": size / wall,
            "wall_s": wall,
            "cpu_s": statistics.median(v["cpu_s"] for v in values),
            "peak_rss_mib": max(v["peak_rss_mib"] for v in values),
            "runs": values,
        }
    result["ratio"] = result["project"]["records_per_s"] / result["floor"]["records_per_s"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="200000,2000000", help="topic sizes for stream and report")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each job per size (median)")
    parser.add_argument("--rate", type=int, default=10_000, help="input rate of the latency runs, readings/s")
    parser.add_argument("--seconds", type=float, default=60, help="length of the latency runs")
    parser.add_argument("--trigger", type=float, default=None, help="latency runs' trigger, s (default: the stream's)")
    parser.add_argument("--produce-records", type=int, default=300_000)
    parser.add_argument("--scale-sensors", default="10,10000,100000,1000000", help="sensor counts of the scale stage")
    parser.add_argument("--scale-records", type=int, default=1_000_000, help="readings per sensor count (scale)")
    parser.add_argument("--scale-cap", type=int, default=50_000, help="maxOffsetsPerTrigger of the scale stage")
    parser.add_argument(
        "--scale-latency-sensors", type=int, default=100_000, help="sensors of the scale latency run; 0 = none"
    )
    parser.add_argument("--detect-readings", type=int, default=1_000_000, help="readings of the detect stage")
    # one pair of runs, with and without the detector, varies by about +-0.05 in its ratio here
    parser.add_argument("--detect-repeat", type=int, default=5, help="runs of each detect job (median)")
    parser.add_argument("--skip", default="", help=f"stages to leave out, of {','.join(STAGES)}")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    # the topics of stream and report: not filled when both are left out
    sizes = [int(s) for s in args.records.split(",")] if {"stream", "report"} - skip else []

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="sensorstream-bench-"))
    results: dict = {"started": started.isoformat(timespec="seconds"), "machine": machine(), "stages": {}}
    with LocalKafka(tmp, port=free_port(), jars_dir=JARS / "kafka").running() as bootstrap:
        base = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "jars_dir": str(JARS / "spark")})
        if "produce" not in skip:
            say(f"produce: {args.produce_records:,} readings, ours vs ProducerPerformance")
            results["stages"]["produce"] = measure_produce(
                bootstrap, args.produce_records, args.repeat, say=say, client=("kafka-python", "confluent-kafka")
            )
        spark = get_session(base)
        pids = [os.getpid(), spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()]
        stream_runs, report_runs = [], []
        for size in sizes:
            settings = fresh_topics(base, bootstrap, "bench", report_dir=tmp / "reports", report_formats=("csv",))
            say(f"filling {settings.input_topic} with {size:,} readings...")
            fill_topic(spark, settings, size, 0.01)
            if "stream" not in skip:

                def ours(s=settings):
                    streaming.run(
                        spark,
                        s.replace(checkpoint_location=tmp / f"ck-{uuid.uuid4().hex}"),
                        available_now=True,
                        say=lambda _: None,
                    )

                stream_runs.append(
                    compare(
                        size,
                        {
                            "floor": lambda s=settings: stream_floor(spark, s, tmp / f"floor-{uuid.uuid4().hex}"),
                            "project": ours,
                        },
                        args.repeat,
                        pids,
                        say,
                    )
                )
            if "report" not in skip:
                report_runs.append(
                    compare(
                        size,
                        {
                            "floor": lambda s=settings: floor_job(spark, s),
                            "project": lambda s=settings: report.run(spark, s),
                        },
                        args.repeat,
                        pids,
                        say,
                    )
                )
        if stream_runs:
            results["stages"]["stream"] = stream_runs
        if report_runs:
            results["stages"]["report"] = report_runs
        trigger = args.trigger if args.trigger is not None else base.trigger_interval.total_seconds()
        if "latency" not in skip:
            say(f"latency: {args.rate:,} readings/s for {args.seconds:.0f} s, trigger {trigger} s")
            results["stages"]["latency"] = measure_latency(
                spark, base, bootstrap, tmp, args.rate, args.seconds, trigger, say=say
            )
        if "detect" not in skip:
            say(f"detect: {args.detect_readings:,} simulator readings, the stream with and without the detector")
            detect = measure_detect(
                spark, base, bootstrap, tmp, args.detect_readings, args.detect_repeat, compare, pids, say
            )
            say(f"detect latency: {args.rate:,} readings/s for {args.seconds:.0f} s, trigger {trigger} s, detector on")
            detect["latency"] = measure_latency(
                spark, base, bootstrap, tmp, args.rate, args.seconds, trigger, say=say, detect=True
            )
            results["stages"]["detect"] = detect
        if "scale" not in skip:
            counts = [int(n) for n in args.scale_sensors.split(",")]
            say(
                f"scale: {args.scale_records:,} readings from each of {args.scale_sensors} sensors, "
                f"at most {args.scale_cap:,} per micro-batch"
            )
            scale = {"records": args.scale_records, "cap": args.scale_cap, "repeat": args.repeat}
            scale["sizes"] = measure_scale(
                spark, base, bootstrap, tmp, counts, args.scale_records, args.scale_cap, args.repeat, say=say
            )
            if args.scale_latency_sensors:
                say(
                    f"scale latency: {args.rate:,} readings/s from {args.scale_latency_sensors:,} sensors "
                    f"for {args.seconds:.0f} s, trigger {trigger} s"
                )
                scale["latency"] = measure_latency(
                    spark,
                    base,
                    bootstrap,
                    tmp,
                    args.rate,
                    args.seconds,
                    trigger,
                    say=say,
                    sensors=args.scale_latency_sensors,
                )
            results["stages"]["scale"] = scale
        spark.stop()
    results["seconds"] = (datetime.now(timezone.utc) - started).total_seconds()
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        print_table(results)
    print(table.getvalue(), end="")
    append_results(results, table.getvalue())
    out = ROOT / "data" / "bench" / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures saved to {out.relative_to(ROOT)}; table appended to {RESULTS.relative_to(ROOT)}")
    return 0


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def append_results(results: dict, table: str) -> None:
    """Append the printed table to tests/bench/RESULTS.md as a section dated by the run's start,
    with the machine it ran on, so the figures kept in the repository are the ones a run printed."""
    m = results["machine"]
    started = datetime.fromisoformat(results["started"])
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(
            f"\n## {started:%Y-%m-%d %H:%M} UTC, make bench\n\n"
            f"Machine: nproc {len(os.sched_getaffinity(0))}, {m['memory_gib']} GiB memory, "
            f"Python {m['python']}, Spark {m['spark_master']}; run took {results['seconds'] / 60:.0f} min.\n\n"
            f"```\n{table.strip()}\n```\n"
        )


def machine() -> dict:
    memory = 0
    with contextlib.suppress(OSError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "spark_master": "local[2]",
    }


def print_table(results: dict) -> None:
    stages = results["stages"]
    print(
        f"\nsensorstream benchmark, {results['started']}, {results['machine']['cores']} cores "
        f"(median of the runs; ratio = ours / floor, throughput)"
    )
    if set(stages) - {"scale"}:  # scale has its own table
        print(
            f"{'stage':<9} {'records':>10} {'ours /s':>10} {'floor /s':>10} {'ratio':>6} {'CPU s ours/floor':>17} "
            f"{'peak MiB':>9}"
        )
    if "produce" in stages:
        p = stages["produce"]
        for client, c in p["clients"].items():  # ProducerPerformance's runs are shared by both clients
            print(
                f"{'produce':<9} {p['records']:>10,} {c['project']:>10,.0f} {p['floor']:>10,.0f} {c['ratio']:>6.2f} "
                f"{c['project_cpu_s']:>8.1f}/{p['floor_cpu_s']:<8.1f} {'':>9} ({client})"
            )
    for stage in ("stream", "report"):
        for r in stages.get(stage, []):
            ours, floor = r["project"], r["floor"]
            print(
                f"{stage:<9} {r['records']:>10,} {ours['records_per_s']:>10,.0f} {floor['records_per_s']:>10,.0f} "
                f"{r['ratio']:>6.2f} {ours['cpu_s']:>8.1f}/{floor['cpu_s']:<8.1f} {ours['peak_rss_mib']:>9,.0f}"
            )
        runs = stages.get(stage, [])
        if len(runs) > 1:
            per_m = ", ".join(f"{r['project']['cpu_s'] / r['records'] * 1e6:.1f}" for r in runs)
            print(f"{'':<9} CPU s per million readings ({stage}): {per_m} (equal = linear)")
    if "latency" in stages:
        print(f"latency   {latency_line(stages['latency'])}")
    if "detect" in stages:
        d = stages["detect"]
        off, on = d["floor"], d["project"]
        print(
            f"{'detect':<9} {d['records']:>10,} {on['records_per_s']:>10,.0f} {off['records_per_s']:>10,.0f} "
            f"{d['ratio']:>6.2f} {on['cpu_s']:>8.1f}/{off['cpu_s']:<8.1f} {on['peak_rss_mib']:>9,.0f} "
            "(the stream with the detector / without)"
        )
        print(f"{'':<9} {score_line(d['score'])}")
        lat = d["latency"]

        def s(key: str) -> str:
            return "-" if lat.get(key) is None else f"{lat[key]:.2f} s"

        print(
            f"{'':<9} time to alert at {lat['rate']:,}/s: p50 {s('alert_p50_s')}, p99 {s('alert_p99_s')} "
            f"({lat['alert_samples']:,} spike/stuck alerts); its windows {latency_line(lat)}"
        )
    if "scale" in stages:
        print_scale(stages["scale"])


def latency_line(lat: dict) -> str:
    """One latency run's figures; "-" where the stream fell too far behind to give one."""

    def s(key: str) -> str:
        return "-" if lat.get(key) is None else f"{lat[key]:.2f} s"

    sensors = f" from {lat['sensors']:,} sensors" if lat.get("sensors") else ""
    return (
        f"{lat['rate']:,}/s{sensors} for {lat['seconds']:.0f} s after {lat.get('warm_up_s', 0):.0f} s of warm-up "
        f"(max {s('warm_up_max_s')}), trigger {lat['trigger_s']} s: "
        f"p50 {s('latency_p50_s')}, p99 {s('latency_p99_s')}, max {s('latency_max_s')} "
        f"({lat['samples']} window records, {lat['closing_samples']} closing a window); "
        f"batch p50 {s('batch_p50_s')}; last batches' rows {lat['last_batches_rows']}; "
        f"load sent with {lat['load_client']}"
    )


def print_scale(scale: dict) -> None:
    """The scale stage's own table: one row per sensor count, ours / floor in each column."""
    print(
        f"\nscale: {scale['records']:,} readings over one hour per sensor count, at most {scale['cap']:,} per "
        f"micro-batch (median of {scale['repeat']}; ratio = ours / floor, throughput; other columns ours / floor)"
    )
    print(
        f"{'sensors':>9} {'ours /s':>9} {'floor /s':>9} {'ratio':>6} {'batches':>9} {'batch p50 s':>11} "
        f"{'batch p99 s':>11} {'state rows':>17} {'Python MiB':>11} {'JVM MiB':>11}"
    )

    def pair(ours, floor, spec: str, width: int) -> str:
        text = "/".join("-" if v is None else format(v, spec) for v in (ours, floor))
        return f"{text:>{width}}"

    for r in scale["sizes"]:
        ours, floor = r["project"], r["floor"]
        print(
            f"{r['sensors']:>9,} {ours['records_per_s']:>9,.0f} {floor['records_per_s']:>9,.0f} {r['ratio']:>6.2f} "
            f"{pair(ours['batches'], floor['batches'], 'd', 9)} "
            f"{pair(ours['batch_p50_s'], floor['batch_p50_s'], '.2f', 11)} "
            f"{pair(ours['batch_p99_s'], floor['batch_p99_s'], '.2f', 11)} "
            f"{pair(ours['state_rows'], floor['state_rows'], ',d', 17)} "
            f"{pair(ours['python_rss_mib'], floor['python_rss_mib'], ',.0f', 11)} "
            f"{pair(ours['jvm_rss_mib'], floor['jvm_rss_mib'], ',.0f', 11)}"
        )
    if "latency" in scale:
        print(f"scale latency: {latency_line(scale['latency'])}")


if __name__ == "__main__":
    sys.exit(main())
