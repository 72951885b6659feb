"""The streaming job end to end: real broker, real Spark, every sink, dead letters, checkpoints."""

import json
import re
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sensorstream import streaming
from sensorstream.aggregate import window_stats
from sensorstream.errors import CheckpointError
from sensorstream.producer import produce
from sensorstream.readings import REASON_KINDS
from sensorstream.report import read_topic
from sensorstream.schema import parse_and_validate
from sensorstream.simulator import MALFORMED_KINDS, Simulator
from support.broker import consume_all, isolated_settings
from support.readings import RecordingSimulator, assert_stats_equal, reference_windows, stepping_clock
from support.stream import state_session

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

WINDOW = timedelta(minutes=5)


@pytest.fixture(scope="module")
def run(kafka_bootstrap, spark, tmp_path_factory):
    """Produce one hour of readings (with malformed ones) and run the stream over them once: the
    settings, what was sent, and each micro-batch's progress."""
    settings = isolated_settings(
        kafka_bootstrap, tmp_path_factory.mktemp("stream"), sinks="console,kafka,parquet", max_offsets_per_trigger="300"
    )
    sim = RecordingSimulator(sensors=10, seed=17, clock=stepping_clock(step=timedelta(seconds=3)), bad_ratio=0.05)
    stats = produce(settings, sim, count=1200, rate=0)
    assert stats.acked == 1200
    progress = []
    streaming.run(spark, settings, available_now=True, say=lambda _: None, on_progress=progress.append)
    return settings, sim.sent, progress


def final_windows(settings):
    """The output topic read as an upsert log: the last value per key."""
    latest = {}
    for record in consume_all(settings, settings.output_topic):
        latest[record.key.decode()] = json.loads(record.value)
    return latest


def test_stream_windows_match_an_independent_computation(run):
    settings, sent, _ = run
    readings = [r.reading.to_json() for r in sent if r.kind == "reading"]
    expected = reference_windows(readings, WINDOW)
    windows = final_windows(settings)
    assert len(windows) == len(expected) == 120
    for key, value in windows.items():
        sensor, start = key.split("|")
        assert value["sensor_id"] == sensor and value["window_start"] == start
        start_dt = datetime.fromisoformat(start)
        assert datetime.fromisoformat(value["window_end"]) - start_dt == WINDOW
        assert_stats_equal(value, expected[(start_dt.astimezone(timezone.utc), sensor)])


def test_stream_and_batch_give_the_same_windows(run, spark):
    settings, _, _ = run
    readings, _ = parse_and_validate(read_topic(spark, settings))
    batch = {
        (r["sensor_id"], r["window_start"].astimezone(timezone.utc)): r.asDict()
        for r in window_stats(readings, WINDOW).collect()
    }
    stream = final_windows(settings)
    assert len(batch) == len(stream)
    for key, value in stream.items():
        sensor, start = key.split("|")
        expected = batch[(sensor, datetime.fromisoformat(start).astimezone(timezone.utc))]
        assert_stats_equal(value, {k: v for k, v in expected.items() if k not in ("window_start", "window_end")})


def test_every_malformed_record_reaches_the_dead_letter_topic(run):
    settings, sent, _ = run
    bad = [r for r in sent if r.kind in MALFORMED_KINDS]
    assert {r.kind for r in bad} == set(MALFORMED_KINDS)
    letters = [json.loads(rec.value) for rec in consume_all(settings, settings.dead_letter_topic)]
    assert len(letters) == len(bad)
    assert sorted(letter["value"] for letter in letters) == sorted(r.value.decode() for r in bad)
    by_value = {r.value.decode(): r.kind for r in bad}
    prefixes = {
        "broken_json": ("invalid JSON",),
        "wrong_type": ("wrong type",),
        "missing_field": ("missing field",),
        "out_of_range": ("out of range",),
    }
    for letter in letters:
        assert letter["reason"].startswith(prefixes[by_value[letter["value"]]]), letter
        assert letter["source_topic"] == settings.input_topic
        assert letter["source_partition"] in (0, 1, 2) and letter["source_offset"] >= 0
        assert letter["kafka_timestamp"]


