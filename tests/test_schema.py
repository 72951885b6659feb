"""parse / parse_and_validate on a real SparkSession against the README's contract.

Every record lands in exactly one output, with the reason an independent Python reading of the
contract (helpers.reference_reason) gives.
"""

import random
import re
from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F

from sensorstream.readings import RANGES, UNITS
from sensorstream.schema import (
    ALERT_COLUMNS,
    READING_COLUMNS,
    REASON_KINDS,
    RECORD_COLUMNS,
    REJECT_COLUMNS,
    UNCHECKED,
    alert_json,
    check,
    explain,
    explainer_function,
    failed_check,
    parse,
    parse_alerts,
    parse_and_validate,
    passed_readings,
)
from sensorstream.simulator import Simulator, encode, malformed
from support.places import ROOT
from support.readings import FOREIGN, GOOD_TEXT, KAFKA_DDL, kafka_rows, reference_reason, stepping_clock, swap, with_

pytestmark = pytest.mark.spark

CASES = [
    (with_(), None),
    (with_(timestamp="2026-01-31T09:00:01+01:00"), None),
    (with_(timestamp="2026-01-31 08:00:01"), None),  # no offset: UTC
    (with_(temperature=21), None),  # an integer is a number
    (with_(seq=..., event_id=...), None),  # optional fields
    (with_(seq=None), None),
    (with_(sensor_id="123"), None),  # a string that looks like a number is still a string
    (with_(sensor_id="a } b", extra={"nested": "}{"}), None),  # braces inside strings
    (with_(temperature=85, humidity=0, pressure=300), None),  # ranges are inclusive
    ('{"sensor_id": "sensor_1", "temp', "invalid JSON"),
    ("not json at all", "invalid JSON"),
    ("[1, 2, 3]", "invalid JSON"),
    ("null", "invalid JSON"),
    ("5", "invalid JSON"),
    ("", "invalid JSON"),
    (None, "invalid JSON"),
    (b'{"sensor_id": "\xff\xfe", "timestamp": "2026-01-31T08:00:01Z"}', "invalid JSON"),  # not UTF-8
    (swap("21.5", "021.5"), "invalid JSON"),  # leading zero
    (swap("21.5", "NaN"), "invalid JSON"),  # NaN is not a JSON token
    ("/* note */ " + GOOD_TEXT, "invalid JSON"),
    (with_(temperature=...), "missing field: temperature"),
    (with_(sensor_id=...), "missing field: sensor_id"),
    (with_(timestamp=None), "missing field: timestamp"),
    (with_(sensor_id="  "), "missing field: sensor_id"),
    (with_(sensor_id="\t\n"), "missing field: sensor_id"),
    (with_(humidity="hot"), "wrong type: humidity"),
    (with_(pressure="1013.2"), "wrong type: pressure"),
    (with_(pressure=True), "wrong type: pressure"),
    (with_(seq="one"), "wrong type: seq"),
    (with_(seq=1.5), "wrong type: seq"),
    (with_(timestamp=1769846401), "wrong type: timestamp"),
    (with_(timestamp="yesterday"), "bad timestamp: yesterday"),
    (with_(timestamp="2026-01-31"), "bad timestamp: 2026-01-31"),
    (with_(timestamp="2026-02-30T08:00:01Z"), "bad timestamp: 2026-02-30T08:00:01Z"),
    (with_(timestamp="2026-01-31T08:00:01Z\n"), "bad timestamp: 2026-01-31T08:00:01Z\n"),
    (GOOD_TEXT + "\u2028", "invalid JSON"),
    (with_(humidity=140.0), "out of range: humidity=140.0 not in [0, 100]"),
    (with_(temperature=-120.0), "out of range: temperature=-120.0 not in [-40, 85]"),
    (with_(pressure=12.0), "out of range: pressure=12.0 not in [300, 1100]"),
    (swap("21.5", "1e400"), "out of range: temperature=Infinity not in [-40, 85]"),
]


