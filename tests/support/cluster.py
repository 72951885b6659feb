"""A real three-broker cluster for the fault tests, and the faults: kill a broker, bring it back.

Started by the same code as `sensorstream local up --brokers 3`, on free ports; topics have three
replicas and min.insync.replicas=2, so one broker down loses nothing and two down stop acks=all.
Only the processes this cluster started are ever signalled, by their pid files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from sensorstream.local.broker import LocalKafka
from sensorstream.local.ports import free_ports
from sensorstream.local.topics import TopicSpec, ensure_topics

from .broker import base_settings, read_all  # noqa: F401 - read_all: the faults tests import it from here
from .places import KAFKA_JARS, SPARK_JARS

BROKERS = 3
MIN_ISR = "2"


class FaultCluster:
    def __init__(self, state: Path):
        self.kafka = LocalKafka(state, brokers=BROKERS, port=free_ports(BROKERS), jars_dir=KAFKA_JARS)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def up(self) -> None:
        """Start every broker that is not running (all of them the first time) and wait for all."""
        self.kafka.up()

    def down(self) -> None:
        self.kafka.down()

    def pid(self, node_id: int) -> int:
        return next(n.pid for n in self.kafka.status() if n.node_id == node_id)

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Signal one broker this cluster started, and wait until it is gone."""
        pid = self.pid(node_id)
        os.kill(pid, sig)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:  # not our child (started by another fixture process): poll
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"broker {node_id} (pid {pid}) did not stop")

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(bootstrap_servers=self.bootstrap.split(","), client_id="faults-admin")

    def leader(self, topic: str, partition: int = 0) -> int:
        admin = self.admin()
        try:
            for described in admin.describe_topics([topic]):
                for p in described["partitions"]:
                    if p["partition"] == partition:
                        return p["leader"]
        finally:
            admin.close()
        raise LookupError(f"{topic}-{partition}")

    def wait_in_sync(self, *topics: str, timeout: float = 120) -> float:
        """Wait until every replica of every partition of `topics` is in sync again; the seconds waited.

        A broker that answers again after a restart is not yet a replica anyone can count on: it still
        has to fetch what it missed and be added back to each partition's in-sync set. Killing another
        broker before that leaves those partitions with one in-sync replica (under min.insync.replicas,
        so acks=all fails) or none (no leader): two brokers down, for them. A rolling restart waits for
        this between brokers, and so do the tests of one broker down at a time."""
        start = time.monotonic()
        lagging: list[str] = []
        while time.monotonic() - start < timeout:
            try:
                admin = self.admin()
                try:
                    described = admin.describe_topics(list(topics))
                finally:
                    admin.close()
            except KafkaError:
                time.sleep(0.5)
                continue
            lagging = [
                f"{d['topic']}-{p['partition']} (in sync {sorted(p['isr'])} of {sorted(p['replicas'])})"
                for d in described
                for p in d["partitions"]
                if set(p["isr"]) != set(p["replicas"])
            ]
            if not lagging:
                return time.monotonic() - start
            time.sleep(0.5)
        raise RuntimeError(
            f"replicas not in sync {timeout:.0f} s after the restart: {', '.join(lagging) or 'no answer'}"
        )

    def partitions(self, topic: str, broker: str | None = None) -> set[int]:
        """The topic's partitions, as a new client's metadata has them (from `broker`, one of the
        bootstrap addresses, when given: each broker's metadata is updated on its own)."""
        consumer = KafkaConsumer(bootstrap_servers=[broker] if broker else self.bootstrap.split(","))
        try:
            return consumer.partitions_for_topic(topic) or set()
        finally:
            consumer.close()

    def settings(self, folder: Path, partitions: int = 3, **overrides):
        """Settings on this cluster with fresh topics (three replicas, min.insync.replicas=2)."""
        tag = uuid.uuid4().hex[:10]
        settings = base_settings(
            bootstrap_servers=self.bootstrap,
            checkpoint_location=str(folder / "checkpoints"),
            parquet_dir=str(folder / "windows"),
            report_dir=str(folder / "reports"),
            jars_dir=str(SPARK_JARS),
            **overrides,
        ).replace(input_topic=f"in-{tag}", output_topic=f"out-{tag}", dead_letter_topic=f"dlq-{tag}")
        self.create(settings.input_topic, partitions)
        self.create(settings.output_topic, 3, {"cleanup.policy": "compact"})
        self.create(settings.dead_letter_topic, 1)
        return settings

    def create(self, topic: str, partitions: int, config: dict | None = None) -> None:
        ensure_topics(
            self.bootstrap,
            [
                TopicSpec(
                    topic,
                    partitions=partitions,
                    replicas=BROKERS,
                    config={"min.insync.replicas": MIN_ISR, **(config or {})},
                )
            ],
        )


def env_for(cli_env: dict[str, str], settings) -> dict[str, str]:
    """The CLI's environment pointed at these settings (cluster, topics, folders)."""
    return {
        **cli_env,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "KAFKA_INPUT_TOPIC": settings.input_topic,
        "KAFKA_OUTPUT_TOPIC": settings.output_topic,
        "KAFKA_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
        "CHECKPOINT_LOCATION": str(settings.checkpoint_location),
        "REPORT_DIR": str(settings.report_dir),
        "STREAM_PARQUET_DIR": str(settings.parquet_dir),
        "SPARK_MASTER": "local[1]",
    }


def readings_in(records) -> Counter:
    """How many times each reading (by its simulator event_id, else its bytes) is in `records`."""
    seen: Counter = Counter()
    for record in records:
        try:
            body = json.loads(record.value)
            key = body.get("event_id") if isinstance(body, dict) else None
        except ValueError:
            key = None
        seen[key or record.value] += 1
    return seen


def popen(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen:
    """The CLI in the background, its own process group (so a kill -9 takes its JVM too), output to `log`."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "sensorstream", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group of a CLI this test started (the Python driver and its Spark JVM)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
