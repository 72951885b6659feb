"""The stream under faults: its driver killed, a broker restarted under it, data arriving while it
is stopped, SIGTERM. The outputs are checked against the truth computed in plain Python from what
was produced: the output topic (last value per key), the parquet windows (each once), the dead
letters (every reject, with a key a consumer can de-duplicate)."""

from __future__ import annotations

import json
import random
import re
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from sensorstream.producer import produce
from support.cli import cli
from support.cluster import env_for, kill_tree, popen, read_all
from support.readings import T0, RecordingSimulator, assert_stats_equal, reference_windows, stepping_clock

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

WINDOW = timedelta(minutes=5)
STREAM = ("stream", "--sinks", "kafka,parquet", "--max-offsets-per-trigger", "1500")
BATCH = re.compile(r"batch (\d+): ([\d,]+) records \(([\d,]+) rejected")


def send(settings, count: int, seed: int, hour: int = 0) -> list:
    """`count` simulated records (5% malformed), 0.1 s of event time apart from T0 + `hour` hours."""
    sim = RecordingSimulator(sensors=10, seed=seed, bad_ratio=0.05,
                             clock=stepping_clock(T0 + timedelta(hours=hour), timedelta(milliseconds=100)))
    stats = produce(settings, sim, count=count, rate=0)
    assert stats.acked == count, stats.summary()
    return sim.sent


def wait_for(log, pattern: str, timeout: float = 240, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"stream exited ({proc.returncode}) before {pattern!r}: "
                                 + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout} s: " + log.read_text(errors="replace")[-3000:])


def drain(env, log_dir, *extra) -> str:
    result = cli(env, *STREAM, "--available-now", *extra, timeout=600)
    (log_dir / "drain.log").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


class Outcome:
    """What the stream wrote, against the truth of what was produced."""

    def __init__(self, cluster, spark, settings, sent):
        readings = [r.reading.to_json() for r in sent if r.kind == "reading"]
        self.truth = reference_windows(readings, WINDOW)
        self.rejects = sum(1 for r in sent if r.kind not in ("reading", "late"))
        latest = {}
        for record in read_all(cluster.bootstrap, settings.output_topic):
            latest[record.key.decode()] = json.loads(record.value)
        self.output = latest
        parquet = spark.read.parquet(str(settings.parquet_dir)).collect() if settings.parquet_dir.exists() else []
        self.parquet = [row.asDict() for row in parquet]
        dead = read_all(cluster.bootstrap, settings.dead_letter_topic)
        self.dead_letters = len(dead)
        self.dead_keys = {record.key.decode() for record in dead}
        self.dead_bodies = [json.loads(record.value) for record in dead]

    def line(self) -> str:
        keys = {(r["window_start"], r["sensor_id"]) for r in self.parquet}
        return (f"truth {len(self.truth)} windows; output topic {len(self.output)} keys; parquet {len(self.parquet)} "
                f"rows ({len(self.parquet) - len(keys)} repeated); rejects {self.rejects}, dead letters "
                f"{self.dead_letters} ({len(self.dead_keys)} distinct keys, "
                f"{self.dead_letters - len(self.dead_keys)} replayed copies)")

    def check(self) -> None:
        assert len(self.output) == len(self.truth)
        for key, value in self.output.items():
            sensor, start = key.split("|")
            start_dt = datetime.fromisoformat(start).astimezone(timezone.utc)
            assert_stats_equal(value, self.truth[(start_dt, sensor)])
        keys = [(r["window_start"].astimezone(timezone.utc), r["sensor_id"]) for r in self.parquet]
        assert self.parquet and len(keys) == len(set(keys))  # each final window once
        for row, key in zip(self.parquet, keys):
            assert_stats_equal(row, self.truth[key])
        assert len(self.dead_keys) == self.rejects  # every reject at least once
        for body in self.dead_bodies:  # the key names the record: topic|partition|offset
            assert body["source_topic"] and body["source_offset"] is not None
        assert {f"{b['source_topic']}|{b['source_partition']}|{b['source_offset']}" for b in self.dead_bodies} \
            == self.dead_keys


