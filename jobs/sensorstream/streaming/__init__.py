"""The streaming job: Kafka source -> parse once -> Spark's windowed aggregation -> sinks.

Its modules: `plan` (the queries and the stream's Spark session), `batches` (the foreachBatch
handler, the console, --max-reject-ratio), `progress` (what it reports, as data, from Spark's
query listener), `checkpoint` (the one reader of Spark's checkpoint, and the stream's marker in
it) and `run` (start, run, stop, one-line errors).

One query reads the input topic, parses each record once (`schema.parse`) and shuffles the records
by (window, sensor). Two branches read that one exchange (Spark plans it once and reuses it):

    windows      Spark's own event-time window aggregation, in update mode, the open windows in
                 its RocksDB state store (partitioned by window and sensor, checkpointed with the
                 offsets): each batch yields the windows it changed; Spark drops a reading whose
                 window the watermark has passed, and forgets a window once it has
    records      every record's own row: a reject with its dead letter, a reading with its
                 window's end (to count the late ones against the batch's watermark)

For each micro-batch the foreachBatch handler (`_Batches`) writes, in one Spark job, with Spark's
Kafka writer (acks from all in-sync replicas, idempotent), the updated windows to the output topic
(kafka sink; JSON, key "<sensor_id>|<window_start>") and every reject to the dead-letter topic with
its reason (always on), and counts the batch (records, rejects by kind of reason, late readings,
windows updated). The console sink prints the updated windows as a table
(what `kubectl logs` shows). The parquet sink is a second query over the same parse and
aggregation in append mode: each final window once, through Spark's exactly-once file sink.

The handler's counts and Spark's own report of the batch (duration, state rows, windows closed)
meet in the query listener (`_Pulses`), which hands each batch's figures on as data
(`BatchProgress`); the CLI formats them (`progress_line`). With --max-reject-ratio, a batch whose
share of rejects is above it (batches under 100 records are judged together with the next ones)
is still written and committed like any other, and then the stream stops with one line naming the
batch and the fix (`RejectLimit`).

Health: Spark's report of each batch, and of each stretch with nothing to read (`onQueryIdle`,
every 10 s while idle), comes to the listener as a `Pulse`: when the query last moved and how many
records each input partition is behind the topic's end. Each also touches the heartbeat file,
which the driver's liveness probe reads: a query that stops advancing stops it.

Delivery: a batch counts as done only after its Kafka records are acknowledged, so a crash replays
it, from the state Spark checkpointed with the batch before. Replays re-send its dead letters (at
least once, keyed "<topic>|<partition>|<offset>") and its window updates, harmless on the output
topic, an upsert log by key (effectively once).
"""

from sensorstream.streaming.batches import _SINKS, CONSOLE_COLUMNS, REJECT_RATIO_MIN_RECORDS, BatchFigures, RejectLimit
from sensorstream.streaming.checkpoint import FINGERPRINT, QUERY, prepare_checkpoint
from sensorstream.streaming.plan import STREAM_CONF, finals_plan, read_source, stream_plan, stream_session
from sensorstream.streaming.progress import BatchProgress, Pulse, progress_line, source_lag
from sensorstream.streaming.run import FINALS_NAME, QUERY_NAME, check_checkpoint, preflight, run, start_query

__all__ = [
    "CONSOLE_COLUMNS",
    "FINALS_NAME",
    "FINGERPRINT",
    "QUERY",
    "QUERY_NAME",
    "REJECT_RATIO_MIN_RECORDS",
    "STREAM_CONF",
    "_SINKS",
    "BatchFigures",
    "BatchProgress",
    "Pulse",
    "RejectLimit",
    "check_checkpoint",
    "finals_plan",
    "preflight",
    "prepare_checkpoint",
    "progress_line",
    "read_source",
    "run",
    "source_lag",
    "start_query",
    "stream_plan",
    "stream_session",
]