def encoded(value):
    return value if value is None or isinstance(value, bytes) else value.encode()


def kafka_frame(spark, values):
    """Values (text, bytes or None) as rows shaped like Spark's Kafka source."""
    return spark.createDataFrame(kafka_rows(encoded(v) for v in values), KAFKA_DDL)


def split(spark, values):
    good, bad = parse_and_validate(kafka_frame(spark, values))
    return good.collect(), bad.orderBy("source_offset").collect()


def reasons_of(spark, values) -> list:
    """The reason of each value, by position (None: a valid reading)."""
    rows = parse(kafka_frame(spark, values)).select("source_offset", "reason").collect()
    assert sorted(r["source_offset"] for r in rows) == list(range(len(values)))  # each exactly once
    return [reason for _, reason in sorted((r["source_offset"], r["reason"]) for r in rows)]


def test_each_kind_of_record_gets_its_reason(spark):
    got = reasons_of(spark, [v for v, _ in CASES])
    for (value, want), reason in zip(CASES, got):
        assert reason == want, value


@pytest.mark.parametrize("name,value,want", FOREIGN, ids=[name for name, _, _ in FOREIGN])
def test_foreign_records_follow_the_readme(spark, name, value, want):
    assert reasons_of(spark, [value]) == [want]


def test_out_of_range_reads_the_same_from_the_typed_parse_and_from_the_second_parse(spark):
    """A well-formed reading out of range takes its reason from the typed parse; a `}` inside a
    string sends the same reading down the second parse. Both must word it alike."""
    spellings = [
        "140",
        "140.0",
        "1.4e2",
        "1E+3",
        "100.00000000000001",
        "-0.5",
        "-1e-7",
        "12345678901234567890",
        "1.7976931348623157e308",
        "4.9e-324",
    ]
    plain = [swap('"humidity": 40.0', f'"humidity": {v}') for v in spellings]
    with_brace = [text[:-1] + ', "note": "}"}' for text in plain]
    fast, slow = reasons_of(spark, plain), reasons_of(spark, with_brace)
    assert fast == slow
    assert all(r.startswith("out of range: humidity=") for r in fast if r), fast


def test_the_python_reference_agrees_with_every_case():
    """The oracle used below is itself checked against the hand-written cases."""
    for value, want in CASES + [(v, w) for _, v, w in FOREIGN]:
        ref = reference_reason(encoded(value))
        assert ref == want or (ref and ref.startswith("out of range") and want.startswith(ref + "=")), value