def test_each_batch_counts_its_rejects_by_kind_of_reason(run):
    """What the metrics serve as sensorstream_stream_dead_letters_total{reason=...}: per batch, the
    kinds add up to its rejects; over the run, they are the dead letters' reasons, kind by kind."""
    settings, _, progress = run
    assert progress and all(sum(p.rejected_by_reason.values()) == p.rejected for p in progress)
    counted = Counter()
    for p in progress:
        counted.update(p.rejected_by_reason)
    letters = [json.loads(rec.value)["reason"] for rec in consume_all(settings, settings.dead_letter_topic)]
    assert counted == Counter(reason.split(":")[0] for reason in letters)
    assert set(counted) <= set(REASON_KINDS) and len(counted) >= 3


def test_parquet_sink_holds_finalized_windows(run, spark):
    settings, sent, _ = run
    rows = spark.read.parquet(str(settings.parquet_dir)).collect()
    expected = reference_windows([r.reading.to_json() for r in sent if r.kind == "reading"], WINDOW)
    assert rows, "no window was finalized"
    for row in rows:
        assert_stats_equal(row.asDict(), expected[(row["window_start"].astimezone(timezone.utc), row["sensor_id"])])
    # windows within the watermark (10 min) of the newest reading are still open
    assert len(rows) < len(expected)


def test_console_sink_prints_window_tables(kafka_settings, spark, capfd):
    settings = kafka_settings.replace(sinks=("console",))
    produce(settings, Simulator(sensors=3, seed=2, clock=stepping_clock()), count=30, rate=0)
    streaming.run(spark, settings, available_now=True, say=lambda _: None)
    out = capfd.readouterr().out
    assert "window row(s) updated" in out
    assert "| window_start" in out and "avg_temperature" in out
    assert "| sensor_1 " in out and "| sensor_3 " in out


def test_checkpoint_of_another_query_is_refused_and_can_be_reset(kafka_settings, spark):
    settings = kafka_settings.replace(sinks=("console",))
    produce(settings, Simulator(sensors=2, seed=3, clock=stepping_clock()), count=10, rate=0)
    streaming.run(spark, settings, available_now=True, say=lambda _: None)
    changed = settings.replace(window_duration=timedelta(minutes=10))
    with pytest.raises(CheckpointError) as err:
        streaming.run(spark, changed, available_now=True, say=lambda _: None)
    message = str(err.value)
    assert str(settings.checkpoint_location) in message and "--reset-checkpoint" in message
    streaming.run(spark, changed, available_now=True, reset_checkpoint=True, say=lambda _: None)


def test_turning_the_detector_on_or_off_needs_a_fresh_checkpoint(tmp_path):
    """Its state (and the rocksdb store it takes) lives in the checkpoint: one line, before Spark."""
    from sensorstream.config import load_settings
    from sensorstream.streaming.checkpoint import prepare_checkpoint

    off = load_settings(environ={}, overrides={"checkpoint_location": str(tmp_path)})
    prepare_checkpoint(off, "stream", reset=False)
    prepare_checkpoint(off, "stream", reset=False)  # the same settings: the same checkpoint
    on = off.replace(detect="on")
    with pytest.raises(CheckpointError, match=r"detect 'off' -> 'on'.*--reset-checkpoint"):
        prepare_checkpoint(on, "stream", reset=False)
    prepare_checkpoint(on, "stream", reset=True)
    with pytest.raises(CheckpointError, match=r"detect 'on' -> 'off'"):
        prepare_checkpoint(off, "stream", reset=False)


def test_stream_stops_when_asked(kafka_settings, spark):
    import threading

    stop = threading.Event()
    timer = threading.Timer(8, stop.set)
    timer.start()
    try:
        streaming.run(spark, kafka_settings.replace(sinks=("console",)), stop=stop, say=lambda _: None)
    finally:
        timer.cancel()
    assert not streaming.stream_session(spark).streams.active


