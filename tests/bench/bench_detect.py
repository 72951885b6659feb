"""`make bench`'s detect stage: what the fault detector costs the stream, and how well it finds
the simulator's own faults. Figures, printed and saved, never asserted (tests/test_detect.py holds
the thresholds, over fewer readings).

One topic of `readings` simulator readings (tests/support/detection.py: 10 sensors, seed 7, one
sensor stopped for a fifth of the run), then `sensorstream stream --available-now` over it with
STREAM_DETECT off and on, alternately (bench.compare: a warm-up each, then `repeat` runs; the ratio
is with / without). The last run's alerts are scored: spike and stuck precision and recall, the
stopped sensor's silent and back alerts, and any alert for the healthy ones. The time from a
faulty reading's arrival to its alert is the latency stage's run with the detector on
(bench_latency.measure_latency(detect=True)).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from bench_report import fresh_topics  # noqa: E402

from sensorstream import streaming  # noqa: E402
from sensorstream.local.topics import TopicSpec, ensure_topics  # noqa: E402
from support.broker import consume_all  # noqa: E402
from support.detection import FaultyRun  # noqa: E402


def measure_detect(spark, base, bootstrap: str, folder: Path, readings: int, repeat: int, compare, pids, say) -> dict:
    settings = fresh_topics(base, bootstrap, "detect")
    run = FaultyRun(readings)
    say(f"filling {settings.input_topic} with {readings:,} simulator readings (their faults remembered)...")
    run.send(bootstrap, settings.input_topic)
    alerts_topics: list[str] = []

    def stream(detect: str):
        def job() -> None:
            s = settings.replace(checkpoint_location=folder / f"ck-{uuid.uuid4().hex}", detect=detect)
            if detect == "on":
                s = s.replace(alerts_topic=f"detect-alerts-{uuid.uuid4().hex[:8]}")
                ensure_topics(bootstrap, [TopicSpec(s.alerts_topic, 1)])
                alerts_topics.append(s.alerts_topic)
            streaming.run(spark, s, available_now=True, say=lambda _: None)

        return job

    # "floor" is the stream without detection here: the ratio is what detection leaves of it
    result = compare(run.sent, {"floor": stream("off"), "project": stream("on")}, repeat, pids, say)
    alerts = [
        (m.key.decode(), json.loads(m.value))
        for m in consume_all(settings.replace(alerts_topic=alerts_topics[-1]), alerts_topics[-1])
    ]
    result["score"] = run.score(settings, alerts)
    say(f"  score: {score_line(result['score'])}")
    return result


def score_line(score: dict) -> str:
    def pr(kind: str) -> str:
        k = score[kind]
        figures = [f"{k['precision']:.3f}" if k["precision"] is not None else "-"]
        figures.append(f"{k['recall']:.3f}" if k["recall"] is not None else "-")
        return f"{kind} precision {figures[0]} recall {figures[1]} ({k['alerts']:,} alerts, {k['faults']:,} faults)"

    silence = ", ".join(f"{key} x{n}" for key, n in sorted(score["silence"].items())) or "no silent/back"
    return f"{pr('spike')}; {pr('stuck')}; {silence}; repeated keys {score['repeated_keys']}"