def test_driver_killed_mid_batch(cluster, spark, cli_env, tmp_path, figures):
    """kill -9 the stream's process tree twice mid-run, restart on the same checkpoint, drain."""
    settings = cluster.settings(tmp_path)
    sent = send(settings, 12_000, seed=41)
    env = env_for(cli_env, settings)
    kills = []
    for round_ in range(2):
        log = tmp_path / f"stream-{round_}.log"
        proc = popen(env, *STREAM, "--available-now", log=log)
        try:
            wait_for(log, rf"batch {3 * (round_ + 1)}:", proc=proc)
            time.sleep(random.uniform(0.1, 1.0))  # somewhere inside the next batch
        finally:
            kill_tree(proc)
        kills.append(len(BATCH.findall(log.read_text())))
    drained = drain(env, tmp_path)
    outcome = Outcome(cluster, spark, settings, sent)
    figures(f"killed after {kills} batch lines, then drained ({len(BATCH.findall(drained))} batches); "
            + outcome.line())
    outcome.check()


def test_data_produced_while_stopped(cluster, spark, cli_env, tmp_path, figures):
    """Readings sent while the stream is stopped are processed after the restart, once."""
    settings = cluster.settings(tmp_path)
    env = env_for(cli_env, settings)
    first = send(settings, 6_000, seed=51)
    one = drain(env, tmp_path)
    second = send(settings, 6_000, seed=52, hour=1)
    two = drain(env, tmp_path)
    outcome = Outcome(cluster, spark, settings, first + second)
    counted = [sum(int(n.replace(",", "")) for _, n, _ in BATCH.findall(text)) for text in (one, two)]
    figures(f"records counted by run 1 {counted[0]}, run 2 {counted[1]} (sent {len(first)} + {len(second)}); "
            + outcome.line())
    assert counted == [len(first), len(second)]
    outcome.check()


def test_broker_restart_while_streaming(cluster, spark, cli_env, tmp_path, figures):
    """A clean restart (SIGTERM) of each broker in turn while the stream runs: it keeps running, and its
    final windows equal the truth."""
    settings = cluster.settings(tmp_path)
    env = env_for(cli_env, settings)
    log = tmp_path / "stream.log"
    proc = popen(env, *STREAM, "--trigger", "1 second", log=log)
    sent = []
    try:
        wait_for(log, r"streaming ", proc=proc)
        sent += send(settings, 4_000, seed=61)
        for node in (1, 2, 3):
            cluster.kill(node, signal.SIGTERM)
            cluster.up()
        sent += send(settings, 4_000, seed=62, hour=1)
        expected = len(sent)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            counted = sum(int(n.replace(",", "")) for _, n, _ in BATCH.findall(log.read_text()))
            if counted >= expected or proc.poll() is not None:
                break
            time.sleep(1)
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    outcome = Outcome(cluster, spark, settings, sent)
    figures(f"3 brokers restarted in turn; stream alive {alive}, exit {code}, records counted {counted} of "
            f"{expected}; " + outcome.line())
    assert alive and code == 0
    outcome.check()


def test_sigterm_to_stream(cluster, spark, cli_env, tmp_path, figures):
    """SIGTERM at a random moment of a drain: a clean exit; a restart finishes the job; the totals add up."""
    settings = cluster.settings(tmp_path)
    env = env_for(cli_env, settings)
    sent = send(settings, 12_000, seed=71)  # 20 min of event time: the first window per sensor ends final
    log = tmp_path / "stream.log"
    proc = popen(env, *STREAM, "--available-now", log=log)
    wait_for(log, r"batch 1:", proc=proc)
    time.sleep(random.uniform(0, 3))
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    text = log.read_text()
    first = sum(int(n.replace(",", "")) for _, n, _ in BATCH.findall(text))
    second = sum(int(n.replace(",", "")) for _, n, _ in BATCH.findall(drain(env, tmp_path)))
    outcome = Outcome(cluster, spark, settings, sent)
    figures(f"exit {code}; records counted before SIGTERM {first}, after restart {second}, topic {len(sent)}; "
            + outcome.line())
    assert code == 0 and "Traceback" not in text and "stream stopped" in text
    assert first + second == len(sent)  # a batch cut short is not counted, and is replayed once
    outcome.check()
