"""The stream's open windows: micro-batches folded in, the watermark, final windows, the state file.

Spark's own stateful aggregation cannot also hand each reject to the dead-letter topic, so it
would take a second query reading and parsing the topic again. Instead the stream is one
stateless query, and the few open windows (windows x sensors, a few hundred rows) live here, in
the driver, with the rules Spark's watermark follows (but per input partition, see below):

    the watermark      the newest event time seen in earlier batches minus the delay, where a
                       batch's newest is that of the input partition furthest behind among those
                       it read (each partition's own newest, then the oldest of those); it only
                       moves forward
    late               a reading whose window ends at or before the watermark is dropped (and
                       counted), as Spark's stateful aggregation drops it
    updated            each batch's partials (`aggregate.micro_batch`) merge into the open windows;
                       the windows a batch changed are what the update sinks (console, kafka) get
    final              windows ending at or before the new watermark leave the state: what the
                       append sink (parquet) gets, each once

Why per partition, unlike Spark's one watermark for the whole topic: a stream that is behind
reads every partition's backlog in proportion to its size (--max-offsets-per-trigger), so one
batch can hold readings far apart in time, e.g. a partition added to the topic (read from its
first offset, holding only new readings) next to an old partition's backlog. The newest of all
would move the watermark past that backlog, and it would be dropped as late although it reached
Kafka in time. A partition the batch did not read has nothing waiting, so it holds nothing back.

After every batch the state is written to <folder>/<batch id>.json (written aside, then renamed).
A batch Spark replays after a crash starts again from the state of the batch before it, so no
reading is counted twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sensorstream.aggregate import PARTIALS, finish, merge_partials
from sensorstream.config import micros

#: States kept besides the newest, for a batch Spark replays.
_KEEP = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros_to_datetime(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


@dataclass
class BatchOutcome:
    """What one micro-batch did to the windows; rows are dicts (window_start/end as UTC datetimes)."""

    updated: list[dict] = field(default_factory=list)
    final: list[dict] = field(default_factory=list)
    late: int = 0
    watermark: datetime = _EPOCH


class OpenWindows:
    """Open windows keyed by (window start in µs, sensor_id) -> PARTIALS, and the watermark."""

    def __init__(self, folder: Path, window: timedelta, delay: timedelta):
        self.folder = Path(folder)
        self.window_us = micros(window)
        self.delay_us = micros(delay)
        self.batch_id: int | None = None  # the batch whose end state is held
        self.watermark_us = 0
        self.windows: dict[tuple[int, str], dict] = {}

    def _saved(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.json") if p.stem.isdigit())

    def restore(self, batch_id: int) -> None:
        """Hold the state at the start of `batch_id`: the end state of the newest earlier batch."""
        if self.batch_id is not None and self.batch_id == batch_id - 1:
            return
        earlier = [b for b in self._saved() if b < batch_id]
        self.batch_id, self.watermark_us, self.windows = None, 0, {}
        if earlier:
            saved = json.loads((self.folder / f"{earlier[-1]}.json").read_text())
            self.batch_id = earlier[-1]
            self.watermark_us = saved["watermark_us"]
            self.windows = {
                (w["window_start_us"], w["sensor_id"]): {k: w[k] for k in PARTIALS} for w in saved["windows"]
            }

    def apply(self, batch_id: int, rows: list[dict]) -> BatchOutcome:
        """Fold one batch's `micro_batch` window rows in; save the new state.

        A row whose window ends at or before the watermark (as it stood when the batch began)
        holds late readings: counted, dropped.
        """
        self.restore(batch_id)
        self.batch_id = None  # held state is in flux until saved: a retry reads it back from disk
        outcome = BatchOutcome()
        newest: dict = {}  # input partition -> its newest event time in this batch
        changed = set()
        for row in rows:
            partition = row.get("source_partition")
            newest[partition] = max(newest.get(partition, row["max_event_us"]), row["max_event_us"])
            if row["window_start_us"] + self.window_us <= self.watermark_us:
                outcome.late += row["num_readings"]
            else:
                key = (row["window_start_us"], row["sensor_id"])
                partial = {k: row[k] for k in PARTIALS}
                self.windows[key] = merge_partials(self.windows[key], partial) if key in self.windows else partial
                changed.add(key)
        outcome.updated = [self._row(key) for key in sorted(changed)]
        if newest:  # held to the partition furthest behind
            self.watermark_us = max(self.watermark_us, min(newest.values()) - self.delay_us)
        for key in sorted(k for k in self.windows if k[0] + self.window_us <= self.watermark_us):
            outcome.final.append(self._row(key))
            del self.windows[key]
        outcome.watermark = micros_to_datetime(self.watermark_us)
        self._save(batch_id)
        return outcome

    def _row(self, key: tuple[int, str]) -> dict:
        start, sensor = key
        return {
            "window_start": micros_to_datetime(start),
            "window_end": micros_to_datetime(start + self.window_us),
            "sensor_id": sensor,
            **finish(self.windows[key]),
        }

    def _save(self, batch_id: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "watermark_us": self.watermark_us,
            "windows": [
                {"window_start_us": s, "sensor_id": sensor, **partial}
                for (s, sensor), partial in sorted(self.windows.items())
            ],
        }
        aside = self.folder / f".{batch_id}.json.tmp"
        aside.write_text(json.dumps(state))
        os.replace(aside, self.folder / f"{batch_id}.json")
        self.batch_id = batch_id
        for old in self._saved()[: -(_KEEP + 1)]:
            (self.folder / f"{old}.json").unlink(missing_ok=True)