def test_a_stop_during_a_batch_ends_quietly_and_the_batch_runs_again(kafka_settings, spark, monkeypatch):
    """Ctrl+C while a micro-batch's Spark job runs: Spark cancels the job; run() returns without an
    error (no Java stack trace, which Spark's own error matching cannot even read), and the batch,
    never committed, is processed in full by the next run."""
    import threading

    from pyspark.sql import functions as F

    sim = RecordingSimulator(sensors=3, seed=5, clock=stepping_clock(step=timedelta(seconds=1)))
    assert produce(kafka_settings, sim, count=30, rate=0).acked == 30
    stop = threading.Event()
    real = streaming.plan.stream_plan

    def slow(source, *args):  # each record takes a second: the stop lands in the middle of the job
        threading.Timer(12, stop.set).start()
        return real(source.where(F.expr("reflect('java.lang.Thread', 'sleep', 1000L) is null")), *args)

    monkeypatch.setattr(streaming.plan, "stream_plan", slow)
    said = []
    streaming.run(spark, kafka_settings.replace(sinks=("kafka",)), stop=stop, say=said.append)
    assert any("stopped during micro-batch" in line for line in said), said
    assert not consume_all(kafka_settings, kafka_settings.output_topic)

    monkeypatch.setattr(streaming.plan, "stream_plan", real)
    streaming.run(spark, kafka_settings.replace(sinks=("kafka",)), available_now=True, say=lambda _: None)
    latest = {r.key: json.loads(r.value) for r in consume_all(kafka_settings, kafka_settings.output_topic)}
    assert sum(w["num_readings"] for w in latest.values()) == 30


def test_restart_resumes_and_the_watermark_decides_what_is_too_late(kafka_settings, spark):
    """Second run on the same checkpoint: only new records are read; a reading older than the
    watermark leaves its (closed) window alone and is counted late, one within the watermark
    updates its window."""
    from kafka import KafkaProducer

    from sensorstream.simulator import Reading, encode

    settings = kafka_settings.replace(sinks=("kafka",))
    sim = Simulator(sensors=1, seed=5, clock=stepping_clock(step=timedelta(seconds=30)))
    produce(settings, sim, count=80, rate=0)  # 40 minutes of readings from sensor_1
    streaming.run(spark, settings, available_now=True, say=lambda _: None)
    before = final_windows(settings)
    newest = max(datetime.fromisoformat(v["window_end"]) for v in before.values())

    def reading(at):
        return Reading("sensor_1", at, 20.0, 50.0, 1000.0, 999, str(uuid.uuid4()))

    too_late = reading(newest - timedelta(minutes=30, seconds=-10))  # far behind the watermark
    in_time = reading(newest - timedelta(minutes=4, seconds=50))  # inside the last open window
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers.split(","))
    for r in (too_late, in_time):
        producer.send(settings.input_topic, key=b"sensor_1", value=encode(r))
    producer.flush()
    producer.close()

    progress: list = []
    streaming.run(spark, settings, available_now=True, say=lambda _: None, on_progress=progress.append)
    assert sum(p.late for p in progress) == 1  # counted again from its batch's offsets: exactly the one
    after = final_windows(settings)
    key = f"sensor_1|{(newest - WINDOW).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert after[key]["num_readings"] == before[key]["num_readings"] + 1  # the in-time reading counted
    late_start = too_late.timestamp - timedelta(seconds=too_late.timestamp.timestamp() % 300)
    late_key = f"sensor_1|{late_start.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    assert after[late_key] == before[late_key]  # the late one changed nothing
    # the restarted stream did not re-emit or re-read the first 80 readings
    assert sum(v["num_readings"] for v in after.values()) == 80 + 1


