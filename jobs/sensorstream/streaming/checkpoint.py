"""The stream's checkpoint: the one module that reads Spark's checkpoint (without Spark), for the
start-up check, `status` and the stream's late count, and the stream's own marker in it.

Spark writes, per micro-batch N, `offsets/N` before the batch runs (a version line, the batch's
metadata, {"batchWatermarkMs": ..., "batchTimestampMs": ..., "conf": {...}}, then one JSON line per
source: {topic: {partition: next offset}}) and `commits/N` once it is done; the window state
lives in `state/` (Spark's state store; nothing here reads it), the parquet query's checkpoint in
`finals/`. `sensorstream-query.json` (`prepare_checkpoint`) records what the state depends on, so
a checkpoint of another query, other windows or an earlier sensorstream is refused with one line.

Before Spark starts, the checkpoint is held against the input topic (`check`). On a restart Spark
reads on from the last committed offsets; three things can make that wrong, and each is a
one-line error here that names the fix, instead of a JVM stack trace once the query runs:

    damaged      the newest offsets or commits file cannot be read (half-written, truncated)
    recreated    a partition is gone, or ends before the checkpoint's offset: the topic was deleted
                 and created again (its offsets start over), so the checkpoint points at other data
    lost         records the stream has not read yet were deleted (retention, delete-records):
                 Spark's failOnDataLoss; with `skip_lost` the stream goes on and says how many it skips

A topic recreated and already refilled past the checkpoint's offsets cannot be told from the same
topic by offsets alone; Kafka's topic ids would tell, but the Python client does not read them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from sensorstream.config import Settings, kafka_python_kwargs, spark_interval
from sensorstream.errors import CheckpointError

QUERY = "stream"

FINGERPRINT = "sensorstream-query.json"

#: How the stream keeps its windows: in the checkpoint's fingerprint, so a checkpoint of the
#: sensorstream before it (windows in its own `open_windows/` files) is refused with one line.
STATE = "spark-state-store"


def _fingerprint(settings: Settings, query: str) -> dict:
    """What a checkpoint's state depends on: reusing it with other values corrupts results."""
    return {
        "query": query,
        "input_topic": settings.input_topic,
        "window": spark_interval(settings.window_duration),
        "slide": spark_interval(settings.slide_duration) if settings.slide_duration else None,
        "watermark": spark_interval(settings.watermark_delay),
        "state": STATE,
        # the detector's state, and the rocksdb store it takes: only when on, so the checkpoints
        # written before it existed (without the key) still match with it off
        **({"detect": "on"} if settings.detect == "on" else {}),
    }


#: A fingerprint's value for a key it leaves out.
_LEFT_OUT = {"detect": "off"}


def prepare_checkpoint(settings: Settings, query: str, reset: bool) -> Path:
    """The checkpoint folder of the query; refuses one written by a different query."""
    folder = Path(settings.checkpoint_location) / query
    if reset and folder.exists():
        shutil.rmtree(folder)
    wanted = _fingerprint(settings, query)
    marker = folder / FINGERPRINT
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except ValueError:
            found = {}
        if found and found.get("state") != STATE:
            raise CheckpointError(
                f"checkpoint {folder} was written by an earlier sensorstream that kept the open windows itself; "
                "start fresh with --reset-checkpoint (deletes it; the stream then reads from --starting-offsets)"
            )
        if found != wanted:
            diff = ", ".join(
                f"{k} {found.get(k, _LEFT_OUT.get(k))!r} -> {wanted.get(k, _LEFT_OUT.get(k))!r}"
                for k in dict.fromkeys([*wanted, *found])
                if found.get(k) != wanted.get(k)
            )
            raise CheckpointError(
                f"checkpoint {folder} belongs to another query ({diff}); start fresh with "
                "--reset-checkpoint (deletes it) or use another CHECKPOINT_LOCATION"
            )
    elif folder.exists() and any(folder.iterdir()):
        raise CheckpointError(
            f"checkpoint {folder} was not written by sensorstream; start fresh with --reset-checkpoint "
            "(deletes it) or use another CHECKPOINT_LOCATION"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted, indent=2))
    return folder


