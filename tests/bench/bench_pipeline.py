"""Pipeline benchmarks: repeatable figures, printed, never asserted.

    .venv/bin/python tests/bench/bench_pipeline.py [--records 50000] [--sensors 10] [--repeat 3]

Starts its own local broker (free port, temporary folder) and SparkSession (local[2]), then measures:
    produce  simulated readings sent with acks=all + idempotence (records/s, MB/s)
    stream   the streaming job over the whole topic, available-now, kafka + dead-letter sinks (records/s)
    report   the batch report over the whole topic, CSV + Parquet + JSON (records/s)
and the peak resident memory of this Python process (the JVMs are separate processes).
Each figure is the median of --repeat runs; the seed is fixed so every run sends the same records.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import stepping_clock  # noqa: E402
from sensorstream import report, streaming  # noqa: E402
from sensorstream.config import load_settings  # noqa: E402
from sensorstream.local.broker import LocalKafka, free_port  # noqa: E402
from sensorstream.local.topics import TopicSpec, ensure_topics  # noqa: E402
from sensorstream.producer import produce  # noqa: E402
from sensorstream.simulator import Simulator  # noqa: E402
from sensorstream.spark import get_session  # noqa: E402

JARS = ROOT / ".sensorstream" / "jars"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--sensors", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sensorstream-bench-"))
    cluster = LocalKafka(tmp, port=free_port(), jars_dir=JARS / "kafka")
    results: dict[str, list[float]] = {"produce": [], "stream": [], "report": []}
    sizes = []
    with cluster.running() as bootstrap:
        base = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "jars_dir": str(JARS / "spark")})
        spark = get_session(base)
        for run in range(args.repeat):
            tag = uuid.uuid4().hex[:8]
            settings = base.replace(
                input_topic=f"in-{tag}", output_topic=f"out-{tag}", dead_letter_topic=f"dlq-{tag}",
                sinks=("kafka",), checkpoint_location=tmp / f"ck-{tag}", report_dir=tmp / f"rep-{tag}",
                report_formats=("csv", "parquet", "json"),
            )
            ensure_topics(bootstrap, [TopicSpec(settings.input_topic, 3), TopicSpec(settings.output_topic, 3),
                                      TopicSpec(settings.dead_letter_topic, 1)])
            sim = Simulator(args.sensors, seed=1, clock=stepping_clock(step=timedelta(milliseconds=200)),
                            bad_ratio=0.01)
            start = time.perf_counter()
            stats = produce(settings, sim, count=args.records, rate=0)
            results["produce"].append(time.perf_counter() - start)
            assert stats.acked == args.records, stats.summary()
            sizes.append(stats.sent)

            start = time.perf_counter()
            streaming.run(spark, settings, available_now=True, say=lambda _: None)
            results["stream"].append(time.perf_counter() - start)

            start = time.perf_counter()
            report.run(spark, settings)
            results["report"].append(time.perf_counter() - start)
            print(f"run {run + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()),
                  file=sys.stderr)
        spark.stop()

    record_bytes = 186  # mean JSON size of a simulated reading
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nsensorstream benchmark: {args.records} records, {args.sensors} sensors, "
          f"median of {args.repeat} runs, 2 cores, Spark local[2]")
    print(f"{'stage':<10}{'seconds':>10}{'records/s':>12}")
    for stage, times in results.items():
        median = statistics.median(times)
        print(f"{stage:<10}{median:>10.2f}{args.records / median:>12.0f}")
    produce_s = statistics.median(results["produce"])
    print(f"produce throughput ~{args.records * record_bytes / produce_s / 1e6:.1f} MB/s of JSON")
    print(f"peak RSS of the Python process: {peak_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