def _mutants(rng: random.Random, n: int) -> list[bytes]:
    """Readings with one or two random departures from the contract (or harmless variations)."""
    json_values = {
        "sensor_id": [
            '"s1"',
            '"123"',
            '"-x"',
            '"{x"',
            '"[a"',
            '"true"',
            '"null"',
            '"a}b"',
            '"  s2 "',
            '""',
            '" \\t"',
            "123",
            "-5",
            "1.5",
            "true",
            "false",
            "null",
            '{"id":"s"}',
            "[1]",
        ],
        "timestamp": [
            '"2026-01-31T08:00:01Z"',
            '"2026-01-31 08:00:01"',
            '"2026-01-31T08:00:01.123456789+01:00"',
            '"2026-01-31T08:00:01+0530"',
            '"2026-01-31T08:00:01+01"',
            '"2026-01-31T08:00:01+19:00"',
            '"2026-01-31T24:00:00"',
            '"2026-01-31"',
            '"10:15:30"',
            '"2026-1-31T08:00:01"',
            '"2026-01-31t08:00:01z"',
            '"2026-01-31T08:00:01 UTC"',
            "1769846401",
            "null",
            '["x"]',
        ],
        "temperature": [
            "21.5",
            "-40",
            "85",
            "85.0000001",
            "-40.5",
            "1e400",
            "-1e400",
            "0",
            '"21.5"',
            '"NaN"',
            "true",
            "null",
            "[1]",
            '{"a":1}',
            "12345678901234567890",
            "2E1",
        ],
        "seq": ["1", "0", "-3", "1.0", "1e2", '"1"', "true", "null", str(2**63), str(-(2**63)), "[1]"],
        "extra": ['{"a":"}"}', '[1,{"b":2}]', '"}{"', '{"a":{"b":1,"b":2}}', "null"],
    }
    trailing = ["{}", '{"sensor_id":"s9"}', " x", "]", "}", ",1", "[]", '"s"', "null", "}}", "]]"]
    spaces = ["", " ", "\t", "\n", "\r\n", " \n "]
    out = []
    for _ in range(n):
        fields = {
            "sensor_id": '"sensor_1"',
            "timestamp": '"2026-01-31T08:00:01Z"',
            "temperature": "21.5",
            "humidity": "40.0",
            "pressure": "1013.25",
            "seq": "7",
        }
        pairs = None
        for _ in range(rng.randint(1, 2)):
            what = rng.randrange(6)
            if what <= 1:
                field = rng.choice(list(json_values))
                fields[field] = rng.choice(json_values[field])
            elif what == 2:
                fields.pop(rng.choice(list(fields)), None)
            elif what == 3 and fields:  # a duplicate name: the last one wins
                field = rng.choice(list(fields))
                pairs = [(field, rng.choice(json_values.get(field, ["1"])))]
            elif what == 4:
                fields["humidity"] = rng.choice(["-0.0", "100", "100.5", "NaN", "Infinity", "-Infinity"])
        items = [*fields.items(), *(pairs or [])]
        rng.shuffle(items)
        sep = rng.choice(spaces)
        text = "{" + ",".join(f'{sep}"{k}"{sep}:{sep}{v}' for k, v in items) + "}"
        roll = rng.random()
        if roll < 0.1:
            text += rng.choice(trailing)
        elif roll < 0.15:
            text = text.replace('"', "'")
        text = rng.choice(spaces) + text + rng.choice(spaces)
        raw = text.encode()
        if rng.random() < 0.02:
            raw = raw.replace(b"sensor_1", b"sensor_\xff")
        out.append(raw)
    return out


def test_random_records_get_the_reason_the_contract_gives(spark):
    values = _mutants(random.Random(6), 3000)
    got = reasons_of(spark, values)
    mismatches = []
    for value, reason in zip(values, got):
        ref = reference_reason(value)
        same = reason == ref or (ref and ref.startswith("out of range") and (reason or "").startswith(ref + "="))
        if not same:
            mismatches.append((value, reason, ref))
    assert not mismatches, mismatches[:10]
    kinds = {(r or "valid").split(":")[0] for r in got}
    assert kinds == {"valid", "invalid JSON", "missing field", "wrong type", "bad timestamp", "out of range"}


def test_valid_readings_have_no_nulls_and_correct_values(spark):
    good, _ = split(spark, [with_(), with_(timestamp="2026-01-31T09:00:01+01:00"), with_(sensor_id=" sensor_2\t")])
    assert list(good[0].asDict()) == list(READING_COLUMNS)
    for row in good:
        assert None not in (row["sensor_id"], row["event_time"], row["temperature"], row["humidity"], row["pressure"])
    # +01:00 is the same instant as 08:00:01 UTC (session time zone UTC)
    assert str(good[1]["event_time"]) == "2026-01-31 08:00:01"
    assert good[0]["temperature"] == 21.5 and good[0]["seq"] == 1
    assert good[2]["sensor_id"] == "sensor_2"  # whitespace around an id is not part of it


def test_rejects_keep_the_original_value_and_source(spark):
    not_utf8 = b'{"sensor_id": "sensor_\xff"}'
    _, bad = split(spark, ["{oops", with_(humidity=140.0), with_(sensor_id=123), not_utf8, with_(sensor_id=" ")])
    assert list(bad[0].asDict()) == list(REJECT_COLUMNS)
    assert bad[0]["value"] == "{oops" and bad[0]["value_base64"] is None
    assert (bad[0]["source_topic"], bad[0]["source_partition"], bad[0]["source_offset"]) == ("t", 0, 0)
    assert bad[0]["sensor_id"] is None
    assert bad[1]["sensor_id"] == "sensor_1"
    assert bad[2]["sensor_id"] is None  # a number names no sensor
    import base64

    assert base64.b64decode(bad[3]["value_base64"]) == not_utf8
    assert bad[4]["sensor_id"] is None  # nor does a blank string


