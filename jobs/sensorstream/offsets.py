"""The stream's checkpoint held against its input topic, before Spark starts.

Spark's checkpoint records, per micro-batch, the input offsets the batch ended at (`offsets/N`) and
that it finished (`commits/N`). On a restart Spark reads on from the last committed offsets. Three
things can make that wrong, and each is a one-line error here that names the fix, instead of a JVM
stack trace once the query runs:

    damaged      the newest offsets or commits file cannot be read (half-written, truncated)
    recreated    a partition is gone, or ends before the checkpoint's offset: the topic was deleted
                 and created again (its offsets start over), so the checkpoint points at other data
    lost         records the stream has not read yet were deleted (retention, delete-records):
                 Spark's failOnDataLoss; with `skip_lost` the stream goes on and says how many it skips

A topic recreated and already refilled past the checkpoint's offsets cannot be told from the same
topic by offsets alone; Kafka's topic ids would tell, but the Python client does not read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from sensorstream.checkpoint import RESET, committed
from sensorstream.config import Settings, kafka_python_kwargs
from sensorstream.errors import CheckpointError


@dataclass(frozen=True)
class Gap:
    """Records of one partition deleted before the stream read them: offsets [first, end)."""

    partition: int
    first: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.first


def check(settings: Settings, checkpoint: Path, skip_lost: bool = False) -> list[Gap]:
    """CheckpointError if the checkpoint no longer fits the input topic; the gaps to skip otherwise.

    Gaps (records deleted before the stream read them) are an error unless `skip_lost`.
    """
    topic = settings.input_topic
    position = committed(checkpoint, topic).offsets
    if not position:
        return []
    consumer = KafkaConsumer(
        **kafka_python_kwargs(settings), enable_auto_commit=False, client_id="sensorstream-checkpoint-check"
    )
    try:
        present = consumer.partitions_for_topic(topic) or set()
        gone = sorted(set(position) - present)
        if gone:
            raise CheckpointError(
                f"input topic {topic!r} has no partition {gone[0]} although the checkpoint read it: the topic was "
                f"deleted and created again since; {RESET}"
            )
        partitions = [TopicPartition(topic, p) for p in sorted(position)]
        first, end = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
    finally:
        consumer.close()
    gaps = []
    for tp in partitions:
        at = position[tp.partition]
        if at > end[tp]:
            raise CheckpointError(
                f"input topic {topic!r} partition {tp.partition} ends at offset {end[tp]} but the checkpoint has "
                f"read up to {at}: the topic was deleted and created again since; {RESET}"
            )
        if at < first[tp]:
            gaps.append(Gap(tp.partition, at, first[tp]))
    if gaps and not skip_lost:
        where = ", ".join(f"partition {g.partition} offsets {g.first}-{g.end - 1}" for g in gaps)
        raise CheckpointError(
            f"{sum(g.count for g in gaps):,} record(s) of input topic {topic!r} were deleted before the stream read "
            f"them ({where}; retention or delete-records); to go on without them rerun with --skip-lost-records, "
            f"or {RESET}"
        )
    return gaps
