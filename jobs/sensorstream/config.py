"""The one settings object, and the only place that reads the environment.

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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

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
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


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


def _optional_duration(raw: str) -> timedelta | None:
    return parse_duration(raw) if str(raw).strip() else None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(f"{raw!r} must be 1 or more")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"{raw!r} must be 0 or more")
    return value


def _optional_positive_int(raw: str) -> int | None:
    return _positive_int(raw) if str(raw).strip() else None


def _optional_int(raw: str) -> int | None:
    return int(raw) if str(raw).strip() else None


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{raw!r} must be a number, 0 or more")
    return value


def _ratio(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError(f"{raw!r} must be between 0 and 1")
    return value


def _choice_list(*allowed: str) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(p.strip().lower() for p in str(raw).split(",") if p.strip()))
        unknown = [p for p in items if p not in allowed]
        if unknown or not items:
            raise ValueError(f"{raw!r}: choose one or more of {', '.join(allowed)} (comma-separated)")
        return items

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = str(raw).strip()
        if value.upper() in (a.upper() for a in allowed):
            return next(a for a in allowed if a.upper() == value.upper())
        raise ValueError(f"{raw!r}: choose one of {', '.join(allowed)}")

    return parse


def _optional_choice(*allowed: str) -> Callable[[str], str | None]:
    strict = _choice(*allowed)
    return lambda raw: strict(raw) if str(raw).strip() else None


def _text(raw: str) -> str:
    return str(raw).strip()


def _non_empty(raw: str) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _path(raw: str) -> Path:
    return Path(_non_empty(raw)).expanduser()


def _optional_path(raw: str) -> Path | None:
    return Path(raw).expanduser() if str(raw).strip() else None


def _secret(raw: str) -> Secret:
    return Secret(str(raw))


@dataclass(frozen=True)
class Setting:
    """One setting: its attribute name, env var, default (as text), parser and help."""

    name: str
    env: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def flag(self) -> str | None:
        """The command-line flag that overrides this setting, if the CLI has one."""
        return FLAGS.get(self.name)


#: The settings the command line can override, and their flags.
FLAGS = {
    "bootstrap_servers": "--bootstrap-servers",
    "input_topic": "--topic",
    "sensors": "--sensors",
    "count": "--count",
    "rate": "--rate",
    "seed": "--seed",
    "producer_workers": "--workers",
    "producer_client": "--client",
    "sinks": "--sinks",
    "window_duration": "--window",
    "slide_duration": "--slide",
    "watermark_delay": "--watermark",
    "trigger_interval": "--trigger",
    "starting_offsets": "--starting-offsets",
    "max_offsets_per_trigger": "--max-offsets-per-trigger",
    "checkpoint_location": "--checkpoint-root",
    "parquet_dir": "--parquet-dir",
    "report_formats": "--format",
    "report_dir": "--report-dir",
}

SINKS = ("console", "kafka", "parquet")
REPORT_FORMATS = ("csv", "parquet", "json")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: The producer's Kafka clients: kafka-python (the default, pure Python) or confluent-kafka
#: (librdkafka, the optional `fast` extra).
PRODUCER_CLIENTS = ("kafka-python", "confluent-kafka")

SETTINGS: tuple[Setting, ...] = (
    # Kafka
    Setting("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092", _non_empty,
            "Kafka bootstrap servers, host:port[,host:port]"),
    Setting("input_topic", "KAFKA_INPUT_TOPIC", "input_topic", _non_empty, "topic of raw readings"),
    Setting("output_topic", "KAFKA_OUTPUT_TOPIC", "output_topic", _non_empty,
            "topic of per-sensor window statistics"),
    Setting("dead_letter_topic", "KAFKA_DEAD_LETTER_TOPIC", "dead_letter_topic", _non_empty,
            "topic of malformed records, with the reason"),
    Setting("security_protocol", "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", _choice(*SECURITY_PROTOCOLS),
            "Kafka security protocol"),
    Setting("sasl_mechanism", "KAFKA_SASL_MECHANISM", "", _optional_choice(*SASL_MECHANISMS),
            "SASL mechanism (with SASL_* protocols)"),
    Setting("sasl_username", "KAFKA_SASL_USERNAME", "", _text, "SASL user name"),
    Setting("sasl_password", "KAFKA_SASL_PASSWORD", "", _secret, "SASL password", secret=True),
    Setting("ssl_ca_location", "KAFKA_SSL_CA_LOCATION", "", _optional_path, "CA certificate (PEM) file"),
    Setting("ssl_cert_location", "KAFKA_SSL_CERT_LOCATION", "", _optional_path,
            "client certificate (PEM) file"),
    Setting("ssl_key_location", "KAFKA_SSL_KEY_LOCATION", "", _optional_path, "client key (PEM) file"),
    # Spark
    Setting("spark_app_name", "SPARK_APP_NAME", "sensorstream", _non_empty, "Spark application name"),
    Setting("spark_master", "SPARK_MASTER", "local[2]", _non_empty,
            "Spark master when not launched by spark-submit"),
    Setting("jars_dir", "SENSORSTREAM_JARS_DIR", "", _optional_path,
            "folder of the connector jars (default: .sensorstream/jars/spark in the checkout)"),
    # Streaming
    Setting("checkpoint_location", "CHECKPOINT_LOCATION", "data/checkpoints", _path,
            "root folder of the streaming checkpoints (one sub-folder per sink)"),
    Setting("trigger_interval", "BATCH_DURATION", "1 second", parse_duration,
            "micro-batch trigger interval (plain number = seconds)"),
    Setting("window_duration", "WINDOW_DURATION", "5 minutes", parse_duration, "event-time window length"),
    Setting("slide_duration", "SLIDE_DURATION", "", _optional_duration,
            "window slide; empty = tumbling windows"),
    Setting("watermark_delay", "WATERMARK_DELAY", "10 minutes", parse_duration,
            "how late a reading may arrive and still count"),
    Setting("starting_offsets", "STARTING_OFFSETS", "earliest", _choice("earliest", "latest"),
            "where a new stream starts reading (a checkpoint overrides it)"),
    Setting("max_offsets_per_trigger", "MAX_OFFSETS_PER_TRIGGER", "", _optional_positive_int,
            "cap on records per micro-batch; empty = no cap"),
    Setting("sinks", "STREAM_SINKS", "console,kafka", _choice_list(*SINKS),
            "stream sinks: console, kafka, parquet"),
    Setting("parquet_dir", "STREAM_PARQUET_DIR", "data/windows", _path,
            "folder of the parquet sink"),
    # Report
    Setting("report_dir", "REPORT_DIR", "data/sensor_report", _path, "folder of the batch reports"),
    Setting("report_formats", "REPORT_FORMATS", "csv", _choice_list(*REPORT_FORMATS),
            "report formats: csv, parquet, json"),
    # Producer
    Setting("sensors", "PRODUCER_SENSORS", "10", _positive_int, "number of simulated sensors"),
    Setting("rate", "PRODUCER_RATE", "0.5", _non_negative_float, "readings per second; 0 = as fast as possible"),
    Setting("count", "PRODUCER_COUNT", "100", _non_negative_int, "readings to send; 0 = unlimited"),
    Setting("seed", "PRODUCER_SEED", "", _optional_int, "simulator seed; empty = random"),
    Setting("producer_workers", "PRODUCER_WORKERS", "0", _non_negative_int,
            "producer processes, each owning a share of the sensors; 0 = one per CPU core at rate 0, else 1"),
    Setting("producer_client", "PRODUCER_CLIENT", "kafka-python", _choice(*PRODUCER_CLIENTS),
            "producer's Kafka client: kafka-python, or confluent-kafka (faster; pip install 'sensorstream[fast]')"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    input_topic: str
    output_topic: str
    dead_letter_topic: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str
    sasl_password: Secret
    ssl_ca_location: Path | None
    ssl_cert_location: Path | None
    ssl_key_location: Path | None
    spark_app_name: str
    spark_master: str
    jars_dir: Path | None
    checkpoint_location: Path
    trigger_interval: timedelta
    window_duration: timedelta
    slide_duration: timedelta | None
    watermark_delay: timedelta
    starting_offsets: str
    max_offsets_per_trigger: int | None
    sinks: tuple[str, ...]
    parquet_dir: Path
    report_dir: Path
    report_formats: tuple[str, ...]
    sensors: int
    rate: float
    count: int
    seed: int | None
    producer_workers: int
    producer_client: str
    #: where each value came from: "default", "env file", "environment" or "flag"
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


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
    for setting in SETTINGS:
        raw, source = setting.default, "default"
        if setting.env in file_values:
            raw, source = file_values[setting.env], "env file"
        if setting.env in environ:
            raw, source = environ[setting.env], "environment"
        override = (overrides or {}).get(setting.name)
        if override is not None:
            raw, source = override, "flag"
        values[setting.name] = _parse(setting, raw)
        sources[setting.name] = source
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
        raise ConfigError(setting.flag or setting.name, setting.env, problem) from None


def _check_consistency(settings: Settings) -> None:
    if settings.slide_duration and settings.slide_duration > settings.window_duration:
        raise ConfigError("--slide", "SLIDE_DURATION", "must not be longer than the window")
    if settings.security_protocol.startswith("SASL") and not settings.sasl_mechanism:
        raise ConfigError("sasl_mechanism", "KAFKA_SASL_MECHANISM",
                          f"required with KAFKA_SECURITY_PROTOCOL={settings.security_protocol}")
    if bool(settings.ssl_cert_location) != bool(settings.ssl_key_location):
        raise ConfigError("ssl_key_location", "KAFKA_SSL_KEY_LOCATION",
                          "client certificate and key go together: set both or neither")


def describe(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(setting, env var, shown value, source) for every setting; secrets redacted."""
    rows = []
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        if setting.secret:
            shown = "********" if value else "(not set)"
        elif isinstance(value, timedelta):
            shown = spark_interval(value)
        elif isinstance(value, tuple):
            shown = ",".join(value)
        elif value is None or value == "":
            shown = "(not set)"
        else:
            shown = str(value)
        rows.append((setting.name, setting.env, shown, settings.sources.get(setting.name, "default")))
    return rows


