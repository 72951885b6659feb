"""End-to-end latency of the stream at a steady input rate: repeatable figures, printed, never asserted.

    .venv/bin/python tests/bench/bench_latency.py [--rate 10000] [--seconds 60] [--trigger 0.5] [--sensors 10]

Starts its own local broker (free port, temporary folder) and one SparkSession (local[2]); the
topics keep Kafka's append time (LogAppendTime). The stream runs with the default sinks while
`sensorstream produce --rate R --duration S` (its own process, as in production) sends readings.

Latency of a window record = its append time on the output topic minus the append time of the
newest reading it covers (a window record with num_readings n covers the first n readings of its
sensor and window, in offset order: no reading is late or malformed here). A window's newest
reading usually arrived just before the batch began; not so for its last update (closing): its
last reading may have waited up to one trigger interval for the next batch. Those samples are
counted apart (closing_samples, closing_max_s). The producer sends for WARM_UP_S more
than asked, and the figures leave those first seconds out (their largest latency is printed as
warm_up_max_s): the first micro-batches run cold, and the stream then works off the backlog they
left before it is in its steady state. Also printed: micro-batch durations and the last batches' input rows
(steady when they stay near rate x batch interval: no growing backlog).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from sensorstream import streaming  # noqa: E402
from sensorstream.config import load_settings  # noqa: E402
from sensorstream.errors import TopicMissingError  # noqa: E402
from sensorstream.local.broker import LocalKafka  # noqa: E402
from sensorstream.local.ports import free_port  # noqa: E402
from sensorstream.local.topics import TopicSpec, ensure_topics  # noqa: E402
from sensorstream.spark import get_session  # noqa: E402
from support.broker import consume_all  # noqa: E402

JARS = ROOT / ".sensorstream" / "jars"
#: The first micro-batches run cold while the JVM compiles Spark's code (5-6 s each at 100,000
#: sensors, against about 1.5 s later), and the batches after them work off what came in meanwhile:
#: at 10,000 readings/s from 100,000 sensors the stream is steady after about 20 s.
WARM_UP_S = 30.0
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_client() -> str:
    """The producer client that sends the load: confluent-kafka when installed (the `fast` extra).

    The load generator shares this machine's two cores with the stream it measures, and the C
    client spends about a quarter of kafka-python's CPU per reading; in production the producer
    runs elsewhere.
    """
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return "kafka-python"
    return "confluent-kafka"


def measure_latency(
    spark,
    base,
    bootstrap: str,
    folder: Path,
    rate: int,
    seconds: float,
    trigger: float,
    say=lambda m: None,
    client: str | None = None,
    sensors: int | None = None,
    detect: bool = False,
) -> dict:
    """Run the stream against a steady producer of `sensors` sensors (default: the producer's);
    latency percentiles and batch figures. `detect`: with the fault detector on, and the time from
    each spiked or stuck reading's arrival to its alert on the alerts topic too."""
    client = client or load_client()
    tag = uuid.uuid4().hex[:8]
    settings = base.replace(
        input_topic=f"lat-in-{tag}",
        output_topic=f"lat-out-{tag}",
        dead_letter_topic=f"lat-dlq-{tag}",
        checkpoint_location=folder / f"ck-{tag}",
        trigger_interval=timedelta(seconds=trigger),
        sinks=("console", "kafka"),
        alerts_topic=f"lat-alerts-{tag}",
        detect="on" if detect else "off",
    )
    ensure_topics(
        bootstrap,
        [
            TopicSpec(settings.input_topic, 3, config=APPEND_TIME),
            TopicSpec(settings.output_topic, 3, config=APPEND_TIME),
            TopicSpec(settings.dead_letter_topic, 1),
            *([TopicSpec(settings.alerts_topic, 1, config=APPEND_TIME)] if detect else []),
        ],
    )
    for _ in range(50):  # new topics take a moment to reach the broker's metadata
        try:
            streaming.preflight(settings)
            break
        except TopicMissingError:
            time.sleep(0.2)
    batches: list[tuple[float, streaming.BatchProgress]] = []  # (time reported, batch)
    stop = threading.Event()
    failure: list[BaseException] = []

    def reported(batch: streaming.BatchProgress) -> None:
        batches.append((time.time(), batch))

    def stream() -> None:
        try:
            with open(os.devnull, "w") as quiet, _stdout_to(quiet):
                streaming.run(spark, settings, stop=stop, say=lambda m: None, on_progress=reported)
        except BaseException as exc:  # reported after the run
            failure.append(exc)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    while not batches and thread.is_alive():  # the first (empty) batch: the query is up
        time.sleep(0.2)
    say(
        f"  stream up; producing {rate:,}/s for {WARM_UP_S:.0f} s of warm-up and {seconds:.0f} s measured "
        f"({client}), trigger {trigger} s"
    )
    started = time.time()
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "sensorstream"),
            "produce",
            "--rate",
            str(rate),
            "--count",
            "0",
            "--duration",
            str(WARM_UP_S + seconds),
            "--workers",
            "1",
            "--client",
            client,
            "--topic",
            settings.input_topic,
            *(["--sensors", str(sensors)] if sensors else []),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
    )
    time.sleep(max(2.0, 3 * trigger))
    stop.set()
    thread.join(60)
    if failure:
        raise failure[0]

    readings: dict[tuple[str, str], list[int]] = defaultdict(list)  # (sensor, window start) -> append ms
    arrived: dict[str, int] = {}  # topic|partition|offset -> append ms (detect)
    for record in sorted(consume_all(settings, settings.input_topic), key=lambda r: (r.partition, r.offset)):
        if detect:
            arrived[f"{record.topic}|{record.partition}|{record.offset}"] = record.timestamp
        value = json.loads(record.value)
        moment = datetime.fromisoformat(value["timestamp"])
        start = moment.replace(second=0, microsecond=0, minute=moment.minute - moment.minute % 5)
        readings[(value["sensor_id"], start.strftime("%Y-%m-%dT%H:%M:%SZ"))].append(record.timestamp)
    latencies, closing, warming = [], [], []
    for record in consume_all(settings, settings.output_topic):
        window = json.loads(record.value)
        covered = readings[(window["sensor_id"], window["window_start"])]
        latency = (record.timestamp - covered[window["num_readings"] - 1]) / 1000
        if record.timestamp / 1000 < started + WARM_UP_S:
            warming.append(latency)
            continue
        latencies.append(latency)
        if window["num_readings"] == len(covered):  # the window's last update: its newest reading may
            closing.append(latency)  # have waited for the next trigger, up to one interval
    with_input = [b for at, b in batches if b.records > 0 and at >= started + WARM_UP_S]
    steady = [b.seconds for b in with_input]  # None below: the stream fell too far behind to say
    alerted: list[float] = []  # seconds from a faulty reading's arrival to its alert (after warm-up)
    kinds: dict[str, int] = defaultdict(int)
    for record in consume_all(settings, settings.alerts_topic) if detect else []:
        alert = json.loads(record.value)
        kinds[alert["kind"]] += 1
        if alert["kind"] in ("spike", "stuck") and record.timestamp / 1000 >= started + WARM_UP_S:
            alerted.append((record.timestamp - arrived[alert["source"]]) / 1000)
    figures = {"detect": detect}
    if detect:
        figures |= {
            "alerts": dict(kinds),
            "alert_samples": len(alerted),
            "alert_p50_s": percentile(alerted, 0.5) if alerted else None,
            "alert_p99_s": percentile(alerted, 0.99) if alerted else None,
        }
    return figures | {
        "rate": rate,
        "seconds": seconds,
        "sensors": sensors,
        "trigger_s": trigger,
        "load_client": client,
        "samples": len(latencies),
        "latency_p50_s": percentile(latencies, 0.5) if latencies else None,
        "latency_p99_s": percentile(latencies, 0.99) if latencies else None,
        "latency_max_s": max(latencies, default=None),
        "warm_up_s": WARM_UP_S,
        "warm_up_max_s": max(warming, default=None),
        "closing_samples": len(closing),
        "closing_max_s": max(closing, default=None),
        "batches": len(with_input),
        "batch_p50_s": statistics.median(steady) if steady else None,
        "batch_p99_s": percentile(steady, 0.99) if steady else None,
        "last_batches_rows": [b.records for b in with_input[-5:]],
        "late": sum(b.late for _, b in batches),
        "rejected": sum(b.rejected for _, b in batches),
    }


class _stdout_to:
    """The console sink prints tables: keep them out of the figures."""

    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        self.saved, sys.stdout = sys.stdout, self.stream

    def __exit__(self, *exc):
        sys.stdout = self.saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="readings per second (default 10000)")
    parser.add_argument("--seconds", type=float, default=60, help="how long the producer sends (default 60)")
    parser.add_argument("--trigger", type=float, default=None, help="micro-batch interval, s (default: the stream's)")
    parser.add_argument("--sensors", type=int, default=None, help="sensors the producer simulates (default: its own)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sensorstream-bench-"))
    with LocalKafka(tmp, port=free_port(), jars_dir=JARS / "kafka").running() as bootstrap:
        base = load_settings(environ={}, overrides={"bootstrap_servers": bootstrap, "jars_dir": str(JARS / "spark")})
        trigger = args.trigger if args.trigger is not None else base.trigger_interval.total_seconds()
        spark = get_session(base)
        result = measure_latency(
            spark,
            base,
            bootstrap,
            tmp,
            args.rate,
            args.seconds,
            trigger,
            say=lambda m: print(m, file=sys.stderr),
            sensors=args.sensors,
        )
        spark.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
