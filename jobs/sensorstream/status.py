"""Is the stream keeping up? Its checkpoint against the input topic's end offsets.

Spark writes a streaming query's progress into its checkpoint folder (`CHECKPOINT_LOCATION/stream`):
`offsets/<batch>` holds the source offsets a batch reads up to (a version line, a metadata line,
then one JSON line per source: {topic: {partition: offset}}), `commits/<batch>` appears once the
batch is done; the offsets' metadata line holds the watermark the batch ran with (checkpoint.py
reads them). The newest committed batch's offsets are what the stream has read for good;
the lag of a partition is the topic's end offset minus that.

`read_status` reads all of that without Spark and without joining any consumer group, so it can
run next to a live stream, from a laptop or as a pod's probe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from sensorstream.brokers import admin_client
from sensorstream.config import Settings, kafka_python_kwargs
from sensorstream.streaming.checkpoint import QUERY, committed

#: Exit code of `sensorstream status` when the stream is behind (or has no checkpoint yet).
BEHIND = 3


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the stream has not read this partition yet
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


@dataclass(frozen=True)
class StreamStatus:
    checkpoint: Path
    topic: str
    batch_id: int | None
    last_batch_at: datetime | None
    watermark: datetime | None
    partitions: list[PartitionLag] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The topic's end offset per partition (the offset the next record will get)."""
    quiet = logging.getLogger("kafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    consumer = KafkaConsumer(**kafka_python_kwargs(settings), enable_auto_commit=False, client_id="sensorstream-status")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()
        quiet.setLevel(level)


def read_status(settings: Settings) -> StreamStatus:
    """The stream's checkpoint against the broker, for settings.input_topic."""
    checkpoint = Path(settings.checkpoint_location) / QUERY
    with admin_client(settings) as admin:  # a clear error within seconds when the broker is away
        topics = sorted(t for t in admin.list_topics() if not t.startswith("__"))
    ends = end_offsets(settings, settings.input_topic) if settings.input_topic in topics else {}
    done = committed(checkpoint, settings.input_topic)
    partitions = [PartitionLag(p, done.offsets.get(p), end) for p, end in sorted(ends.items())]
    return StreamStatus(checkpoint, settings.input_topic, done.batch_id, done.at, done.watermark, partitions, topics)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


def describe(status: StreamStatus, max_lag: int) -> tuple[list[str], list[list], bool]:
    """(summary lines, per-partition rows, whether the stream is behind by more than max_lag)."""
    behind = status.batch_id is None or status.lag > max_lag
    lines = [
        f"checkpoint: {status.checkpoint}" + ("" if status.batch_id is not None else " (no committed batch yet)"),
        f"last batch: {status.batch_id if status.batch_id is not None else '-'} at {_when(status.last_batch_at)}; "
        f"watermark {_when(status.watermark)}",
        f"topics on the broker: {', '.join(status.topics) or 'none'}",
        f"lag of {status.topic}: {status.lag:,} record(s) "
        + (
            f"(more than {max_lag:,}: behind)"
            if behind and status.batch_id is not None
            else f"(at most {max_lag:,}: keeping up)"
            if not behind
            else "(nothing read yet)"
        ),
    ]
    rows = [[p.partition, "-" if p.committed is None else p.committed, p.end, p.lag] for p in status.partitions]
    return lines, rows, behind