def test_records_carry_readings_and_rejects_in_one_frame(spark):
    rows = parse(kafka_frame(spark, [with_(), b"{oops"])).orderBy("source_offset").collect()
    assert list(rows[0].asDict()) == list(RECORD_COLUMNS)
    assert rows[0]["reason"] is None and rows[0]["temperature"] == 21.5
    assert rows[1]["reason"] == "invalid JSON" and rows[1]["temperature"] is None and rows[1]["event_time"] is None


def test_the_streams_two_halves_give_what_parse_gives(spark):
    """The stream parses in two halves (check, then explain only what did not pass, streaming.py):
    together they give every record exactly the row `parse` gives it."""
    sim = Simulator(sensors=3, seed=9, clock=stepping_clock())
    values = [encode(sim.next_reading()) for _ in range(300)] + _mutants(random.Random(9), 1500)
    frame = kafka_frame(spark, values)
    whole = {row["source_offset"]: row.asDict() for row in parse(frame).collect()}
    checked = check(frame)
    passed = [row for row in passed_readings(checked).collect() if row["reason"] != UNCHECKED]
    explained = explain(failed_check(checked)).collect()
    assert len(passed) + len(explained) == len(values)
    assert 300 <= len(passed) < len(values)  # both halves are exercised
    assert {row["source_offset"]: row.asDict() for row in passed + explained} == whole


def test_the_explainer_gives_what_the_expressions_give(spark, monkeypatch):
    """The explain half behind one JVM function (jobs/jvm/parse, built by `make detector`, as
    `make test` does) gives every record the row the expressions themselves give."""
    import sensorstream.schema as schema

    assert explainer_function(spark) is not None, "no explainer on the classpath: run `make detector`"
    values = [v for v, _ in CASES] + [v for _, v, _ in FOREIGN] + _mutants(random.Random(11), 2000)
    frame = kafka_frame(spark, values)
    explained = parse(frame)
    assert "UDF(" in explained._jdf.queryExecution().optimizedPlan().toString()
    by_jvm = {row["source_offset"]: row.asDict() for row in explained.collect()}
    monkeypatch.setitem(schema._EXPLAIN_PROJECTIONS, spark.sparkContext, schema._projections()[schema._CHECKED :])
    monkeypatch.setitem(schema._CHECK_PROJECTIONS, spark.sparkContext, schema._projections()[: schema._CHECKED])
    inline = parse(frame)
    assert "UDF(" not in inline._jdf.queryExecution().optimizedPlan().toString()
    assert {row["source_offset"]: row.asDict() for row in inline.collect()} == by_jvm
    assert {(r or "valid").split(":")[0] for r in (row["reason"] for row in by_jvm.values())} >= {
        "invalid JSON",
        "missing field",
        "wrong type",
        "bad timestamp",
        "out of range",
    }


