"""The reading's Spark schema, and the one parse + validate both jobs use.

The fields, units and physical ranges themselves are `readings.py`'s (re-exported here for the jobs).

`parse(kafka_df)` is a pure DataFrame function that works the same on a streaming and a batch
DataFrame read from Kafka: one row per record, with `reason` null for a valid reading and the
first problem otherwise. `parse_and_validate` splits that into (readings, rejects). Every input
record lands in exactly one of the two; a bad record never becomes a silent null.

The contract (README, "Message formats"), reasons in the order they are checked:

    invalid JSON                        not strict JSON (RFC 8259: no NaN/Infinity, no single
                                        quotes, nothing after the value, UTF-8), or not an object
                                        (a name given twice: its last value counts)
    missing field: <f>                  a required field is absent or null; a blank sensor_id
    wrong type: <f>                     sensor_id/timestamp not a JSON string, a metric not a JSON
                                        number, seq not an integer
    bad timestamp: <value>              not a date-time as TIMESTAMP_PATTERN says, or no such time
    out of range: <f>=<v> not in [lo, hi]

How it stays cheap: each record is parsed once, by `from_json` into the typed reading with strict
JSON options, and checked with a few cheap tests (`_well_formed`, `_in_range`) that can only pass
for a valid reading. A well-formed reading out of range, the common reject, gets its reason from
that parse too (`_range_reason`). Only the other records pay for `_reason`, which parses them
again in the ways needed to name the problem exactly (and finds some valid after all, e.g. a `}`
inside a string, or a sensor_id of "123"). Where Spark's classpath has the jar `make detector`
builds, that second half runs behind one JVM function (jobs/jvm/parse): the same expressions,
optimized once instead of at every micro-batch; and a plain reading is read by one pass over its
bytes in the JVM (`reader_function`), `from_json` and the scans left to the others.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from pyspark import SparkContext
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, VariantType

from sensorstream.readings import (  # noqa: F401 - METRICS, RANGES, REASON_KINDS: re-exported
    ALERT_KINDS,
    FIELDS,
    METRICS,
    RANGES,
    REASON_KINDS,
    REQUIRED,
)

_log = logging.getLogger(__name__)

#: A date, a time with seconds, an optional fraction and an optional offset (UTC without one).
#: A Java regex (\z: the very end; $ would also match before a final line break).
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}(:?\d{2})?)?\z"
#: JSON's insignificant whitespace (RFC 8259): around the value, and trimmed around a sensor_id.
WHITESPACE = " \t\r\n"

#: The JSON a producer sends. seq and event_id are optional for foreign producers.
_FIELD_TYPES = {
    "sensor_id": StringType(),
    "timestamp": StringType(),
    **{m: DoubleType() for m in METRICS},
    "seq": LongType(),
    "event_id": StringType(),
}
READING_SCHEMA = StructType([StructField(name, _FIELD_TYPES[name]) for name in FIELDS])
_CORRUPT = "_corrupt_record"
_PARSE_SCHEMA = StructType([*READING_SCHEMA.fields, StructField(_CORRUPT, StringType())])
#: Every field as text: present (and not null) whatever its JSON type.
_TEXT_SCHEMA = StructType([StructField(f.name, StringType()) for f in READING_SCHEMA.fields])
#: The fields whose JSON type is checked, kept as variants to read it (a repeated name: the last).
_STRING_FIELDS = ("sensor_id", "timestamp")
_VARIANT_SCHEMA = StructType([StructField(name, VariantType()) for name in (*REQUIRED, "seq")])
_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT")
_NUMBER_TYPES = (*_INTEGER_TYPES, "FLOAT", "DOUBLE")
#: Jackson's leniencies, all off: what is left is RFC 8259.
_STRICT = {
    "allowComments": "false",
    "allowUnquotedFieldNames": "false",
    "allowSingleQuotes": "false",
    "allowNumericLeadingZeros": "false",
    "allowNonNumericNumbers": "false",
    "allowBackslashEscapingAnyCharacter": "false",
    "allowUnquotedControlChars": "false",
}
_TYPED = {**_STRICT, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
#: What a sensor id that was a JSON string cannot start with when it is read as text: whitespace,
#: or what starts a number, object or array (`_well_formed`; the reader holds to the same).
_SENSOR_NOT_FIRST = WHITESPACE + "-0123456789{["
#: One '}' and only whitespace after it.
_ONE_BRACE = r"^[^}]*\}[ \t\r\n]*\z"

#: Columns of a valid reading, as both jobs see it.
READING_COLUMNS = ("sensor_id", "event_time", *METRICS, "seq", "event_id")
#: Columns of a reject, as written to the dead-letter topic (JSON) and counted by the report.
#: value is the record as text; value_base64 holds its exact bytes when they are not UTF-8.
REJECT_COLUMNS = (
    "reason",
    "value",
    "value_base64",
    "sensor_id",
    "source_topic",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)
#: Columns of `parse`: the reading's (null for a reject) and the reject's (reason null for a reading).
RECORD_COLUMNS = (
    "reason",
    *READING_COLUMNS,
    "value",
    "value_base64",
    "source_topic",
    "source_partition",
    "source_offset",
    "kafka_timestamp",
)


def _trim(text: Column) -> Column:
    return F.btrim(text, F.lit(WHITESPACE))


def _well_formed(raw: Column, p: Column, event_time: Column) -> Column:
    """True only for a reading that is valid but perhaps for its ranges; false for every other
    invalid one and for a few valid ones (`_in_range` finishes the check).

    - strict from_json succeeded (not corrupt): JSON syntax, an object at the root, every number a
      JSON number, seq an integer (a repeated name: Spark keeps the last value, as the contract
      says, and marks the record corrupt when any of the values does not convert);
    - one '}', at the end but for whitespace (_ONE_BRACE): nothing after the object (Jackson
      stops at the end of the first value); and UTF-8 bytes;
    - sensor_id cannot be a stringified number, object, array or boolean (those start with
      -, a digit, {, [ or are true/false), so it was a JSON string; and it neither starts nor
      ends with whitespace, so it is not blank and needs no trimming;
    - the timestamp has the pattern (no number, object or array looks like it) and is a real time;
    - every metric present (a strict parse into a double takes only a JSON number).
    """
    sensor = p["sensor_id"]
    ok = raw.isNotNull() & p.isNotNull() & p[_CORRUPT].isNull()
    # Java's String.split on one plain character is the cheapest scan Spark offers (measured
    # against instr, a regex and replace); whitespace after the object takes the regex
    one_brace = raw.endswith("}") & (F.size(F.split(raw, "}", -1)) == 2)
    ok = ok & (one_brace | raw.rlike(_ONE_BRACE)) & F.is_valid_utf8(raw)
    # first character by code (no substring made), last by endswith: both without allocating
    first = F.ascii(sensor)
    ok = ok & (sensor != "") & ~first.isin(*[ord(c) for c in _SENSOR_NOT_FIRST])
    ok = ok & (~first.isin(ord("t"), ord("f")) | ~sensor.isin("true", "false"))
    for space in WHITESPACE:  # so not blank, and nothing to trim
        ok = ok & ~sensor.endswith(space)
    ok = ok & p["timestamp"].rlike(TIMESTAMP_PATTERN) & event_time.isNotNull()
    for field in METRICS:
        ok = ok & p[field].isNotNull()
    return F.coalesce(ok, F.lit(False))  # never null: a null would skip the reasons


def _in_range(p: Column) -> Column:
    """Every metric in its physical range (false for a missing one)."""
    ok = F.lit(True)
    for field in METRICS:
        low, high = RANGES[field]
        ok = ok & p[field].between(low, high)
    return F.coalesce(ok, F.lit(False))


def _out_of_range(value: Column, field: str) -> Column:
    low, high = RANGES[field]
    return F.format_string(f"out of range: {field}=%s not in [{low:g}, {high:g}]", value.cast("string"))


def _finite(p: Column) -> Column:
    """Every metric a finite number: an overflowing one (1e400) reads as infinity here."""
    ok = F.lit(True)
    for field in METRICS:
        ok = ok & (F.abs(p[field]) < F.lit(float("inf")))
    return F.coalesce(ok, F.lit(False))


def _range_reason(p: Column) -> Column:
    """The reason of a well-formed reading with finite metrics not all in range: the same text as
    `_reason` gives, from the typed parse alone (the common reject, spared the second parse)."""
    reason = None
    for field in METRICS:
        low, high = RANGES[field]
        out = ~p[field].between(low, high)
        reason = (
            F.when(out, _out_of_range(p[field], field))
            if reason is None
            else reason.when(out, _out_of_range(p[field], field))
        )
    assert reason is not None  # METRICS is not empty
    return reason


def _parse_again(raw: Column) -> Column:
    """The parses `_reason` reads, made once per record that failed the cheap checks.

    Jackson ignores what follows the first value, so the value is also parsed as an array element
    and as an object member: trailing data must then start with ']' to escape the first and with
    '}' to escape the second, and cannot do both.
    """
    return F.struct(
        F.from_json(raw, _TEXT_SCHEMA, _STRICT).alias("text"),  # present: not absent, not JSON null
        F.from_json(raw, _VARIANT_SCHEMA, _STRICT).alias("typed"),  # the JSON type of each field
        F.from_json(F.concat(F.lit("["), raw, F.lit("]")), "array<string>", _STRICT).alias("element"),
        F.from_json(F.concat(F.lit('{"v":'), raw, F.lit("}")), "v string", _STRICT)["v"].alias("member"),
        F.coalesce(F.is_valid_utf8(raw), F.lit(False)).alias("utf8"),
        raw.rlike(r"^[ \t\r\n]*\{").alias("opens"),
    )


def _is_json_object(again: Column) -> Column:
    """Exactly one strict JSON object in UTF-8, whitespace around it allowed."""
    return (
        again["utf8"]
        & F.coalesce(again["opens"], F.lit(False))
        & F.coalesce(F.size(again["element"]) == 1, F.lit(False))
        & again["member"].isNotNull()
    )


def _is_json(variant: Column, *types: str) -> Column:
    """The variant holds a JSON value of one of these types (DECIMAL(p,s) counts as DECIMAL)."""
    kind = F.regexp_replace(F.schema_of_variant(variant), r"\(.*", "")
    return F.coalesce(kind.isin(*types), F.lit(False))


def _is_json_string(variant: Column) -> Column:
    return _is_json(variant, "STRING")


def _reason(again: Column, p: Column, event_time: Column) -> Column:
    """The first problem of a record that failed the cheap checks, or null when it is valid after all."""
    text, typed = again["text"], again["typed"]
    reason = F.when(~_is_json_object(again), F.lit("invalid JSON"))
    for field in REQUIRED:
        missing = text[field].isNull()
        if field == "sensor_id":
            missing = missing | (_is_json_string(typed[field]) & (F.length(_trim(text[field])) == 0))
        reason = reason.when(missing, F.lit(f"missing field: {field}"))
    for field in _STRING_FIELDS:
        reason = reason.when(~_is_json_string(typed[field]), F.lit(f"wrong type: {field}"))
    for field in METRICS:
        reason = reason.when(~_is_json(typed[field], *_NUMBER_TYPES, "DECIMAL"), F.lit(f"wrong type: {field}"))
    reason = reason.when(text["seq"].isNotNull() & ~_is_json(typed["seq"], *_INTEGER_TYPES), F.lit("wrong type: seq"))
    reason = reason.when(
        ~p["timestamp"].rlike(TIMESTAMP_PATTERN) | event_time.isNull(),
        F.concat(F.lit("bad timestamp: "), p["timestamp"]),
    )
    for field in METRICS:
        low, high = RANGES[field]
        value = F.try_variant_get(typed[field], "$", "double")
        reason = reason.when(~value.between(low, high), _out_of_range(value, field))
    return reason


def _reject_sensor(again: Column) -> Column:
    """The sensor a reject names: its sensor_id when that is a non-blank JSON string, else null."""
    text = _trim(again["text"]["sensor_id"])
    return F.when(_is_json_object(again) & _is_json_string(again["typed"]["sensor_id"]) & (F.length(text) > 0), text)


def parse(kafka_df: DataFrame) -> DataFrame:
    """Kafka records (value, topic, partition, offset, timestamp) -> one row each, RECORD_COLUMNS.

    A valid reading has reason null and its fields; a reject has its reason, the sensor it names
    (or null) and null reading fields. Both keep the source record's value and coordinates.
    """
    return explain(check(kafka_df))


def check(kafka_df: DataFrame) -> DataFrame:
    """The first half of `parse`: the typed parse and the cheap checks, column `fast` true for a
    record they prove valid (most of them). A small plan: the stream runs it in its query and
    spares the many records that pass it the planning of `explain`, at every micro-batch. Where
    the reader's class is on Spark's classpath, a plain reading is read by it (`reader_function`)."""
    return _projected(kafka_df, _check_projections(kafka_df.sparkSession))


def _plain_check(kafka_df: DataFrame) -> DataFrame:
    """`check` with Spark's own expressions only: what the explainer's plan is made over."""
    return _projected(kafka_df, _projections()[:_CHECKED])


def explain(checked: DataFrame) -> DataFrame:
    """The second half of `parse`: `check`ed records -> RECORD_COLUMNS, each failure explained."""
    return _projected(checked, _explain_projections(checked.sparkSession))


def _projected(frame: DataFrame, projections: tuple[tuple[Column | str, ...], ...]) -> DataFrame:
    for projection in projections:
        frame = frame.select(*projection)
    return frame


#: The JVM class that runs the explain as one function (jobs/jvm/parse, in the detector's jar).
EXPLAINER_CLASS = "sensorstream.parse.Explainer"
#: The JVM class that reads a plain reading in one pass (jobs/jvm/parse, in the same jar).
READER_CLASS = "sensorstream.parse.Reader"
#: Kafka's columns the parse reads (Spark's Kafka source has these and more): the relation the
#: explainer's plan is made over.
KAFKA_DDL = "value binary, topic string, partition int, offset bigint, timestamp timestamp"
_EXPLAIN_PROJECTIONS: weakref.WeakKeyDictionary[SparkContext, tuple] = weakref.WeakKeyDictionary()
_CHECK_PROJECTIONS: weakref.WeakKeyDictionary[SparkContext, tuple] = weakref.WeakKeyDictionary()


def _check_projections(session: SparkSession) -> tuple[tuple[Column | str, ...], ...]:
    """`check`'s projections in `session`: with the reader where its class is on Spark's classpath,
    else Spark's expressions alone (the same rows). Made once per Spark context."""
    context = session.sparkContext
    found = _CHECK_PROJECTIONS.get(context)
    if found is None:
        reader = reader_function(session)
        if reader is None:
            found = _projections()[:_CHECKED]
        else:
            read = Column(reader.apply(_java_columns(context, [F.col("value").cast("binary")])))
            found = _build_projections(_explained(), read)[:_CHECKED]
        _CHECK_PROJECTIONS[context] = found
    return found


def reader_function(session: SparkSession) -> Any | None:
    """The reader (READER_CLASS) as a UserDefinedFunction of a record's value returning the typed
    parse's struct, or null for a record it does not prove plain (then `from_json` and the cheap
    checks decide, as without it); None where its class is not on Spark's classpath or, with a
    warning, refuses the schema (a jar built for another version of this code)."""
    found = _jvm_class(session, READER_CLASS)
    if found is None:
        return None
    gateway = session.sparkContext._gateway
    assert gateway is not None
    required = gateway.new_array(gateway.jvm.java.lang.String, len(REQUIRED))
    for i, name in enumerate(REQUIRED):
        required[i] = name
    return _unless_refused(
        lambda: found.function(
            _reader_schema().json(), _CORRUPT, required, "sensor_id", "timestamp", TIMESTAMP_PATTERN, _SENSOR_NOT_FIRST
        ),
        f"reader ({READER_CLASS}) refused its schema",
        "Spark's from_json",
    )


def _reader_schema() -> StructType:
    """The struct the reader returns: the typed parse's (`from_json`'s), so `coalesce` takes either."""
    return _PARSE_SCHEMA


def _explain_projections(session: SparkSession) -> tuple[tuple[Column | str, ...], ...]:
    """`explain`'s projections in `session`: with the explainer where its class is on Spark's
    classpath, else the expressions themselves (the same results; Spark then optimizes and plans
    them at every micro-batch). Made once per Spark context."""
    context = session.sparkContext
    found = _EXPLAIN_PROJECTIONS.get(context)
    if found is None:
        explainer = explainer_function(session)
        if explainer is None:
            found = _projections()[_CHECKED:]
        else:
            raw = F.col("raw")
            found = _build_projections(Column(explainer.apply(_java_columns(context, [raw.cast("binary")]))))[_CHECKED:]
        _EXPLAIN_PROJECTIONS[context] = found
    return found


def explainer_function(session: SparkSession) -> Any | None:
    """The explain as one JVM function of a record's value (a UserDefinedFunction returning the
    struct `_explained` holds), or None where EXPLAINER_CLASS is not on Spark's classpath (or,
    with a warning, refuses the plan: a jar built for another Spark).

    It holds the expressions `_explained` builds, optimized once by this session over Kafka's
    columns; Spark plans it as one node, and evaluates it only for the records `check` did not pass."""
    found = _jvm_class(session, EXPLAINER_CLASS)
    if found is None:
        return None
    kafka = session.createDataFrame(session.sparkContext.emptyRDD(), KAFKA_DDL)
    plan = _plain_check(kafka).select(_explained().alias("explained"))._jdf.queryExecution().optimizedPlan()
    return _unless_refused(
        lambda: found.function(plan), f"explainer ({EXPLAINER_CLASS}) refused its plan", "its expressions"
    )


def _jvm_class(session: SparkSession, name: str) -> Any | None:
    """The JVM class `name` (jobs/jvm/parse, in the detector's jar), or None where it is not on
    Spark's classpath."""
    from py4j.java_gateway import JavaClass

    found = session._jvm
    assert found is not None  # a classic session's
    for part in name.split("."):
        found = getattr(found, part)
    return found if isinstance(found, JavaClass) else None


def _unless_refused(make: Callable[[], Any], refused: str, keeps: str) -> Any | None:
    """`make()`, or None with a warning where the JVM refuses it (a jar built for another Spark or
    another version of this code): the parse then keeps `keeps`, the same rows, slower."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException

    try:
        return make()
    except (CapturedException, Py4JJavaError) as exc:  # pyspark converts most Java errors to the first
        problem = str(exc).strip().splitlines()
        _log.warning(
            "the parse's %s: %s; the parse keeps %s (the same rows, slower); rebuild its jar with `make detector`",
            refused,
            problem[0][:300] if problem else type(exc).__name__,
            keeps,
        )
        return None


def _java_columns(context: SparkContext, columns: list[Column]) -> Any:
    from pyspark.sql.classic.column import _to_java_column, _to_seq

    return _to_seq(context, columns, _to_java_column)


#: What `passed_readings` calls a record that did not pass `check`: `explain` gives its real reason
#: (or finds it valid after all).
UNCHECKED = "unchecked"


def passed_readings(checked: DataFrame) -> DataFrame:
    """`check`ed records -> RECORD_COLUMNS without `explain`: a record that passed is the reading
    `parse` makes of it; any other has reason UNCHECKED and no fields (for `explain` to finish)."""
    return checked.select(*_passed_columns())


@functools.cache
def _passed_columns() -> tuple[Column | str, ...]:
    passed = F.col("fast")
    return _record_columns(
        reason=F.when(~passed, F.lit(UNCHECKED)),
        sensor_id=F.when(passed, F.col("p")["sensor_id"]),
        valid=passed,
        value_base64=F.lit(None).cast("string"),
    )


def _record_columns(reason: Column, sensor_id: Column, valid: Column, value_base64: Column) -> tuple[Column | str, ...]:
    """RECORD_COLUMNS over `check`ed records: the reading's fields where `valid`, the source's always."""
    p = F.col("p")

    def reading(column: Column) -> Column:
        return F.when(valid, column)

    return (
        reason.alias("reason"),
        sensor_id.alias("sensor_id"),
        reading(F.col("event_time")).alias("event_time"),
        *[reading(p[m]).alias(m) for m in METRICS],
        reading(p["seq"]).alias("seq"),
        reading(p["event_id"]).alias("event_id"),
        F.col("raw").alias("value"),
        value_base64.alias("value_base64"),
        "source_topic",
        "source_partition",
        "source_offset",
        "kafka_timestamp",
    )


def failed_check(checked: DataFrame) -> DataFrame:
    """The `check`ed records that did not pass (`explain` them)."""
    return checked.where(~F.col("fast"))


_CHECKED = 5  # how many of _projections() `check` makes


@functools.cache
def _projections() -> tuple[tuple[Column | str, ...], ...]:
    """parse's projections, built once: a few hundred calls into the JVM, and the stream parses
    every micro-batch (expressions are not bound to a DataFrame, so they can be reused). The
    explain's expressions inline; `_explain_projections` puts them behind the explainer."""
    return _build_projections(_explained())


def _explained() -> Column:
    """A record's reason, the sensor its reject names and its bytes as base64 when they are not
    UTF-8 (a struct), over `check`'s columns: for a record that failed the cheap checks."""
    raw, p, event_time = F.col("raw"), F.col("p"), F.col("event_time")

    def explain(again: Column) -> Column:
        return F.struct(
            _reason(again, p, event_time).alias("reason"),
            _reject_sensor(again).alias("named"),
            F.when(~again["utf8"], F.base64(raw.cast("binary"))).alias("value_base64"),
        )

    # transform over a one-element array binds the parses to a name: made once, read many times
    return F.transform(F.array(_parse_again(raw)), explain)[0]


def _build_projections(explained: Column, read: Column | None = None) -> tuple[tuple[Column | str, ...], ...]:
    """parse's projections, with `explained` (`_explained`, or the explainer over it) as the
    explanation of a record the cheap checks did not pass, and `read` (the reader, or none) as the
    typed parse of a record it proves plain: `from_json` and the scans of `_well_formed` then run
    only for the others (Spark's `coalesce` and `or` stop at the first answer).

    Kept apart on purpose (each output used twice, so Spark does not merge them): the typed
    parse; the cheap checks, in whole-stage generated code; the parses the reasons need, made
    once and only for the records that failed the checks; the reasons; and the output columns,
    fused with what the caller does next.
    """
    raw, p, event_time = F.col("raw"), F.col("p"), F.col("event_time")
    fast, formed = F.col("fast"), F.col("formed")

    out_of_range = F.struct(
        _range_reason(p).alias("reason"),
        p["sensor_id"].alias("named"),
        F.lit(None).cast("string").alias("value_base64"),
    )
    reason = F.col("slow.reason")
    valid = reason.isNull()

    typed = F.from_json(raw, _PARSE_SCHEMA, _TYPED)
    formed_by = _well_formed(raw, p, event_time)
    source: tuple[Column, ...] = ()
    if read is not None:
        source = (read.alias("read"),)
        typed = F.coalesce(F.col("read"), typed)
        formed_by = (F.col("read").isNotNull() & event_time.isNotNull()) | formed_by

    return (  # check: the first _CHECKED projections; explain: the rest
        (
            F.col("value").cast("string").alias("raw"),  # the same bytes, not checked for UTF-8 here
            F.col("topic").alias("source_topic"),
            F.col("partition").alias("source_partition"),
            F.col("offset").alias("source_offset"),
            F.col("timestamp").alias("kafka_timestamp"),
            *source,
        ),
        ("*", typed.alias("p")),
        ("*", p["timestamp"].try_cast("timestamp").alias("event_time")),
        ("*", formed_by.alias("formed")),
        ("*", (formed & _in_range(p)).alias("fast")),
        ("*", F.when(fast, None).when(formed & _finite(p), out_of_range).otherwise(explained).alias("slow")),
        _record_columns(
            reason=reason,
            sensor_id=F.when(fast, p["sensor_id"]).when(valid, _trim(p["sensor_id"])).otherwise(F.col("slow.named")),
            valid=valid,
            value_base64=F.when(~valid, F.col("slow.value_base64")),
        ),
    )


def parse_and_validate(kafka_df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Kafka records -> (readings, rejects): `parse`, split by whether a reason was found."""
    records = parse(kafka_df)
    readings = records.where(F.col("reason").isNull()).select(*READING_COLUMNS)
    rejects = records.where(F.col("reason").isNotNull()).select(*REJECT_COLUMNS)
    return readings, rejects


def dead_letter_columns() -> tuple[Column, Column]:
    """A reject's dead-letter key, "<topic>|<partition>|<offset>" of the input record (stable, so a
    consumer can drop a replayed copy), and value, `reject_json`."""
    return F.concat_ws("|", "source_topic", "source_partition", "source_offset"), reject_json()


def reject_json() -> Column:
    """A reject as the JSON value of a dead-letter record (value_base64 only for non-UTF-8 values)."""
    return F.to_json(
        F.struct(
            "reason",
            "value",
            "value_base64",
            "source_topic",
            "source_partition",
            "source_offset",
            F.date_format("kafka_timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("kafka_timestamp"),
        )
    )


#: An alert as the stream writes it to the alerts topic (STREAM_DETECT=on; `alert_json`) and the
#: report reads it back (`parse_alerts`). metric, value and the expected range are those of a spike
#: (a stuck alert's value is its repeated reading's first metric; silent and back have none);
#: event_time is the reading's that raised it (for silent: the sensor's last before the silence),
#: source that reading's "<topic>|<partition>|<offset>".
ALERT_SCHEMA = StructType(
    [
        StructField("sensor_id", StringType()),
        StructField("kind", StringType()),
        StructField("metric", StringType()),
        StructField("value", DoubleType()),
        StructField("expected_low", DoubleType()),
        StructField("expected_high", DoubleType()),
        StructField("event_time", StringType()),
        StructField("source", StringType()),
    ]
)
#: An alert's event_time as text: microseconds and the offset (Z in the stream's UTC session).
ALERT_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
#: Columns of `parse_alerts`: the record's key, then the alert's fields, event_time a timestamp.
ALERT_COLUMNS = ("key", *ALERT_SCHEMA.fieldNames())


def alert_json() -> Column:
    """The detector's alert row (ALERT_SCHEMA's fields, the event time as `event_us`, microseconds)
    as the JSON value of an alerts record."""
    return F.to_json(
        F.struct(
            *[
                F.date_format(F.timestamp_micros(F.col("event_us")), ALERT_TIME_FORMAT).alias(name)
                if name == "event_time"
                else F.col(name)
                for name in ALERT_SCHEMA.fieldNames()
            ]
        )
    )


def parse_alerts(kafka_df: DataFrame) -> DataFrame:
    """Alerts-topic records (key, value) -> one row per alert, ALERT_COLUMNS.

    A record that is no alert (not JSON, no sensor, a kind not in ALERT_KINDS, no readable event
    time) is left out: the topic is the stream's own output, not a producer's contract to check.
    """
    alert = F.from_json(F.col("value").cast("string"), ALERT_SCHEMA)
    parsed = kafka_df.select(F.col("key").cast("string").alias("key"), alert.alias("a")).select(
        "key",
        *[
            F.try_to_timestamp(F.col("a.event_time"), F.lit(ALERT_TIME_FORMAT)).alias(name)
            if name == "event_time"
            else F.col(f"a.{name}")
            for name in ALERT_SCHEMA.fieldNames()
        ],
    )
    return parsed.where(
        F.col("sensor_id").isNotNull() & F.col("kind").isin(*ALERT_KINDS) & F.col("event_time").isNotNull()
    )
