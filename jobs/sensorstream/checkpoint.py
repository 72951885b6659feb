"""Spark's checkpoint of the stream, read without Spark: one reader for the start-up check
(offsets.py), `status` and the stream's own late count.

Spark writes, per micro-batch N, `offsets/N` before the batch runs (a version line, the batch's
metadata, {"batchWatermarkMs": ..., "batchTimestampMs": ..., "conf": {...}}, then one JSON line per
source: {topic: {partition: next offset}}) and `commits/N` once it is done. The window state
itself lives in `state/` (Spark's state store, RocksDB); nothing here reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sensorstream.errors import CheckpointError

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
    for line in lines[2:]:
        source = json.loads(line)
        if isinstance(source, dict) and topic in source:
            at = datetime.fromtimestamp((commits / str(batch)).stat().st_mtime, timezone.utc)
            mark = metadata.get("batchWatermarkMs", 0) if isinstance(metadata, dict) else 0
            return Committed(
                batch,
                {int(p): int(o) for p, o in source[topic].items()},
                at,
                datetime.fromtimestamp(mark / 1000, timezone.utc) if mark else None,
            )
    raise CheckpointError(f"checkpoint {checkpoint} does not read topic {topic!r}; {RESET}")