def _plain_numbers(rng: random.Random, n: int) -> list[bytes]:
    """Plain readings (the reader's to read) whose numbers take every form JSON allows."""
    forms = [
        lambda: repr(rng.uniform(-40, 85)),
        lambda: str(rng.randint(-40, 85)),
        lambda: f"{rng.uniform(-1, 1):.17e}",
        lambda: f"{rng.uniform(1, 9):.3f}E{rng.randint(-3, 1)}",
        lambda: f"{rng.uniform(1, 9):.20f}e+1",
        lambda: rng.choice(["-0", "-0.0", "0", "0.0", "0e0", "-0E-0", "4.9e-324", "1e-400", "85.00000000000000001"]),
        lambda: str(rng.randint(-(10**19), 10**19)),
        lambda: "0." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))),
    ]
    out = []
    for i in range(n):
        seq = rng.choice([str(rng.randint(-(2**63), 2**63 - 1)), str(rng.randint(0, 10**18)), "0", "-0"])
        text = (
            f'{{"sensor_id":"sensor_{i % 7}","timestamp":"2026-01-31T08:00:{i % 60:02d}Z",'
            f'"temperature":{rng.choice(forms)()},"humidity":{rng.uniform(0, 100)!r},'
            f'"pressure":{rng.choice(forms)()},"seq":{seq},"event_id":"e{i}"}}'
        )
        out.append(text.encode())
    return out


def test_the_reader_gives_what_the_expressions_give(spark, monkeypatch):
    """The plain readings' reader (jobs/jvm/parse, in the same jar) reads most readings, and every
    record gets the row Spark's expressions alone give it: the contract's cases, foreign producers',
    random mutants and numbers in every form."""
    import sensorstream.schema as schema

    assert schema.reader_function(spark) is not None, "no reader on the classpath: run `make detector`"
    rng = random.Random(13)
    sim = Simulator(sensors=3, seed=5, clock=stepping_clock())
    simulated = [encode(sim.next_reading()) for _ in range(500)]
    values = (
        simulated + [v for v, _ in CASES] + [v for _, v, _ in FOREIGN] + _mutants(rng, 2000) + _plain_numbers(rng, 2000)
    )
    frame = kafka_frame(spark, values)
    read = check(frame).where(F.col("read").isNotNull()).select("source_offset").collect()
    assert len({row["source_offset"] for row in read} & set(range(len(simulated)))) >= 0.95 * len(simulated)
    by_reader = {row["source_offset"]: row.asDict() for row in parse(frame).collect()}
    monkeypatch.setitem(schema._CHECK_PROJECTIONS, spark.sparkContext, schema._projections()[: schema._CHECKED])
    assert "read" not in check(frame).columns
    by_expressions = {row["source_offset"]: row.asDict() for row in parse(frame).collect()}
    # repr: -0.0 and 0.0 are equal as numbers, not as what the stream writes
    differ = [
        (values[o], by_reader[o], by_expressions[o]) for o in by_reader if repr(by_reader[o]) != repr(by_expressions[o])
    ]
    assert not differ, differ[:3]


def test_without_the_explainers_jar_the_parse_keeps_its_expressions(spark, monkeypatch):
    import sensorstream.schema as schema

    monkeypatch.setattr(schema, "EXPLAINER_CLASS", "sensorstream.parse.NoSuchExplainer")
    assert explainer_function(spark) is None


def test_an_explainer_that_refuses_its_plan_leaves_the_expressions_with_a_warning(spark, monkeypatch, caplog):
    import sensorstream.schema as schema

    monkeypatch.setattr(schema, "_explained", lambda: F.struct(F.lit(1).alias("not_a_reason")))
    with caplog.at_level("WARNING", logger="sensorstream.schema"):
        assert explainer_function(spark) is None
    assert "refused its plan" in caplog.text and "make detector" in caplog.text


def test_a_reader_that_refuses_its_schema_leaves_from_json_with_a_warning(spark, monkeypatch, caplog):
    from pyspark.sql.types import BooleanType, StructField, StructType

    import sensorstream.schema as schema

    monkeypatch.setattr(schema, "_reader_schema", lambda: StructType([StructField("sensor_id", BooleanType())]))
    with caplog.at_level("WARNING", logger="sensorstream.schema"):
        assert schema.reader_function(spark) is None
    assert "refused its schema" in caplog.text and "make detector" in caplog.text


