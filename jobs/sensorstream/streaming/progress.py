"""What the stream reports, as data: each micro-batch's figures (`BatchProgress`, formatted by
`progress_line`) and Spark's pulses (`Pulse`), both from Spark's query listener (`_Pulses`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql.streaming import StreamingQueryListener

from sensorstream.streaming.batches import BatchFigures


@dataclass(frozen=True)
class BatchProgress:
    """One micro-batch's figures, as data: the handler's counts and Spark's own report of the batch
    (its duration and state rows). The CLI formats them (`progress_line`), the metrics read them."""

    batch_id: int
    records: int
    rejected: int
    late: int
    windows_updated: int
    windows_final: int  # windows the watermark closed (Spark's state rows removed)
    watermark: datetime
    seconds: float
    arriving_per_s: float | None  # records over the time since the previous batch started
    open_windows: int | None = 0  # windows held open after the batch (Spark's state rows; None: not counted, rocksdb)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # {kind of reason: rejects}
    alerts_by_kind: dict[str, int] = field(default_factory=dict)  # {kind: the detector's alerts}


def progress_line(p: BatchProgress) -> str:
    """A micro-batch's figures as the stream's log line."""
    arriving = f", {p.arriving_per_s:,.0f}/s arriving" if p.arriving_per_s is not None else ""
    processed = p.records / p.seconds if p.seconds > 0 else 0.0
    return (
        f"batch {p.batch_id}: {p.records:,} records ({p.rejected:,} rejected, {p.late:,} late "
        f"dropped) in {p.seconds:.2f} s, {processed:,.0f}/s processed{arriving}; "
        f"{p.windows_updated} window(s) updated, {p.windows_final} final, "
        + (f"{p.open_windows:,} open; " if p.open_windows is not None else "open not counted (rocksdb); ")
        + (
            f"{sum(p.alerts_by_kind.values())} alert(s) ("
            + ", ".join(f"{k} {n}" for k, n in sorted(p.alerts_by_kind.items()))
            + "); "
            if p.alerts_by_kind
            else ""
        )
        + (f"watermark {p.watermark:%Y-%m-%d %H:%M:%S}" if p.watermark.timestamp() > 0 else "no watermark yet")
    )


@dataclass(frozen=True)
class Pulse:
    """Spark's word that the query is alive: after each micro-batch (`batch_id`) or, while there is
    nothing to read, every 10 s (`batch_id` None).

    `lag` is what Spark reports: records each input partition, (topic, partition), was behind the
    topic's end when the batch was planned (the source's latestOffset minus its endOffset). A batch
    reads to the end unless MAX_OFFSETS_PER_TRIGGER caps it, so the lag stays 0 until the cap holds
    the stream back; an idle query has read everything, so its pulse says 0 for every partition.
    """

    at: datetime
    batch_id: int | None
    lag: dict[tuple[str, int], int] = field(default_factory=dict)


def source_lag(sources) -> dict[tuple[str, int], int]:
    """(topic, partition) -> latestOffset - endOffset, from a progress' Kafka sources (each offset a
    JSON text {topic: {partition: offset}}; a source that reports no latest offset is left out)."""
    lag: dict[tuple[str, int], int] = {}
    for source in sources:
        try:
            latest, end = json.loads(source.latestOffset or "null"), json.loads(source.endOffset or "null")
        except ValueError:
            continue
        if not isinstance(latest, dict) or not isinstance(end, dict):
            continue
        for topic, partitions in latest.items():
            for partition, offset in partitions.items():
                done = end.get(topic, {}).get(partition, offset)
                lag[(topic, int(partition))] = max(0, int(offset) - int(done))
    return lag


class _Pulses(StreamingQueryListener):
    """Turns Spark's progress and idle events of our query into Pulses, touching the heartbeat file
    on each: a driver whose query stops advancing (a hung batch, a stuck source) stops touching it,
    and its liveness probe restarts it. Each batch's progress report also completes the handler's
    figures of that batch (`add`) into a BatchProgress for `on_progress`. Runs on Spark's listener
    thread, never the stream's."""

    def __init__(
        self,
        name: str,
        heartbeat_file: Path | None,
        on_pulse: Callable[[Pulse], None] | None,
        on_progress: Callable[[BatchProgress], None] | None = None,
        counts_state: bool = True,
    ):
        self.name = name
        self.counts_state = counts_state  # false: the state store does not count its rows (rocksdb, plan.state_conf)
        self.heartbeat_file = heartbeat_file
        self.on_pulse = on_pulse
        self.on_progress = on_progress
        self._ids: set[str] = set()  # our query's runs: idle events carry an id, not the name
        self._partitions: set[tuple[str, int]] = set()
        self._figures: dict[int, BatchFigures] = {}  # handled, not reported by Spark yet
        self._reported = threading.Condition()
        self._previous_start: float | None = None

    def add(self, figures: BatchFigures) -> None:
        """The handler's figures of a batch (from the stream thread), until Spark reports it."""
        with self._reported:
            self._figures[figures.batch_id] = figures

    def wait_reported(self, timeout: float = 10) -> None:
        """Until Spark's report of every handled batch has come (the listener bus is asynchronous)."""
        with self._reported:
            self._reported.wait_for(lambda: not self._figures, timeout)

    def onQueryStarted(self, event) -> None:
        if event.name == self.name:
            self._ids.add(str(event.id))

    def onQueryProgress(self, event) -> None:
        progress = event.progress
        if str(progress.id) in self._ids:
            lag = source_lag(progress.sources)
            self._partitions |= set(lag)
            self._report(progress)
            self._beat(Pulse(datetime.now(timezone.utc), progress.batchId, lag))

    def onQueryIdle(self, event) -> None:
        if str(event.id) in self._ids:
            self._beat(Pulse(datetime.now(timezone.utc), None, dict.fromkeys(sorted(self._partitions), 0)))

    def onQueryTerminated(self, event) -> None:
        pass

    def _report(self, progress) -> None:
        with self._reported:
            figures = self._figures.pop(progress.batchId, None)
            self._reported.notify_all()
        if figures is None:
            return
        since = figures.started - self._previous_start if self._previous_start is not None else None
        self._previous_start = figures.started
        state = progress.stateOperators[0] if progress.stateOperators else None
        took = (progress.durationMs or {}).get("triggerExecution")
        batch = BatchProgress(
            figures.batch_id,
            figures.records,
            figures.rejected,
            figures.late,
            figures.windows_updated,
            state.numRowsRemoved if state else 0,
            figures.watermark,
            took / 1000 if took is not None else figures.seconds,
            figures.records / since if since else None,
            (state.numRowsTotal if state else 0) if self.counts_state else None,
            figures.rejected_by_reason,
            figures.alerts_by_kind,
        )
        if self.on_progress:
            self.on_progress(batch)

    def _beat(self, pulse: Pulse) -> None:
        if self.heartbeat_file:
            self.heartbeat_file.touch()
        if self.on_pulse:
            self.on_pulse(pulse)
