"""Is the stream keeping up? Its checkpoint against the input topic's end offsets.

Spark writes a streaming query's progress into its checkpoint folder (`CHECKPOINT_LOCATION/stream`):
`offsets/<batch>` holds the source offsets a batch reads up to (a version line, a metadata line,
then one JSON line per source: {topic: {partition: offset}}), `commits/<batch>` appears once the
batch is done, and the stream's own open-window state (`open_windows/<batch>.json`, windows.py)
holds the watermark. The newest committed batch's offsets are what the stream has read for good;
the lag of a partition is the topic's end offset minus that.

`read_status` reads all of that without Spark and without joining any consumer group, so it can
run next to a live stream, from a laptop or as a pod's probe.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from sensorstream.brokers import admin_client
from sensorstream.config import Settings, kafka_python_kwargs
from sensorstream.errors import CheckpointError
from sensorstream.streaming import QUERY
from sensorstream.windows import micros_to_datetime

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


def _numbered(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.is_dir() else []


def committed_offsets(checkpoint: Path, topic: str) -> tuple[int | None, dict[int, int], datetime | None]:
    """(newest committed batch id, its end offset per partition of `topic`, when it was committed)."""
    commits = _numbered(checkpoint / "commits")
    if not commits:
        return None, {}, None
    batch = commits[-1]
    lines = (checkpoint / "offsets" / str(batch)).read_text(encoding="utf-8").splitlines()
    offsets: dict[int, int] = {}
    for line in lines[2:]:  # the version, the batch's metadata, then one line per source
        try:
            source = json.loads(line)
        except ValueError:
            raise CheckpointError(
                f"{checkpoint}/offsets/{batch} is not a Kafka source's offsets: {line[:80]!r}"
            ) from None
        if isinstance(source, dict) and topic in source:
            offsets = {int(p): int(o) for p, o in source[topic].items()}
    at = datetime.fromtimestamp((checkpoint / "commits" / str(batch)).stat().st_mtime, timezone.utc)
    return batch, offsets, at


def watermark(checkpoint: Path) -> datetime | None:
    """The watermark of the newest saved open-window state (windows.py), if any."""
    saved = [int(p.stem) for p in (checkpoint / "open_windows").glob("*.json") if p.stem.isdigit()]
    if not saved:
        return None
    state = json.loads((checkpoint / "open_windows" / f"{max(saved)}.json").read_text(encoding="utf-8"))
    return micros_to_datetime(state["watermark_us"])


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
    batch, offsets, at = committed_offsets(checkpoint, settings.input_topic)
    partitions = [PartitionLag(p, offsets.get(p), end) for p, end in sorted(ends.items())]
    return StreamStatus(checkpoint, settings.input_topic, batch, at, watermark(checkpoint), partitions, topics)


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
