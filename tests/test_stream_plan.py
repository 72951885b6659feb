"""The shape of the stream's query, over records as Kafka gives them (a batch DataFrame of Kafka's
columns: the same plan Spark runs each micro-batch, without a broker)."""

from sensorstream.config import load_settings
from sensorstream.streaming.plan import stream_plan
from support.readings import KAFKA_DDL, kafka_rows, with_
from support.stream import state_session


def test_a_batch_runs_one_task_per_state_partition(spark):
    """The windows' branch and the records' branch each have the state's partitions; their union
    is coalesced, so a micro-batch runs one task per state partition, not two."""
    settings = load_settings(environ={"STREAM_STATE_PARTITIONS": "4", "STREAM_SINKS": "kafka"})
    values = [with_(sensor_id=f"sensor_{i % 5}", timestamp=f"2026-01-31T08:00:{i:02d}Z") for i in range(30)]
    with state_session(spark, settings) as session:  # as the stream runs it: its session, its state's settings
        rows = stream_plan(session.createDataFrame(kafka_rows([*values, "not json"]), KAFKA_DDL), settings)
        assert rows.rdd.getNumPartitions() == settings.state_partitions
    kinds = {r.kind: r.n for r in rows.groupBy("kind").count().withColumnRenamed("count", "n").collect()}
    assert kinds == {"window": 6, "reading": 30, "reject": 1}  # 5 sensors' windows, the rejects' epoch one


def test_with_rocksdb_the_open_windows_are_said_to_be_uncounted():
    """RocksDB does not count its rows here (`state_conf`: counting reads each key before writing
    it), and Spark then reports 0: the progress line says the open windows are not counted."""
    from datetime import datetime, timezone

    from sensorstream.streaming.plan import counts_state
    from sensorstream.streaming.progress import BatchProgress, progress_line

    hdfs = load_settings(environ={})
    assert counts_state(hdfs)
    assert not counts_state(hdfs.replace(state_store="rocksdb"))
    assert not counts_state(hdfs.replace(detect="on"))  # the detector takes rocksdb
    when = datetime(2026, 1, 31, 8, tzinfo=timezone.utc)
    figures = dict(records=10, rejected=0, late=0, windows_updated=2, windows_final=1, watermark=when, seconds=0.5)
    assert "3 open;" in progress_line(BatchProgress(1, arriving_per_s=None, open_windows=3, **figures))
    uncounted = progress_line(BatchProgress(1, arriving_per_s=None, open_windows=None, **figures))
    assert "open not counted (rocksdb);" in uncounted and "0 open" not in uncounted
