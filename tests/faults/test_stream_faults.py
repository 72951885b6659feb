"""The stream under faults: its driver killed, a broker restarted under it, data arriving while it
is stopped, SIGTERM, partitions added under it, poison pills at volume. The outputs are checked
against the truth computed in plain Python from what was produced: the output topic (last value
per key), the parquet windows (each once), the dead letters (every reject, with a key a consumer
can de-duplicate)."""

from __future__ import annotations

import json
import random
import re
import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from kafka.admin import NewPartitions

from sensorstream.producer import produce
from support.cli import cli
from support.cluster import env_for, kill_tree, popen, read_all
from support.detection import FaultyRun
from support.readings import (
    T0,
    RecordingSimulator,
    assert_stats_equal,
    reference_reason,
    reference_windows,
    stepping_clock,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

WINDOW = timedelta(minutes=5)
STREAM = ("stream", "--sinks", "kafka,parquet", "--max-offsets-per-trigger", "1500")
BATCH = re.compile(r"batch (\d+): ([\d,]+) records \(([\d,]+) rejected")
LATE = re.compile(r"batch \d+: [\d,]+ records \([\d,]+ rejected, ([\d,]+) late dropped")


def send(settings, count: int, seed: int, hour: int = 0) -> list:
    """`count` simulated records (5% malformed), 0.1 s of event time apart from T0 + `hour` hours."""
    sim = RecordingSimulator(
        sensors=10,
        seed=seed,
        bad_ratio=0.05,
        clock=stepping_clock(T0 + timedelta(hours=hour), timedelta(milliseconds=100)),
    )
    stats = produce(settings, sim, count=count, rate=0)
    assert stats.acked == count, stats.summary()
    return sim.sent


def number(text: str) -> int:
    return int(text.replace(",", ""))


def counted_in(text: str) -> int:
    """Records the stream's progress lines in `text` counted."""
    return sum(number(n) for _, n, _ in BATCH.findall(text))


def wait_counted(log, expected: int, proc, timeout: float = 300) -> int:
    """Until the stream has counted `expected` records (or exited, or the time is up): the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if counted_in(log.read_text(errors="replace")) >= expected:
            break
        time.sleep(0.5)
    return counted_in(log.read_text(errors="replace"))


def wait_for(log, pattern: str, timeout: float = 240, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(errors="replace")):
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"stream exited ({proc.returncode}) before {pattern!r}: " + log.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout} s: " + log.read_text(errors="replace")[-3000:])


def drain(env, log_dir, *extra) -> str:
    result = cli(env, *STREAM, "--available-now", *extra, timeout=600)
    (log_dir / "drain.log").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def kill_mid_run(env, log_dir, name: str, rounds: int) -> list[int]:
    """Start the stream `rounds` times on its checkpoint and kill -9 its process tree inside a batch
    (after batch 3, 6, ...); the batch lines each run logged before its kill."""
    killed_after = []
    for round_ in range(rounds):
        log = log_dir / f"{name}-{round_}.log"
        proc = popen(env, *STREAM, "--available-now", log=log)
        try:
            wait_for(log, rf"batch {3 * (round_ + 1)}:", proc=proc)
            time.sleep(random.uniform(0.1, 1.0))  # somewhere inside the next batch
        finally:
            kill_tree(proc)
        killed_after.append(len(BATCH.findall(log.read_text())))
    return killed_after


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
        return (
            f"truth {len(self.truth)} windows; output topic {len(self.output)} keys; parquet {len(self.parquet)} "
            f"rows ({len(self.parquet) - len(keys)} repeated); rejects {self.rejects}, dead letters "
            f"{self.dead_letters} ({len(self.dead_keys)} distinct keys, "
            f"{self.dead_letters - len(self.dead_keys)} replayed copies)"
        )

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
        assert {
            f"{b['source_topic']}|{b['source_partition']}|{b['source_offset']}" for b in self.dead_bodies
        } == self.dead_keys


def test_driver_killed_mid_batch(cluster, spark, cli_env, tmp_path, figures):
    """kill -9 the stream's process tree twice mid-run, restart on the same checkpoint, drain."""
    settings = cluster.settings(tmp_path)
    sent = send(settings, 12_000, seed=41)
    env = env_for(cli_env, settings)
    kills = kill_mid_run(env, tmp_path, "stream", 2)
    drained = drain(env, tmp_path)
    outcome = Outcome(cluster, spark, settings, sent)
    figures(
        f"killed after {kills} batch lines, then drained ({len(BATCH.findall(drained))} batches); " + outcome.line()
    )
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
    figures(
        f"records counted by run 1 {counted[0]}, run 2 {counted[1]} (sent {len(first)} + {len(second)}); "
        + outcome.line()
    )
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
        for node in (1, 2, 3):  # a rolling restart: the next broker only once every replica is in sync
            cluster.kill(node, signal.SIGTERM)
            cluster.up()
            cluster.wait_in_sync(settings.input_topic, settings.output_topic, settings.dead_letter_topic)
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
    figures(
        f"3 brokers restarted in turn; stream alive {alive}, exit {code}, records counted {counted} of "
        f"{expected}; " + outcome.line()
    )
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
    figures(
        f"exit {code}; records counted before SIGTERM {first}, after restart {second}, topic {len(sent)}; "
        + outcome.line()
    )
    assert code == 0 and "Traceback" not in text and "stream stopped" in text
    assert first + second == len(sent)  # a batch cut short is not counted, and is replayed once
    outcome.check()


def committed_offsets(settings) -> dict[int, int]:
    """The input offsets the stream's newest committed batch ended at, per partition."""
    folder = settings.checkpoint_location / "stream"
    newest = max(int(p.name) for p in (folder / "commits").iterdir() if p.name.isdigit())
    return {
        int(p): end
        for p, end in json.loads((folder / "offsets" / str(newest)).read_text().splitlines()[2])[
            settings.input_topic
        ].items()
    }


@pytest.mark.parametrize("behind", [False, True], ids=["caught-up", "behind"])
def test_partitions_added_while_streaming(cluster, spark, cli_env, tmp_path, figures, behind):
    """The input topic grows from 3 to 6 partitions under a running stream (--max-offsets-per-trigger
    1500), caught up or with 50 minutes of readings still to read: every record of the new partitions
    is read once, and every reading is either in its window or counted late.

    Caught up, nothing is late and the windows equal the truth. Behind is the hard case: Spark reads
    an added partition from its first offset and every partition's backlog in proportion to its
    size, so one batch holds the old partitions' oldest readings and the new partitions' newest.
    Spark's watermark is one for the whole topic (the newest event time read, minus 10 minutes), so
    the old partitions' backlog that falls behind it is dropped as late; the stream counts each
    such reading (jobs/README.md, "The watermark rule")."""
    settings = cluster.settings(tmp_path)
    env = env_for(cli_env, settings)
    clock = stepping_clock(T0, timedelta(milliseconds=500))  # 30 sensors: 6,000 readings are 50 minutes
    first = RecordingSimulator(sensors=30, seed=121, bad_ratio=0.05, clock=clock)
    second = RecordingSimulator(sensors=30, seed=122, bad_ratio=0.05, clock=clock)
    log = tmp_path / "stream.log"
    if behind:
        assert produce(settings, first, count=6_000, rate=0).acked == 6_000
    proc = popen(env, *STREAM, "--trigger", "1 second", log=log)
    try:
        wait_for(log, r"streaming ", proc=proc)
        if not behind:
            assert produce(settings, first, count=6_000, rate=0).acked == 6_000
            wait_counted(log, 6_000, proc)
        before = counted_in(log.read_text(errors="replace"))
        admin = cluster.admin()
        try:
            admin.create_partitions({settings.input_topic: NewPartitions(total_count=6)})
        finally:
            admin.close()
        # Every broker's metadata, not one client's: Spark's next batch may ask another broker, and
        # then read the old partitions' new readings a batch before the new partitions' (their
        # readings behind the watermark: late, seen once in CI with 100 late).
        deadline = time.monotonic() + 30
        for broker in cluster.bootstrap.split(","):
            while len(cluster.partitions(settings.input_topic, broker)) < 6 and time.monotonic() < deadline:
                time.sleep(0.2)
        assert produce(settings, second, count=6_000, rate=0).acked == 6_000
        total = wait_counted(log, 12_000, proc)
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    text = log.read_text(errors="replace")
    records = read_all(cluster.bootstrap, settings.input_topic)
    ends = {p: 0 for p in range(6)}
    for record in records:
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    new = sum(1 for record in records if record.partition >= 3)
    late = sum(number(n) for n in LATE.findall(text))
    outcome = Outcome(cluster, spark, settings, first.sent + second.sent)
    got = {key: value["num_readings"] for key, value in outcome.output.items()}
    short = [
        (n["num_readings"], got.get(f"{sensor}|{start:%Y-%m-%dT%H:%M:%SZ}", 0))
        for (start, sensor), n in outcome.truth.items()
    ]
    wrong = sum(1 for want, have in short if want != have)
    missing = sum(want - have for want, have in short)
    figures(
        f"3 -> 6 partitions after {before} of 6000 records counted; records per partition {ends} ({new} in the "
        f"new ones); stream alive {alive}, exit {code}; records counted {total} of 12000, {late} late dropped, "
        f"{wrong} window(s) short by {missing} reading(s); committed offsets {committed_offsets(settings)}; "
        + outcome.line()
    )
    assert alive and code == 0 and new > 0
    assert total == 12_000 and committed_offsets(settings) == ends  # every partition read to its end, once
    assert missing == late  # every reading in its window or counted late
    if not behind:
        assert late == 0 and wrong == 0
        outcome.check()


POISON = re.compile(
    r"sensorstream: error: micro-batch(?:es)? (?:(\d+)-)?(\d+) rejected ([\d,]+) of ([\d,]+) "
    r"records \(([\d.]+)%\), over --max-reject-ratio 0\.3; see the dead-letter topic (\S+) "
)


def test_poison_pills_at_volume(cluster, spark, cli_env, tmp_path, figures):
    """10% malformed records at about 10,000/s while the stream runs with --max-reject-ratio 0.3: every
    one in the dead-letter topic under its own topic|partition|offset key, the windows those of the
    good readings alone. Then a producer sends 20,000 records, 80% garbage: the first batch over the
    limit is still written and committed, the stream exits 1 with one line, and a restart without
    the limit reads the rest: nothing lost, nothing counted twice."""
    settings = cluster.settings(tmp_path).replace(producer_client="confluent-kafka")
    env = env_for(cli_env, settings)
    clock = stepping_clock(T0, timedelta(milliseconds=20))  # 10 sensors: a reading each every 0.2 s
    log = tmp_path / "stream.log"
    proc = popen(
        env,
        "stream",
        "--sinks",
        "kafka,parquet",
        "--max-offsets-per-trigger",
        "5000",
        "--max-reject-ratio",
        "0.3",
        log=log,
    )
    try:
        wait_for(log, r"streaming ", proc=proc)
        volume = RecordingSimulator(sensors=10, seed=111, bad_ratio=0.1, clock=clock)
        pace = produce(settings, volume, count=50_000, rate=10_000)
        assert pace.acked == 50_000, pace.summary()
        before = wait_counted(log, 50_000, proc)
        alive = proc.poll() is None
        garbage = RecordingSimulator(sensors=10, seed=112, bad_ratio=0.8, clock=clock)
        started = time.monotonic()
        assert produce(settings, garbage, count=20_000, rate=10_000).acked == 20_000
        code = proc.wait(timeout=240)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    text = log.read_text(errors="replace")
    errors = [line for line in text.splitlines() if line.startswith("sensorstream: error:")]
    stop = POISON.search(text)
    batches = {int(b): (number(n), number(r)) for b, n, r in BATCH.findall(text)}
    judged = [r / n for n, r in list(batches.values())[:-1] if n >= 100]  # smaller ones add up (streaming.py)
    worst = max(judged or [0])
    restarted = counted_in(drain(env, tmp_path))
    sent = volume.sent + garbage.sent
    outcome = Outcome(cluster, spark, settings, sent)
    wanted = {
        f"{r.topic}|{r.partition}|{r.offset}"
        for r in read_all(cluster.bootstrap, settings.input_topic)
        if reference_reason(r.value) is not None
    }
    figures(
        f"50,000 sent at {pace.rate:,.0f}/s, 10% malformed: stream alive {alive}, {before} counted in "
        f"{len(batches) - 1} batches (worst reject ratio {worst:.1%}); then 20,000 at 80%: exit {code} after "
        f"{took:.1f} s, {errors}; restart counted {restarted} (total {counted_in(text) + restarted} of "
        f"{len(sent)}); " + outcome.line()
    )
    assert alive and before == 50_000 and pace.rate > 5_000
    assert code == 1 and len(errors) == 1 and stop, text[-3000:]
    assert "Traceback" not in text
    last = int(stop.group(2))  # small batches are judged together with the next (streaming.py)
    first = int(stop.group(1) or last)
    rejected, of = number(stop.group(3)), number(stop.group(4))
    judged = [batches[b] for b in range(first, last + 1)]
    assert (sum(n for n, _ in judged), sum(r for _, r in judged)) == (of, rejected) and rejected / of > 0.3
    assert stop.group(6) == settings.dead_letter_topic and f"(it goes on after micro-batch {last})" in errors[0]
    assert "--max-reject-ratio (STREAM_MAX_REJECT_RATIO)" in errors[0]
    assert counted_in(text) + restarted == len(sent)  # the stopping batch was committed: not read again
    assert outcome.dead_keys == wanted and len(wanted) == outcome.rejects
    outcome.check()


def test_detector_alerts_after_kill_and_replay(cluster, spark, cli_env, tmp_path, figures):
    """STREAM_DETECT=on, the stream's process tree killed (-9) twice mid-run and restarted on its
    checkpoint: the alerts topic, de-duplicated by key, holds exactly the alerts of a run never
    killed over the same readings (each replayed batch writes its alerts again, under the same keys)."""
    settings = cluster.settings(tmp_path / "killed")
    run = FaultyRun(20_000)
    run.send(cluster.bootstrap, settings.input_topic)

    def alerts_of(name: str, kills: int) -> tuple[dict[str, dict], int, list[int]]:
        topic = f"alerts-{name}-{settings.input_topic}"
        cluster.create(topic, 1)
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            **env_for(cli_env, settings),
            "STREAM_DETECT": "on",
            "KAFKA_ALERTS_TOPIC": topic,
            "CHECKPOINT_LOCATION": str(folder / "checkpoints"),
            "STREAM_PARQUET_DIR": str(folder / "windows"),
        }
        killed_after = kill_mid_run(env, tmp_path, name, kills)
        drain(env, folder)
        records = read_all(cluster.bootstrap, topic)
        return {r.key.decode(): json.loads(r.value) for r in records}, len(records), killed_after

    truth, _, _ = alerts_of("once", kills=0)
    replayed, written, kills = alerts_of("killed", kills=2)
    kinds = Counter(a["kind"] for a in truth.values())
    figures(
        f"killed after {kills} batch lines, then drained: {written} alert records, {len(replayed)} distinct keys "
        f"({written - len(replayed)} replayed copies); the run never killed: {len(truth)} alerts ({dict(kinds)})"
    )
    assert kinds["spike"] > 0 and kinds["stuck"] > 0 and kinds["silent"] == 1
    assert replayed == truth