def env_var(name: str) -> str:
    """The env var of a setting, for messages and --help."""
    return _BY_NAME[name].env


def setting_help(name: str) -> str:
    setting = _BY_NAME[name]
    return f"{setting.help} [env {setting.env}; default {setting.default or 'unset'}]"


def setting_flag(name: str) -> str:
    return FLAGS[name]


# --- converters to client options -------------------------------------------------------------

def kafka_python_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection and security options for kafka-python clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.reveal()
    if settings.ssl_ca_location:
        kwargs["ssl_cafile"] = str(settings.ssl_ca_location)
    if settings.ssl_cert_location:
        kwargs["ssl_certfile"] = str(settings.ssl_cert_location)
        kwargs["ssl_keyfile"] = str(settings.ssl_key_location)
    return kwargs


def confluent_kafka_config(settings: Settings) -> dict[str, str]:
    """The same connection and security options in librdkafka's names, for confluent-kafka clients."""
    config = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol.lower(),
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = settings.sasl_password.reveal()
    if settings.ssl_ca_location:
        config["ssl.ca.location"] = str(settings.ssl_ca_location)
    if settings.ssl_cert_location:
        config["ssl.certificate.location"] = str(settings.ssl_cert_location)
        config["ssl.key.location"] = str(settings.ssl_key_location)
    return config


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
