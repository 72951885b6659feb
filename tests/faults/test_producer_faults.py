"""The producer under broker faults: what it acknowledged is in the topic exactly once, what failed
is counted and printed, and the exit code says which."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import pytest

from sensorstream.config import PRODUCER_CLIENTS
from sensorstream.status import end_offsets
from support.cli import cli
from support.cluster import env_for, popen, read_all, readings_in

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.slow]

DONE = re.compile(r"done: sent (\d+), acked (\d+), failed (\d+)")


def totals(text: str) -> tuple[int, int, int]:
    found = DONE.findall(text)
    assert len(found) == 1, text[-3000:]
    return tuple(int(n) for n in found[0])


RATE = 1500  # readings/s of the leader bounce's producer


def wait_delivered(settings, started: float, proc: subprocess.Popen, timeout: float = 60) -> float:
    """Wait until the input topic holds what a producer at RATE since `started` has sent, but for
    its last 3 s (start-up, linger, the request in flight); the seconds waited. Readings that failed
    never arrive: then it gives up after `timeout`, and the test's totals say what failed."""
    begin = time.monotonic()
    while proc.poll() is None and time.monotonic() - begin < timeout:
        expected = RATE * (time.monotonic() - started - 3)
        if sum(end_offsets(settings, settings.input_topic).values()) >= expected:
            break
        time.sleep(0.5)
    return time.monotonic() - begin


def seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def test_leader_bounce_while_producing(cluster, cli_env, tmp_path, figures):
    """Kill -9 the leader of partition 0 five times during a 150k-reading run; `local up` restarts it.

    One broker is down at a time, and each reading lives through one leader change at most: the
    next kill waits until the restarted broker's replicas are in sync again, as a rolling restart
    does (sooner, it takes a partition's second in-sync replica, or its only one: two brokers down,
    for that partition, which is test_min_isr_two_brokers_down), and until the producer has delivered
    what it held during the last one (sooner, a reading sent just after a kill waits out that
    election and the next: 2 x 12 s, past the delivery timeout). So each partition has a leader with
    two in-sync replicas again 10 to 13 s after a kill (the broker session timeout, then the
    election): well within the 25 s delivery timeout, so no reading may fail."""
    settings = cluster.settings(tmp_path)
    log = tmp_path / "produce.log"
    env = {**env_for(cli_env, settings), "PYTHONFAULTHANDLER": "1"}  # a stuck run dumps its threads on SIGABRT
    started = time.monotonic()
    proc = popen(env, "produce", "--rate", str(RATE), "--count", "150000", "--workers", "1", log=log)
    bounced, in_sync_after, delivered_after = [], [], []
    try:
        time.sleep(2)
        for _ in range(5):
            if proc.poll() is not None:
                break
            leader = cluster.leader(settings.input_topic, 0)
            cluster.kill(leader)
            bounced.append(leader)
            time.sleep(1)
            cluster.up()
            in_sync_after.append(cluster.wait_in_sync(settings.input_topic))
            delivered_after.append(wait_delivered(settings, started, proc))
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail("produce did not finish within 240 s of the last bounce: " + log.read_text()[-6000:])
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    sent, acked, failed = totals(out)
    in_topic = readings_in(read_all(cluster.bootstrap, settings.input_topic))
    duplicated = sum(n - 1 for n in in_topic.values() if n > 1)
    figures(
        f"leaders killed {len(bounced)} (nodes {bounced}; after each restart, in sync again in "
        f"{seconds(in_sync_after)} s, the producer's backlog delivered {seconds(delivered_after)} s later); "
        f"sent {sent}, acked {acked}, failed {failed}; "
        f"in topic {sum(in_topic.values())} ({len(in_topic)} distinct), duplicated {duplicated}, "
        f"lost (acked but absent) {max(0, acked - len(in_topic))}; exit {code}"
    )
    assert len(bounced) == 5
    assert sent == 150_000 and acked + failed == sent
    assert duplicated == 0  # idempotence: a retry never writes a reading twice
    assert acked <= len(in_topic) <= sent  # every acknowledged reading is there; a failed one may be too
    assert failed == 0 and code == 0, out[-6000:]