def test_every_simulated_malformed_record_is_rejected(spark):
    sim = Simulator(sensors=3, seed=8, clock=stepping_clock())
    rng = random.Random(8)
    values, kinds = [], []
    for kind in ("broken_json", "wrong_type", "missing_field", "out_of_range") * 25:
        values.append(malformed(sim.next_reading(), kind, rng))
        kinds.append(kind)
    good, bad = split(spark, values)
    assert good == []
    prefixes = {
        "broken_json": ("invalid JSON",),
        "wrong_type": ("wrong type",),
        "missing_field": ("missing field", "bad timestamp"),
        "out_of_range": ("out of range",),
    }
    for row in bad:
        assert row["reason"].startswith(prefixes[kinds[row["source_offset"]]]), (row["reason"], row["value"])


def _contract_rows(readme: str) -> list[tuple[str, str]]:
    """(rule number, reason) of each row of a README's validation table."""
    rows = []
    for line in (ROOT / readme).read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows.append((cells[0], cells[2]))
    return rows


@pytest.mark.parametrize("readme", ["README.md", "README.es.md"])
def test_the_readmes_state_the_contract_the_code_checks(readme):
    rows = _contract_rows(readme)
    reasons = [reason.strip("`").split(":")[0] for _, reason in rows]
    assert [r for i, r in enumerate(reasons) if r not in reasons[:i]] == list(REASON_KINDS)
    assert [int(n) for n, _ in rows] == sorted(int(n) for n, _ in rows)
    text = (ROOT / readme).read_text(encoding="utf-8")
    for field, (low, high) in RANGES.items():
        # "`temperature` (°C) in [-40, 85]", in either language
        assert re.search(rf"`{field}` \({re.escape(UNITS[field])}\) \w+ \[{low:g}, {high:g}\]", text), field
    assert _contract_rows("README.md") == rows  # English and Spanish give the same reasons, in order


def test_an_alert_reads_back_as_the_stream_writes_it(spark):
    """alert_json (what the stream writes to the alerts topic) against parse_alerts (what the report
    reads): the exact text, nulls left out as Spark's to_json leaves them; and records that are no
    alert left out."""
    at = 1_769_846_400_000_000  # 2026-01-31T08:00:00Z in microseconds
    rows = [
        ("s1|spike:temperature|in|0|5", "s1", "spike", "temperature", 60.0, 18.0, 24.0, at + 1, "in|0|5"),
        ("s1|silent|in|2|9", "s1", "silent", None, None, None, None, at + 60_000_000, "in|2|9"),
    ]
    detected = spark.createDataFrame(
        rows,
        "key string, sensor_id string, kind string, metric string, value double, expected_low double, "
        "expected_high double, event_us long, source string",
    )
    written = detected.select(F.col("key").cast("binary").alias("key"), alert_json().cast("binary").alias("value"))
    assert [bytes(r.value).decode() for r in written.collect()] == [
        '{"sensor_id":"s1","kind":"spike","metric":"temperature","value":60.0,"expected_low":18.0,'
        '"expected_high":24.0,"event_time":"2026-01-31T08:00:00.000001Z","source":"in|0|5"}',
        '{"sensor_id":"s1","kind":"silent","event_time":"2026-01-31T08:01:00.000000Z","source":"in|2|9"}',
    ]
    fire = b'{"sensor_id":"s1","kind":"fire","event_time":"2026-01-31T08:00:00.000000Z"}'  # no such kind
    foreign = spark.createDataFrame([(b"k", b"not json"), (b"k", fire)], "key binary, value binary")
    read = parse_alerts(written.unionByName(foreign)).orderBy("event_time").collect()
    assert tuple(read[0].asDict()) == ALERT_COLUMNS
    assert [(r.key, r.kind, r.metric, r.value, r.expected_high, r.source) for r in read] == [
        ("s1|spike:temperature|in|0|5", "spike", "temperature", 60.0, 24.0, "in|0|5"),
        ("s1|silent|in|2|9", "silent", None, None, None, "in|2|9"),
    ]
    assert [r.event_time.astimezone(timezone.utc) for r in read] == [
        datetime(2026, 1, 31, 8, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2026, 1, 31, 8, 1, tzinfo=timezone.utc),
    ]