RESET = (
    "start fresh with --reset-checkpoint (deletes the checkpoint; the stream then reads from "
    "--starting-offsets, earliest by default)"
)


def _numbered(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def read_log(path: Path) -> list[str]:
    """The lines of one of Spark's metadata log files; CheckpointError when it is not whole."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint file {path} cannot be read ({exc}); {RESET}") from None
    lines = text.splitlines()
    try:
        if not lines or not lines[0].startswith("v") or len(lines) < 2:
            raise ValueError("incomplete")
        for line in lines[1:]:
            json.loads(line)
    except ValueError:
        raise CheckpointError(f"checkpoint file {path} is damaged (half-written or truncated); {RESET}") from None
    return lines


@dataclass(frozen=True)
class Committed:
    """The newest committed micro-batch: where it left each partition of the topic, and when."""

    batch_id: int | None = None
    offsets: dict[int, int] = field(default_factory=dict)  # {partition: next offset to read}
    at: datetime | None = None  # when Spark committed it
    watermark: datetime | None = None  # the watermark the batch ran with


def watermark_ms(checkpoint: Path, batch_id: int) -> int:
    """The watermark (Unix ms) micro-batch `batch_id` runs with: Spark writes it to offsets/N first."""
    return int(json.loads(read_log(Path(checkpoint) / "offsets" / str(batch_id))[1]).get("batchWatermarkMs", 0))


def batch_range(checkpoint: Path, batch_id: int, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The offsets of `topic` that micro-batch `batch_id` reads, {partition: offset}: from the end
    of the batch before ({} for batch 0, which runs with a watermark of 0, so nothing in it is late)
    to its own end (`offsets/N`, written before it runs)."""
    checkpoint = Path(checkpoint)

    def offsets(batch: int) -> dict[int, int]:
        return _source_offsets(read_log(checkpoint / "offsets" / str(batch)), topic) or {}

    return (offsets(batch_id - 1) if batch_id else {}), offsets(batch_id)


def _source_offsets(lines: list[str], topic: str) -> dict[int, int] | None:
    """{partition: next offset} of `topic` in an `offsets/N` file's lines; None when it reads no such topic."""
    for line in lines[2:]:
        source = json.loads(line)
        if isinstance(source, dict) and topic in source:
            return {int(p): int(o) for p, o in source[topic].items()}
    return None


def committed(checkpoint: Path, topic: str) -> Committed:
    """The newest committed batch of the checkpoint, for `topic`; Committed() for a new checkpoint.

    Checks that the newest offsets and commits files are whole (Spark reads them first on a
    restart): CheckpointError naming the fix otherwise, or when the checkpoint reads another topic.
    """
    checkpoint = Path(checkpoint)
    offsets, commits = checkpoint / "offsets", checkpoint / "commits"
    written = _numbered(offsets)
    if written:
        read_log(offsets / str(written[-1]))
    done = _numbered(commits)
    if not done:
        return Committed()
    batch = done[-1]
    read_log(commits / str(batch))
    if not (offsets / str(batch)).exists():
        raise CheckpointError(f"checkpoint {checkpoint} has commit {batch} but no offsets for it; {RESET}")
    lines = read_log(offsets / str(batch))
    metadata = json.loads(lines[1])
    offsets_read = _source_offsets(lines, topic)
    if offsets_read is not None:
        at = datetime.fromtimestamp((commits / str(batch)).stat().st_mtime, timezone.utc)
        mark = metadata.get("batchWatermarkMs", 0) if isinstance(metadata, dict) else 0
        return Committed(batch, offsets_read, at, datetime.fromtimestamp(mark / 1000, timezone.utc) if mark else None)
    raise CheckpointError(f"checkpoint {checkpoint} does not read topic {topic!r}; {RESET}")


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