def test_min_isr_two_brokers_down(cluster, cli_env, tmp_path, figures):
    """Two of three brokers die while producing with acks=all: errors, counted and printed; nothing
    acknowledged is lost once they are back."""
    settings = cluster.settings(tmp_path)
    log = tmp_path / "produce.log"
    proc = popen(
        env_for(cli_env, settings),
        "produce",
        "--rate",
        "500",
        "--count",
        "0",
        "--duration",
        "20",
        "--workers",
        "1",
        log=log,
    )
    try:
        time.sleep(4)
        down = [n for n in (1, 2, 3) if n != cluster.leader(settings.input_topic, 0)][:1]
        down.append(cluster.leader(settings.input_topic, 0))
        for node in down:
            cluster.kill(node)
        code = proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    sent, acked, failed = totals(out)
    cluster.up()
    in_topic = readings_in(read_all(cluster.bootstrap, settings.input_topic))
    duplicated = sum(n - 1 for n in in_topic.values() if n > 1)
    errors = re.search(r"errors: (.*)", out)
    figures(
        f"brokers {down} killed 4 s into a 20 s run; sent {sent}, acked {acked}, failed {failed} "
        f"({errors.group(1) if errors else 'no errors'}); after the brokers returned: in topic "
        f"{sum(in_topic.values())} ({len(in_topic)} distinct), duplicated {duplicated}, failed yet written "
        f"{len(in_topic) - acked}; exit {code}"
    )
    assert "Traceback" not in out
    assert "readings were not acknowledged (a reading fails after 25 s without one, 20 s after a stop)" in out
    assert failed > 0 and acked + failed == sent
    assert code == 1
    assert duplicated == 0
    assert acked <= len(in_topic) <= sent


def test_quorum_loss_is_named(cluster, cli_env, tmp_path, figures):
    """With two of three controllers down the cluster has no quorum: one line that says so."""
    settings = cluster.settings(tmp_path)
    for node in (2, 3):
        cluster.kill(node)
    started = time.monotonic()
    result = cli(env_for(cli_env, settings), "produce", "--count", "10", timeout=180)
    took = time.monotonic() - started
    cluster.up()
    figures(f"exit {result.returncode} after {took:.0f} s: {result.stderr.strip().splitlines()[-1:]}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("sensorstream: error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-3000:]
    assert "quorum" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("run", range(2))
def test_sigterm_to_produce(cluster, cli_env, tmp_path, figures, run):
    """SIGTERM at a random moment: a clean exit, and the totals printed are what is in Kafka."""
    settings = cluster.settings(tmp_path)
    log = tmp_path / "produce.log"
    proc = popen(env_for(cli_env, settings), "produce", "--rate", "0", "--count", "0", log=log)
    wait = random.uniform(2, 6)
    time.sleep(wait)
    proc.send_signal(signal.SIGTERM)  # the Python process only, as Kubernetes' kubelet would
    code = proc.wait(timeout=120)
    sent, acked, failed = totals(log.read_text())
    in_topic = readings_in(read_all(cluster.bootstrap, settings.input_topic))
    figures(
        f"SIGTERM after {wait:.1f} s: exit {code}; sent {sent}, acked {acked}, failed {failed}; "
        f"in topic {sum(in_topic.values())} ({len(in_topic)} distinct)"
    )
    assert code == 0 and failed == 0
    assert sent == acked == sum(in_topic.values()) == len(in_topic)


#: The seconds a Pod gets from the kubelet's SIGTERM to its SIGKILL (the chart's
#: terminationGracePeriodSeconds, Kubernetes' default).
GRACE_S = 30


@pytest.mark.parametrize("client", PRODUCER_CLIENTS)
def test_sigterm_while_no_broker_answers(cluster, cli_env, tmp_path, figures, client):
    """Every broker frozen (SIGSTOP: connections stay open, requests go unanswered) under a running
    producer, then SIGTERM and, 30 s later, SIGKILL, as the kubelet stops a Pod. The totals come
    before the SIGKILL would lose them, every reading acked or failed; once the brokers answer
    again, the topic holds every acknowledged reading once and no more than were sent."""
    settings = cluster.settings(tmp_path)
    log = tmp_path / "produce.log"
    proc = popen(
        env_for(cli_env, settings),
        "produce",
        "--rate",
        "500",
        "--count",
        "0",
        "--workers",
        "1",
        "--client",
        client,
        log=log,
    )
    frozen = [cluster.pid(node) for node in (1, 2, 3)]
    try:
        time.sleep(4)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(15)  # past the 10 s request timeout: the client has given up on its requests once
        proc.send_signal(signal.SIGTERM)  # the Python process only, as the kubelet would
        stopping = time.monotonic()
        try:
            code = proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stopped_in = time.monotonic() - stopping
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    cluster.wait_in_sync(settings.input_topic)
    in_topic = readings_in(read_all(cluster.bootstrap, settings.input_topic))
    duplicated = sum(n - 1 for n in in_topic.values() if n > 1)
    figures(
        f"{client}: brokers frozen 15 s, then SIGTERM: exit {code} {stopped_in:.1f} s later (SIGKILL at {GRACE_S} s); "
        f"{next(iter(re.findall(r'done: .*', out)), 'no totals')}; in topic {sum(in_topic.values())}"
    )
    sent, acked, failed = totals(out)
    assert code == 1 and "Traceback" not in out, out[-3000:]
    assert failed > 0 and acked + failed == sent
    assert duplicated == 0
    assert acked <= len(in_topic) <= sent
