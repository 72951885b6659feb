"""The one settings object, and the only place that reads the environment.

Each setting is declared once, as a field of `Settings` (`_setting(env, default, parser, help,
flag=..., chart=...)`): its name, type, default, env var, flag, help, validation and whether it is
a secret. `SETTINGS` lists the declarations; the CLI's flags, `config show`, and the tests that hold
the README's settings table and the chart (values.yaml, values.schema.json, the ConfigMap) to them
all derive from it. Adding a setting is one declaration plus its use.

Precedence, lowest to highest: defaults <- env file (the original course's `config.env` keys) <-
process environment <- command-line flags. `load_settings()` builds a frozen `Settings`; the
converters `kafka_python_kwargs()`, `confluent_kafka_config()` and `spark_kafka_options()` turn it
into client options, so security settings reach kafka-python, confluent-kafka (librdkafka) and
Spark's `kafka.*` options alike.

Times are `timedelta` here; they become Spark interval strings only at the Spark call
(`spark_interval()`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sensorstream.errors import ConfigError

#: The repository checkout this package runs from, when it runs from one (None in the image).
_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE_DIR.parents[1]
REPO_ROOT: Path | None = _CHECKOUT if (_CHECKOUT / "charts" / "sensorstream").is_dir() else None


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


# --- value parsers: each takes the raw string and returns the typed value or raises ValueError ---

_DURATION_UNITS = {
    "ms": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
# ASCII digits and spaces only, as the chart's schema (Go regular expressions) reads them.
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE | re.ASCII)
#: Kafka's rule for topic names (the chart's schema says the same).
_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def parse_duration(raw: str) -> timedelta:
    """'5 minutes', '5m', '300s', '300' (seconds) -> timedelta; must be positive."""
    match = _DURATION_RE.match(str(raw))
    unit = match.group(2).lower() if match else ""
    if not match or (unit and unit not in _DURATION_UNITS):
        raise ValueError(f"{raw!r} is not a duration (examples: '5 minutes', '30s', '1h')")
    seconds = float(match.group(1)) * _DURATION_UNITS.get(unit, 1)
    if seconds <= 0:
        raise ValueError(f"{raw!r} must be longer than zero")
    return timedelta(seconds=seconds)


def spark_interval(delta: timedelta) -> str:
    """timedelta -> the interval string Spark's window(), withWatermark() and triggers take."""
    millis = round(delta.total_seconds() * 1000)
    return f"{millis // 1000} seconds" if millis % 1000 == 0 else f"{millis} milliseconds"


def micros(delta: timedelta) -> int:
    """timedelta -> whole microseconds, the unit of Spark's timestamps (unix_micros)."""
    return round(delta.total_seconds() * 1_000_000)


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """The parser, or None for an empty (or blank) value."""
    return lambda raw: parse(raw) if str(raw).strip() else None