def test_a_batch_over_the_reject_ratio_is_written_and_committed_then_the_stream_stops(kafka_settings, spark):
    """--max-reject-ratio: the batch over it still sends every reject to the dead-letter topic and its
    readings to the windows, Spark commits it, and then run() stops with one line; a restart goes on
    after it instead of stopping on it again."""
    from sensorstream.errors import SensorstreamError

    settings = kafka_settings.replace(sinks=("kafka",), max_reject_ratio=0.3)
    clock = stepping_clock(step=timedelta(seconds=1))
    clean = RecordingSimulator(sensors=3, seed=7, clock=clock)
    assert produce(settings, clean, count=60, rate=0).acked == 60
    streaming.run(spark, settings, available_now=True, say=lambda _: None)  # 0 rejects: on it goes

    garbage = RecordingSimulator(sensors=3, seed=8, clock=clock, bad_ratio=0.6)
    assert produce(settings, garbage, count=100, rate=0).acked == 100
    rejects = sum(1 for r in garbage.sent if r.kind not in ("reading", "late"))
    with pytest.raises(SensorstreamError) as err:
        streaming.run(spark, settings, available_now=True, say=lambda _: None)
    message = str(err.value)
    assert "\n" not in message
    found = re.search(r"micro-batch (\d+) rejected", message)  # the first after the clean run's batches
    assert found, message
    batch = found.group(1)
    assert (
        f"micro-batch {batch} rejected {rejects} of 100 records ({rejects / 100:.1%}), over --max-reject-ratio 0.3; "
        f"see the dead-letter topic {settings.dead_letter_topic}"
    ) in message
    assert f"(it goes on after micro-batch {batch})" in message
    assert len(consume_all(settings, settings.dead_letter_topic)) == rejects
    windows = final_windows(settings)
    assert sum(w["num_readings"] for w in windows.values()) == 60 + 100 - rejects

    progress = []
    streaming.run(spark, settings, available_now=True, say=lambda _: None, on_progress=progress.append)
    assert not any(p.records for p in progress), progress  # committed: nothing runs again
    assert len(consume_all(settings, settings.dead_letter_topic)) == rejects


def test_spark_reports_the_lag_per_partition_and_an_idle_query_keeps_its_heartbeat(kafka_settings, spark, tmp_path):
    """Capped batches leave records behind, which the pulses count per partition; once everything
    is read the query idles, and Spark's idle reports (every 10 s) still touch the heartbeat file."""
    import threading
    import time

    settings = kafka_settings.replace(sinks=("console",), max_offsets_per_trigger=100)
    assert produce(settings, Simulator(sensors=10, seed=5), count=600, rate=0).acked == 600
    pulses: list[streaming.Pulse] = []
    beat = tmp_path / "alive"
    stop = threading.Event()

    def idle_twice(pulse: streaming.Pulse) -> None:
        pulses.append(pulse)
        if sum(p.batch_id is None for p in pulses) >= 2:
            stop.set()

    timer = threading.Timer(180, stop.set)  # a bound, should the idle reports never come
    timer.start()
    try:
        streaming.run(spark, settings, stop=stop, say=lambda _: None, on_pulse=idle_twice, heartbeat_file=beat)
    finally:
        timer.cancel()
    batches = [p for p in pulses if p.batch_id is not None]
    idle = [p for p in pulses if p.batch_id is None]
    assert len(idle) >= 2, f"no idle reports within 180 s: {pulses}"
    assert {topic for topic, _ in batches[0].lag} == {settings.input_topic}
    # the first batch read about 100 of the 600 (Spark shares the cap among partitions, rounding down)
    assert 500 <= sum(batches[0].lag.values()) <= 502, batches[0]
    assert sum(batches[-1].lag.values()) == 0 and set(idle[-1].lag.values()) == {0}
    assert idle[-1].at > batches[-1].at
    assert abs(beat.stat().st_mtime - idle[-1].at.timestamp()) < 2, "the heartbeat follows the idle reports"
    assert time.time() - beat.stat().st_mtime < 30


@pytest.mark.parametrize("detect", ["off", "on"])
def test_one_read_and_one_parse_serve_the_windows_and_the_dead_letters(kafka_settings, spark, detect):
    """The windows (Spark's state) and each record's own row (with the detector: its input) read one
    shuffle: Spark reuses the exchange, so the topic is read and parsed once per batch (numInputRows
    = the records read). A change that makes the branches need different columns would silently
    double the work."""
    settings = kafka_settings.replace(detect=detect)
    sim = RecordingSimulator(sensors=3, seed=9, clock=stepping_clock(step=timedelta(seconds=1)), bad_ratio=0.2)
    assert produce(settings, sim, count=40, rate=0).acked == 40
    with state_session(spark, settings) as session:
        query = (
            streaming.stream_plan(streaming.read_source(session, settings), settings)
            .writeStream.outputMode("update")
            .foreachBatch(lambda rows, batch_id: rows.count())
            .option("checkpointLocation", str(Path(settings.checkpoint_location) / "plan"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
    plan = query._jsq.explainInternal(False)  # the last batch's physical plan
    assert "ReusedExchange" in plan, plan
    assert query.recentProgress[0].numInputRows == 40
