"""The rehearsal (`make rehearse`) as a test: the kind-rendered workloads run as local processes
against the session's real broker, and the stream shows window rows and the report lands in
the mapped reports volume."""

from __future__ import annotations

import pytest

from support.chart import REHEARSE

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]


def test_rehearsal_shows_window_rows_and_writes_a_report(kafka_bootstrap, helm, tmp_path):
    lines = []
    try:
        result = REHEARSE.rehearse(kafka_bootstrap, tmp_path, helm=helm, say=lines.append)
    except REHEARSE.RehearsalError as exc:
        pytest.fail(f"rehearsal failed: {exc}\n" + "\n".join(lines), pytrace=False)
    assert result.topics == ["input_topic", "output_topic", "dead_letter_topic", "alerts_topic"]
    assert result.window_rows, "no window rows in the stream's log"
    assert all("sensor_" in row for row in result.window_rows)
    # spark-submit's JVM receives the SIGTERM (as from tini in the driver pod): 143, or 0.
    assert result.stream_exit in (0, 143), (
        "SIGTERM should stop the stream:\n" + result.logs["stream"].read_text()[-3000:]
    )
    assert result.producer_exit == 0
    suffixes = {p.suffix for p in result.report_files}
    assert {".csv", ".json", ".parquet"} <= suffixes, f"report files: {result.report_files}"
    volume = tmp_path / "volumes" / "reports"
    assert all(volume in p.parents for p in result.report_files)