def _at_least(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < low:
            raise ValueError(f"{raw!r} must be {low} or more")
        return value

    return parse


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{raw!r} must be a number, 0 or more")
    return value


def _within(convert: Callable[[str], float], low: float, high: float, problem: str) -> Callable[[str], float]:
    """A parser of numbers from low to high (NaN is outside); `problem` completes the error."""

    def parse(raw: str) -> float:
        value = convert(raw)
        if not low <= value <= high:
            raise ValueError(f"{raw!r} {problem}")
        return value

    return parse


_ratio = _within(float, 0, 1, "must be between 0 and 1")


def _share(raw: str) -> float:
    """A ratio above 0, up to 1 (NaN is outside)."""
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError(f"{raw!r} must be above 0 and at most 1 (e.g. 0.5 for half)")
    return value


class _Choices:
    """A parser that also names the values it accepts (the CLI's help, the chart's schema and the
    settings table are checked against them)."""

    def __init__(self, parse: Callable[[str], Any], choices: tuple[str, ...]):
        self.parse, self.choices = parse, choices

    def __call__(self, raw: str) -> Any:
        return self.parse(raw)


def _choice_list(*allowed: str) -> _Choices:
    def parse(raw: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(p.strip().lower() for p in str(raw).split(",") if p.strip()))
        unknown = [p for p in items if p not in allowed]
        if unknown or not items:
            raise ValueError(f"{raw!r}: choose one or more of {', '.join(allowed)} (comma-separated)")
        return items

    return _Choices(parse, allowed)


def _choice(*allowed: str) -> _Choices:
    def parse(raw: str) -> str:
        value = str(raw).strip()
        if value.upper() in (a.upper() for a in allowed):
            return next(a for a in allowed if a.upper() == value.upper())
        raise ValueError(f"{raw!r}: choose one of {', '.join(allowed)}")

    return _Choices(parse, allowed)


def _optional_choice(*allowed: str) -> _Choices:
    return _Choices(_optional(_choice(*allowed)), allowed)


_port = _within(int, 1, 65535, "is not a TCP port (1 to 65535)")


def _text(raw: str) -> str:
    return str(raw).strip()


def _non_empty(raw: str) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _topic(raw: str) -> str:
    if not _TOPIC_RE.fullmatch(str(raw)):
        raise ValueError(f"{raw!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; 1 to 249)")
    return str(raw)


def _path(raw: str) -> Path:
    return Path(_non_empty(raw)).expanduser()


def _secret(raw: str) -> Secret:
    return Secret(str(raw))


# --- the settings, each declared once -----------------------------------------------------------

#: The `commands` of a flag that belongs to the program rather than to one command.
EVERY_COMMAND = "sensorstream"


@dataclass(frozen=True)
class Setting:
    """One setting, declared once as a field of `Settings` (the field's name is the setting's).

    Everything else derives from this: the `Settings` attribute and its type (the field's
    annotation), the env var, the command-line flag and its help, `config show`, and the checks
    that hold the README's settings table and the chart (values.yaml, values.schema.json, the
    ConfigMap) to it.

    default  the value as text, as an env var would give it ("" = not set)
    parse    text -> typed value, raising ValueError: the type and the validation
    flag     the command-line flag that overrides it, in `commands` (EVERY_COMMAND: before the command)
    chart    the values.yaml key the chart passes as this env var, when it passes one as is (a
             boolean key as on or off)
    """

    env: str
    default: str
    parse: Callable[[str], Any]
    help: str
    flag: str | None = None
    metavar: str | None = None
    commands: tuple[str, ...] = ()
    chart: str | None = None
    secret: bool = False
    name: str = ""

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The allowed values, for a setting that takes one (or several) of a fixed set."""
        return getattr(self.parse, "choices", None)

    @property
    def flag_help(self) -> str:
        return f"{self.help} [env {self.env}; default {self.default or 'unset'}]"


def _setting(env: str, default: str, parse: Callable[[str], Any], help: str, **more: Any) -> Any:
    """A `Settings` field declaring one setting (see `Setting`)."""
    return dataclasses.field(metadata={"setting": Setting(env, default, parse, help, **more)})


SINKS = ("console", "kafka", "parquet")
REPORT_FORMATS = ("csv", "parquet", "json", "html")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: The producer's Kafka clients: kafka-python (the default, pure Python) or confluent-kafka
#: (librdkafka, the optional `fast` extra).
PRODUCER_CLIENTS = ("kafka-python", "confluent-kafka")
#: What the producer tells of the simulator's faults (simulator.FAULT_HEADER): nothing, or record headers.
GROUND_TRUTH = ("off", "headers")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: text: the human-readable lines; json: one JSON object per line (logs.py)
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    """Every setting: one field each, declared with `_setting` (env var, default, parser, help...)."""

    # Kafka
    bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        _non_empty,
        "Kafka bootstrap servers, host:port[,host:port]",
        flag="--bootstrap-servers",
        metavar="HOST:PORT",
        commands=(EVERY_COMMAND,),
    )
    input_topic: str = _setting(
        "KAFKA_INPUT_TOPIC",
        "input_topic",
        _topic,
        "topic of raw readings",
        flag="--topic",
        metavar="NAME",
        commands=("produce",),
        chart="topics.input.name",
    )
    output_topic: str = _setting(
        "KAFKA_OUTPUT_TOPIC",
        "output_topic",
        _topic,
        "topic of per-sensor window statistics",
        chart="topics.output.name",
    )
    dead_letter_topic: str = _setting(
        "KAFKA_DEAD_LETTER_TOPIC",
        "dead_letter_topic",
        _topic,
        "topic of malformed records, with the reason",
        chart="topics.deadLetter.name",
    )
    alerts_topic: str = _setting(
        "KAFKA_ALERTS_TOPIC",
        "alerts_topic",
        _topic,
        "topic of the detector's alerts (STREAM_DETECT=on), one JSON record each; the report counts them",
        chart="topics.alerts.name",
    )
    security_protocol: str = _setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _choice(*SECURITY_PROTOCOLS),
        "Kafka security protocol",
        chart="kafka.security.protocol",
    )
    sasl_mechanism: str | None = _setting(
        "KAFKA_SASL_MECHANISM",
        "",
        _optional_choice(*SASL_MECHANISMS),
        "SASL mechanism (with SASL_* protocols)",
        chart="kafka.security.saslMechanism",
    )
    sasl_username: str = _setting("KAFKA_SASL_USERNAME", "", _text, "SASL user name")
    sasl_password: Secret = _setting("KAFKA_SASL_PASSWORD", "", _secret, "SASL password", secret=True)
    ssl_ca_location: Path | None = _setting("KAFKA_SSL_CA_LOCATION", "", _optional(_path), "CA certificate (PEM) file")
    ssl_cert_location: Path | None = _setting(
        "KAFKA_SSL_CERT_LOCATION", "", _optional(_path), "client certificate (PEM) file"
    )
    ssl_key_location: Path | None = _setting("KAFKA_SSL_KEY_LOCATION", "", _optional(_path), "client key (PEM) file")
    connect_timeout: timedelta = _setting(
        "KAFKA_CONNECT_TIMEOUT",
        "10 seconds",
        parse_duration,
        "how long a command waits for a broker before saying it is not reachable",
    )
    # Spark
    spark_app_name: str = _setting(
        "SPARK_APP_NAME", "sensorstream", _non_empty, "Spark application name", chart="settings.sparkAppName"
    )
    spark_master: str = _setting(
        "SPARK_MASTER",
        "local[2]",
        _non_empty,
        "Spark master when not launched by spark-submit",
        chart="report.sparkMaster",
    )
    jars_dir: Path | None = _setting(
        "SENSORSTREAM_JARS_DIR",
        "",
        _optional(_path),
        "folder of the connector jars (default: .sensorstream/jars/spark in the checkout)",
    )
    # Streaming
    checkpoint_location: Path = _setting(
        "CHECKPOINT_LOCATION",
        "data/checkpoints",
        _path,
        "root folder of the streaming checkpoints (one sub-folder per sink)",
        flag="--checkpoint-root",
        metavar="DIR",
        commands=("stream", "status"),
        chart="stream.checkpoint.mountPath",
    )
    trigger_interval: timedelta = _setting(
        "BATCH_DURATION",
        "250 milliseconds",
        parse_duration,
        "micro-batch trigger interval (plain number = seconds)",
        flag="--trigger",
        metavar="DURATION",
        commands=("stream",),
        chart="stream.trigger",
    )
    window_duration: timedelta = _setting(
        "WINDOW_DURATION",
        "5 minutes",
        parse_duration,
        "event-time window length",
        flag="--window",
        metavar="DURATION",
        commands=("stream",),
        chart="stream.window",
    )
    slide_duration: timedelta | None = _setting(
        "SLIDE_DURATION",
        "",
        _optional(parse_duration),
        "window slide; empty = tumbling windows",
        flag="--slide",
        metavar="DURATION",
        commands=("stream",),
        chart="stream.slide",
    )
    watermark_delay: timedelta = _setting(
        "WATERMARK_DELAY",
        "10 minutes",
        parse_duration,
        "how late a reading may arrive and still count",
        flag="--watermark",
        metavar="DURATION",
        commands=("stream",),
        chart="stream.watermark",
    )
    starting_offsets: str = _setting(
        "STARTING_OFFSETS",
        "earliest",
        _choice("earliest", "latest"),
        "where a new stream starts reading (a checkpoint overrides it)",
        flag="--starting-offsets",
        metavar="earliest|latest",
        commands=("stream",),
        chart="stream.startingOffsets",
    )
    max_offsets_per_trigger: int | None = _setting(
        "MAX_OFFSETS_PER_TRIGGER",
        "",
        _optional(_at_least(1)),
        "cap on records per micro-batch; empty = no cap",
        flag="--max-offsets-per-trigger",
        metavar="N",
        commands=("stream",),
        chart="stream.maxOffsetsPerTrigger",
    )
    state_partitions: int = _setting(
        "STREAM_STATE_PARTITIONS",
        "4",
        _at_least(1),
        "partitions of the stream's window state (Spark's state store); fixed when a checkpoint is "
        "first written: a new value takes effect after --reset-checkpoint",
        flag="--state-partitions",
        metavar="N",
        commands=("stream",),
        chart="stream.statePartitions",
    )
    state_store: str = _setting(
        "STREAM_STATE_STORE",
        "hdfs",
        _choice("hdfs", "rocksdb"),
        "where the stream's open windows live: hdfs (Spark's default: executor memory, deltas to the "
        "checkpoint) or rocksdb (executor disk, for states larger than memory); fixed when a checkpoint "
        "is first written",
        flag="--state-store",
        metavar="hdfs|rocksdb",
        commands=("stream",),
        chart="stream.stateStore",
    )
    detect: str = _setting(
        "STREAM_DETECT",
        "off",
        _choice("off", "on"),
        "on: tell which sensor is wrong (spikes, stuck and silent sensors) on the alerts topic; needs the "
        "detector's jar (`make detector`) and the rocksdb state store (taken when on); fixed when the checkpoint "
        "is first written",
        flag="--detect",
        metavar="off|on",
        commands=("stream",),
        chart="stream.detect.enabled",
    )
    spike_k: float = _setting(
        "STREAM_SPIKE_K",
        "8",
        _non_negative_float,
        "a spike: a value more than this many standard deviations from its sensor's recent mean",
        flag="--spike-k",
        metavar="K",
        commands=("stream",),
        chart="stream.detect.spikeK",
    )
    stuck_run: int = _setting(
        "STREAM_STUCK_RUN",
        "3",
        _at_least(2),
        "a stuck sensor: this many consecutive readings with the very same values",
        flag="--stuck-run",
        metavar="N",
        commands=("stream",),
        chart="stream.detect.stuckRun",
    )
    silent_after: timedelta = _setting(
        "STREAM_SILENT_AFTER",
        "2 minutes",
        parse_duration,
        "a silent sensor: nothing from it for this long (event time) while the others go on",
        flag="--silent-after",
        metavar="DURATION",
        commands=("stream",),
        chart="stream.detect.silentAfter",
    )
    max_reject_ratio: float | None = _setting(
        "STREAM_MAX_REJECT_RATIO",
        "",
        _optional(_share),
        "stop the stream (exit 1) after a micro-batch whose share of rejects is above this, "
        "above 0 and at most 1; empty = never",
        flag="--max-reject-ratio",
        metavar="R",
        commands=("stream",),
        chart="stream.maxRejectRatio",
    )
    sinks: tuple[str, ...] = _setting(
        "STREAM_SINKS",
        "console,kafka",
        _choice_list(*SINKS),
        "stream sinks: console, kafka, parquet",
        flag="--sinks",
        metavar=",".join(SINKS),
        commands=("stream",),
        chart="stream.sinks",
    )
    parquet_dir: Path = _setting(
        "STREAM_PARQUET_DIR",
        "data/windows",
        _path,
        "folder of the parquet sink",
        flag="--parquet-dir",
        metavar="DIR",
        commands=("stream",),
    )
    # Report
    report_dir: Path = _setting(
        "REPORT_DIR",
        "data/sensor_report",
        _path,
        "folder of the batch reports",
        flag="--report-dir",
        metavar="DIR",
        commands=("report",),
        chart="report.reports.mountPath",
    )
    report_formats: tuple[str, ...] = _setting(
        "REPORT_FORMATS",
        "csv,html",
        _choice_list(*REPORT_FORMATS),
        "report formats: csv, parquet, json, html (one page with charts, for people)",
        flag="--format",
        metavar=",".join(REPORT_FORMATS),
        commands=("report",),
        chart="report.formats",
    )
    # Producer
    sensors: int = _setting(
        "PRODUCER_SENSORS",
        "10",
        _at_least(1),
        "number of simulated sensors",
        flag="--sensors",
        metavar="N",
        commands=("produce",),
        chart="producer.sensors",
    )
    rate: float = _setting(
        "PRODUCER_RATE",
        "0.5",
        _non_negative_float,
        "readings per second; 0 = as fast as possible",
        flag="--rate",
        metavar="PER_S",
        commands=("produce",),
        chart="producer.rate",
    )
    count: int = _setting(
        "PRODUCER_COUNT",
        "100",
        _at_least(0),
        "readings to send; 0 = unlimited",
        flag="--count",
        metavar="N",
        commands=("produce",),
    )
    seed: int | None = _setting(
        "PRODUCER_SEED",
        "",
        _optional(int),
        "simulator seed; empty = random",
        flag="--seed",
        metavar="N",
        commands=("produce",),
        chart="producer.seed",
    )
    bad_ratio: float = _setting(
        "PRODUCER_BAD_RATIO",
        "0",
        _ratio,
        "share of malformed records (broken JSON, wrong types, missing fields, out of range), 0 to 1",
        flag="--bad-ratio",
        metavar="F",
        commands=("produce",),
        chart="producer.badRatio",
    )
    late_ratio: float = _setting(
        "PRODUCER_LATE_RATIO",
        "0",
        _ratio,
        "share of readings with out-of-order timestamps (30 s to 15 min late), 0 to 1",
        flag="--late-ratio",
        metavar="F",
        commands=("produce",),
        chart="producer.lateRatio",
    )
    ground_truth: str = _setting(
        "PRODUCER_GROUND_TRUTH",
        "off",
        _choice(*GROUND_TRUTH),
        "what the producer tells of the simulator's faults: off, or headers (a sensorstream-fault header "
        "on each spiked or stuck reading, to score a detector; the readings' bytes stay the same)",
        flag="--ground-truth",
        metavar="|".join(GROUND_TRUTH),
        commands=("produce",),
    )
    producer_workers: int = _setting(
        "PRODUCER_WORKERS",
        "0",
        _at_least(0),
        "producer processes, each owning a share of the sensors; 0 = one per CPU core at rate 0, else 1",
        flag="--workers",
        metavar="N",
        commands=("produce",),
    )
    producer_client: str = _setting(
        "PRODUCER_CLIENT",
        "kafka-python",
        _choice(*PRODUCER_CLIENTS),
        "producer's Kafka client: kafka-python, or confluent-kafka (faster; the `fast` extra)",
        flag="--client",
        metavar="|".join(PRODUCER_CLIENTS),
        commands=("produce",),
    )
    # Watching it: logs, metrics, status
    log_level: str = _setting(
        "LOG_LEVEL",
        "INFO",
        _choice(*LOG_LEVELS),
        "log level of every command: DEBUG, INFO, WARNING, ERROR",
        flag="--log-level",
        metavar="LEVEL",
        commands=(EVERY_COMMAND,),
        chart="settings.logLevel",
    )
    log_format: str = _setting(
        "LOG_FORMAT",
        "text",
        _choice(*LOG_FORMATS),
        "log lines: text (for people) or json (one object per line)",
        flag="--log-format",
        metavar="|".join(LOG_FORMATS),
        commands=(EVERY_COMMAND,),
        chart="settings.logFormat",
    )
    metrics_port: int | None = _setting(
        "METRICS_PORT",
        "",
        _optional(_port),
        "port of the Prometheus endpoint (/metrics) of produce and stream; empty = no endpoint",
        flag="--metrics-port",
        metavar="PORT",
        commands=("produce", "stream"),
        chart="metrics.port",
    )
    metrics_host: str = _setting(
        "METRICS_HOST",
        "127.0.0.1",
        _non_empty,
        "address the metrics endpoint listens on (0.0.0.0 in a pod, for Prometheus to reach it)",
        flag="--metrics-host",
        metavar="ADDRESS",
        commands=("produce", "stream"),
        chart="metrics.host",
    )
    spark_ui_port: int = _setting(
        "SPARK_UI_PORT",
        "4040",
        _port,
        "port of the stream driver's Spark UI, which serves Spark's own metrics at /metrics/prometheus "
        "(on only with METRICS_PORT)",
        flag="--spark-ui-port",
        metavar="PORT",
        commands=("stream",),
        chart="metrics.sparkUiPort",
    )
    max_lag: int = _setting(
        "STATUS_MAX_LAG",
        "1000",
        _at_least(0),
        "`status` exits 1 when the stream is behind by more records than this",
        flag="--max-lag",
        metavar="N",
        commands=("status",),
    )
    #: where each value came from: "default", "env file", "environment" or "flag"
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


#: Every setting, in the order of the declarations.
SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(f.metadata["setting"], name=f.name)
    for f in dataclasses.fields(Settings)
    if "setting" in f.metadata
)
_BY_NAME = {s.name: s for s in SETTINGS}


def declaration(name: str) -> Setting:
    """The declaration of one setting, by its name."""
    return _BY_NAME[name]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; '#' comments, blank lines, optional quotes and `export ` are allowed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("env file", "SENSORSTREAM_ENV_FILE", f"cannot read {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError("env file", "SENSORSTREAM_ENV_FILE", f"{path}:{number} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(
    env_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: defaults <- env file <- environment <- overrides (CLI flags).

    `env_file` defaults to $SENSORSTREAM_ENV_FILE. Overrides are raw strings or already-typed values
    keyed by setting name; None means "not given".
    """
    environ = os.environ if environ is None else environ
    env_file = env_file or environ.get("SENSORSTREAM_ENV_FILE") or None
    file_values = read_env_file(Path(env_file)) if env_file else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for declared in SETTINGS:
        raw, source = declared.default, "default"
        if declared.env in file_values:
            raw, source = file_values[declared.env], "env file"
        if declared.env in environ:
            raw, source = environ[declared.env], "environment"
        override = (overrides or {}).get(declared.name)
        if override is not None:
            raw, source = override, "flag"
        values[declared.name] = _parse(declared, raw)
        sources[declared.name] = source
    settings = Settings(**values, sources=sources)
    _check_consistency(settings)
    return settings


def _parse(setting: Setting, raw: Any) -> Any:
    if not isinstance(raw, str):
        raw = ",".join(raw) if isinstance(raw, (list, tuple)) else str(raw)
    try:
        return setting.parse(raw)
    except (ValueError, TypeError) as exc:
        problem = str(exc)
        if problem.startswith(("invalid literal", "could not convert")):
            problem = f"{raw!r} is not a number"
        raise invalid(setting.name, problem) from None


def invalid(name: str, problem: str) -> ConfigError:
    """The error for an invalid value of a setting: names its flag (or name) and its env var."""
    declared = _BY_NAME[name]
    return ConfigError(declared.flag or declared.name, declared.env, problem)


def _check_consistency(settings: Settings) -> None:
    if settings.slide_duration and settings.slide_duration > settings.window_duration:
        raise invalid("slide_duration", "must not be longer than the window")
    if settings.security_protocol.startswith("SASL") and not settings.sasl_mechanism:
        raise invalid(
            "sasl_mechanism", f"required with {declaration('security_protocol').env}={settings.security_protocol}"
        )
    if bool(settings.ssl_cert_location) != bool(settings.ssl_key_location):
        raise invalid("ssl_key_location", "client certificate and key go together: set both or neither")


def describe(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(setting, env var, shown value, source) for every setting; secrets redacted."""
    rows = []
    for declared in SETTINGS:
        value = getattr(settings, declared.name)
        if declared.secret:
            shown = "********" if value else "(not set)"
        elif isinstance(value, timedelta):
            shown = spark_interval(value)
        elif isinstance(value, tuple):
            shown = ",".join(value)
        elif value is None or value == "":
            shown = "(not set)"
        else:
            shown = str(value)
        rows.append((declared.name, declared.env, shown, settings.sources.get(declared.name, "default")))
    return rows


# --- converters to client options -------------------------------------------------------------

#: Where each client takes the security settings: kafka-python's keyword names, librdkafka's names.
_KAFKA_PYTHON_NAMES = {
    "mechanism": "sasl_mechanism",
    "username": "sasl_plain_username",
    "password": "sasl_plain_password",
    "ca": "ssl_cafile",
    "cert": "ssl_certfile",
    "key": "ssl_keyfile",
}
_LIBRDKAFKA_NAMES = {
    "mechanism": "sasl.mechanism",
    "username": "sasl.username",
    "password": "sasl.password",
    "ca": "ssl.ca.location",
    "cert": "ssl.certificate.location",
    "key": "ssl.key.location",
}


def _security_options(settings: Settings, names: Mapping[str, str]) -> dict[str, str]:
    """The SASL and TLS settings under one client's option names."""
    options = {}
    if settings.sasl_mechanism:
        options[names["mechanism"]] = settings.sasl_mechanism
        options[names["username"]] = settings.sasl_username
        options[names["password"]] = settings.sasl_password.reveal()
    if settings.ssl_ca_location:
        options[names["ca"]] = str(settings.ssl_ca_location)
    if settings.ssl_cert_location:
        options[names["cert"]] = str(settings.ssl_cert_location)
        options[names["key"]] = str(settings.ssl_key_location)
    return options


def kafka_python_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and security options for kafka-python clients."""
    return {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
        **_security_options(settings, _KAFKA_PYTHON_NAMES),
    }


def confluent_kafka_config(settings: Settings) -> dict[str, str]:
    """The same connection and security options in librdkafka's names, for confluent-kafka clients."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol.lower(),
        **_security_options(settings, _LIBRDKAFKA_NAMES),
    }


_JAAS_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def spark_kafka_options(settings: Settings) -> dict[str, str]:
    """The same connection and security options as Spark's `kafka.*` source/sink options."""
    options = {
        "kafka.bootstrap.servers": settings.bootstrap_servers,
        "kafka.security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        user = settings.sasl_username.replace('"', '\\"')
        password = settings.sasl_password.reveal().replace('"', '\\"')
        options["kafka.sasl.mechanism"] = settings.sasl_mechanism
        options["kafka.sasl.jaas.config"] = (
            f'{_JAAS_MODULES[settings.sasl_mechanism]} required username="{user}" password="{password}";'
        )
    if settings.ssl_ca_location:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = str(settings.ssl_ca_location)
    if settings.ssl_cert_location and settings.ssl_key_location:
        # Kafka's PEM key store takes the certificate chain and the key as text.
        options["kafka.ssl.keystore.type"] = "PEM"
        options["kafka.ssl.keystore.certificate.chain"] = Path(settings.ssl_cert_location).read_text()
        options["kafka.ssl.keystore.key"] = Path(settings.ssl_key_location).read_text()
    return options


def default_state_dir() -> Path:
    """Where the local stack keeps jars, broker data and tools: .sensorstream in the checkout."""
    override = os.environ.get("SENSORSTREAM_STATE_DIR")
    if override:
        return Path(override).expanduser()
    return (REPO_ROOT or Path.cwd()) / ".sensorstream"


def default_values_file() -> Path:
    """The chart's values.yaml: the one definition of topic names, partitions and config."""
    override = os.environ.get("SENSORSTREAM_VALUES_FILE")
    if override:
        return Path(override).expanduser()
    return (REPO_ROOT or Path.cwd()) / "charts" / "sensorstream" / "values.yaml"
