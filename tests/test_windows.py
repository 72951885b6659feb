"""The stream's open windows: watermark, late readings, final windows, and replays after a crash."""

from datetime import datetime, timedelta, timezone

from sensorstream.aggregate import PARTIALS, finish, merge_partials
from sensorstream.windows import OpenWindows

MINUTE = 60_000_000  # µs
T0 = 1_769_846_400 * 1_000_000  # 2026-01-31T08:00:00Z


def partial(n, temperature=20.0, humidity=50.0, pressure=1000.0):
    row = {"num_readings": n}
    for metric, value in (("temperature", temperature), ("humidity", humidity), ("pressure", pressure)):
        row.update({f"sum_{metric}": value * n, f"min_{metric}": value, f"max_{metric}": value})
    return row


def window_row(start, sensor, n, newest=None, partition=0, **values):
    return {
        "kind": "window",
        "window_start_us": start,
        "sensor_id": sensor,
        "source_partition": partition,
        "max_event_us": newest if newest is not None else start,
        **partial(n, **values),
    }


def windows(tmp_path):
    return OpenWindows(tmp_path / "state", timedelta(minutes=5), timedelta(minutes=10))


def test_merge_and_finish():
    merged = merge_partials(partial(2, temperature=10.0), partial(1, temperature=40.0))
    assert merged["num_readings"] == 3 and merged["min_temperature"] == 10.0 and merged["max_temperature"] == 40.0
    assert finish(merged)["avg_temperature"] == 20.0
    assert set(merged) == set(PARTIALS)


def test_batches_fold_into_open_windows_and_close_behind_the_watermark(tmp_path):
    state = windows(tmp_path)
    first = state.apply(0, [window_row(T0, "a", 2, temperature=10.0)])
    assert [(r["sensor_id"], r["num_readings"]) for r in first.updated] == [("a", 2)]
    assert first.final == [] and state.watermark_us == T0 - 10 * MINUTE

    second = state.apply(1, [window_row(T0, "a", 1, temperature=40.0)])
    assert second.updated[0]["num_readings"] == 3 and second.updated[0]["avg_temperature"] == 20.0
    assert second.updated[0]["window_start"] == datetime(2026, 1, 31, 8, tzinfo=timezone.utc)
    assert second.updated[0]["window_end"] == datetime(2026, 1, 31, 8, 5, tzinfo=timezone.utc)

    # a reading 15 minutes later moves the watermark to T0+5min: the first window is final, once
    third = state.apply(2, [window_row(T0 + 15 * MINUTE, "a", 1)])
    assert [(r["window_start"], r["num_readings"]) for r in third.final] == [(second.updated[0]["window_start"], 3)]
    assert third.watermark == datetime(2026, 1, 31, 8, 5, tzinfo=timezone.utc)
    assert state.apply(3, []).final == []


def test_late_readings_are_counted_and_the_watermark_never_goes_back(tmp_path):
    state = windows(tmp_path)
    state.apply(0, [window_row(T0 + 30 * MINUTE, "a", 1)])  # watermark: T0 + 20 min
    outcome = state.apply(1, [window_row(T0 + 15 * MINUTE, "a", 4), window_row(T0 + 20 * MINUTE, "b", 1)])
    assert outcome.late == 4  # their window ended at T0 + 20 min: closed
    assert [(r["sensor_id"], r["num_readings"]) for r in outcome.updated] == [("b", 1)]
    assert state.watermark_us == T0 + 20 * MINUTE


def test_the_watermark_waits_for_the_partition_furthest_behind(tmp_path):
    """A stream behind reads an added partition's new readings next to an old partition's backlog,
    in the same batches: the backlog is not late for being read after them."""
    state = windows(tmp_path)
    state.apply(0, [window_row(T0, "old", 1, partition=0), window_row(T0 + 60 * MINUTE, "new", 1, partition=5)])
    assert state.watermark_us == T0 - 10 * MINUTE  # held by partition 0, not T0 + 50 min
    outcome = state.apply(
        1, [window_row(T0 + 5 * MINUTE, "old", 3, partition=0), window_row(T0 + 65 * MINUTE, "new", 1, partition=5)]
    )
    assert outcome.late == 0 and state.watermark_us == T0 - 5 * MINUTE
    # partition 0 caught up: a batch that reads only partition 5 moves the watermark on
    outcome = state.apply(2, [window_row(T0 + 70 * MINUTE, "new", 1, partition=5)])
    assert state.watermark_us == T0 + 60 * MINUTE
    assert [(r["sensor_id"], r["num_readings"]) for r in outcome.final][:2] == [("old", 1), ("old", 3)]


def test_a_replayed_batch_starts_from_the_state_before_it(tmp_path):
    """Spark replays a batch whose end it never recorded: counting it again must not double it."""
    state = windows(tmp_path)
    state.apply(0, [window_row(T0, "a", 2)])
    state.apply(1, [window_row(T0, "a", 3)])
    replayed = state.apply(1, [window_row(T0, "a", 3)])  # same process
    assert replayed.updated[0]["num_readings"] == 5
    restarted = windows(tmp_path)  # a new driver after a crash
    assert restarted.apply(1, [window_row(T0, "a", 3)]).updated[0]["num_readings"] == 5
    assert restarted.apply(2, [window_row(T0, "a", 1)]).updated[0]["num_readings"] == 6


def test_only_a_few_states_are_kept(tmp_path):
    state = windows(tmp_path)
    for batch in range(10):
        state.apply(batch, [window_row(T0, "a", 1)])
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["7.json", "8.json", "9.json"]
