"""The `sensorstream` command: argument parsing, progress, one-line errors, exit codes. No logic.

Exit codes: 0 done, 1 a sensorstream error (one line on stderr), 2 bad usage or setting,
130 interrupted before a clean stop was possible.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from sensorstream import __version__, logs
from sensorstream.config import EVERY_COMMAND, SETTINGS, describe, load_settings
from sensorstream.errors import SensorstreamError

PROG = "sensorstream"
log = logging.getLogger(PROG)


def _say(message: str, **fields) -> None:
    """A progress line to the log (stderr): the message, and in LOG_FORMAT=json these fields too."""
    log.info(message, extra={"fields": fields} if fields else None)


def _setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of the settings declared for this command; each help names the env var and default."""
    for declared in SETTINGS:
        if declared.flag and command in declared.commands:
            parser.add_argument(
                declared.flag, dest=declared.name, default=None, metavar=declared.metavar, help=declared.flag_help
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Simulated IoT sensor readings through Apache Kafka into Spark windows and reports.",
        epilog="Settings come from defaults < --env-file < environment < flags; `sensorstream config show` "
        "prints the result. Start here: `sensorstream local up`, then `produce`, `stream`, `report`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="KEY=VALUE settings file (like the original config.env) [env SENSORSTREAM_ENV_FILE]",
    )
    _setting_flags(parser, EVERY_COMMAND)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    local = commands.add_parser(
        "local",
        help="run a real Kafka broker (KRaft) on this machine",
        description="The embedded local Kafka: real Apache Kafka brokers from the "
        "Maven jars, as background processes on 127.0.0.1.",
    )
    local_cmds = local.add_subparsers(dest="local_command", metavar="ACTION")
    local_cmds.required = True
    up = local_cmds.add_parser("up", help="start the broker(s) and create the chart's topics")
    up.add_argument("--brokers", type=int, default=1, help="number of brokers (default 1)")
    up.add_argument(
        "--port",
        type=int,
        help="port of broker 1; broker N uses port+N-1 (default 9092; fixed when the storage is first formatted)",
    )
    up.add_argument(
        "--host",
        metavar="ADDRESS",
        help="address the brokers listen on and advertise to clients (default 127.0.0.1; fixed when "
        "the storage is first formatted), e.g. a bridge address that Pods on this machine reach",
    )
    up.add_argument(
        "--sasl-ssl",
        metavar="DIR",
        type=Path,
        help="clients connect with SASL_SSL (SCRAM-SHA-512): TLS from DIR/broker.pem and DIR/broker.key "
        "(PEM, for 127.0.0.1), the user KAFKA_SASL_USERNAME with KAFKA_SASL_PASSWORD, created "
        "when the storage is formatted; clients trust KAFKA_SSL_CA_LOCATION, else DIR/ca.pem",
    )
    down = local_cmds.add_parser("down", help="stop the broker(s) this stack started")
    down.add_argument("--purge", action="store_true", help="also delete the local cluster's data")
    local_cmds.add_parser("status", help="show whether the local broker(s) run")

    produce = commands.add_parser(
        "produce",
        help="send simulated sensor readings to the input topic",
        description="Send simulated readings (JSON, key = sensor_id) with an "
        "idempotent producer, acks=all. Ctrl+C flushes and prints totals.",
    )
    _setting_flags(produce, "produce")
    produce.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this many seconds")
    produce.add_argument(
        "--heartbeat-file",
        type=Path,
        metavar="PATH",
        help="touched after acknowledged deliveries (for a liveness probe)",
    )

    stream = commands.add_parser(
        "stream",
        help="Spark Structured Streaming: per-sensor event-time windows",
        description="Read the input topic, send rejects to the dead-letter topic, and "
        "write per-sensor window statistics to the chosen sinks.",
    )
    _setting_flags(stream, "stream")
    stream.add_argument(
        "--available-now", action="store_true", help="process what is in the topic now, then stop (demos, tests)"
    )
    stream.add_argument(
        "--reset-checkpoint",
        action="store_true",
        help="delete this job's checkpoints first and start from --starting-offsets",
    )
    stream.add_argument(
        "--heartbeat-file",
        type=Path,
        metavar="PATH",
        help="touched whenever Spark reports the query alive: after each micro-batch, and every 10 s "
        "while there is nothing to read (for a liveness probe)",
    )
    stream.add_argument(
        "--skip-lost-records",
        action="store_true",
        help="go on when input records were deleted (retention, delete-records) before the stream "
        "read them, saying how many are skipped (default: stop with an error)",
    )

    report = commands.add_parser(
        "report",
        help="Spark batch: per-sensor report of the whole input topic",
        description="Read the input topic (earliest to latest), validate with the "
        "stream's rules, write a per-sensor report and print it.",
    )
    _setting_flags(report, "report")
    report.add_argument(
        "--from",
        dest="since",
        type=_when,
        metavar="ISO",
        help="only readings at or after this time (e.g. 2026-01-31T08:00:00+00:00)",
    )
    report.add_argument("--to", dest="until", type=_when, metavar="ISO", help="only readings before this time")

    status = commands.add_parser(
        "status",
        help="is the stream keeping up? lag per partition from its checkpoint",
        description="Compare the stream's checkpoint (the offsets of its newest committed "
        "batch) with the input topic's end offsets; show the last batch time, "
        "the watermark and the broker's topics. Exit code 3 when the stream is "
        "behind by more than --max-lag records or has committed nothing yet.",
    )
    _setting_flags(status, "status")

    config = commands.add_parser("config", help="show the effective settings")
    config_cmds = config.add_subparsers(dest="config_command", metavar="ACTION")
    config_cmds.required = True
    config_cmds.add_parser("show", help="print every setting, its env var, value and source (secrets redacted)")
    return parser


def _when(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO-8601 date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds above 0")
    return value


def _stop_on_signals() -> threading.Event:
    """SIGTERM and the first Ctrl+C ask for a clean stop; a second Ctrl+C interrupts."""
    stop = threading.Event()

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        _say(f"{signal.Signals(signum).name}: stopping cleanly (Ctrl+C again to interrupt)")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _exit_on_sigterm(clean_up) -> None:
    """SIGTERM ends a batch command at once: `clean_up()`, one line, exit 130. Not by raising into
    the running Spark call, which py4j would log as a traceback."""

    def handler(signum, _frame):
        clean_up()
        print(
            f"{PROG}: stopped by {signal.Signals(signum).name}; nothing half-written is left (run it again)",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(130)  # the Spark JVM exits when this process does (its stdin closes)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = {declared.name: getattr(args, declared.name, None) for declared in SETTINGS if declared.flag}
        settings = load_settings(env_file=args.env_file, overrides=overrides)
        logs.configure(settings)
        if args.command != "config":  # the others talk to Kafka: a kafka-python they cannot correct is one line
            from sensorstream.kafka_producer import require_kafka_python_internals

            require_kafka_python_internals()
        return _COMMANDS[args.command](args, settings)
    except SensorstreamError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _local(args, settings) -> int:
    from sensorstream.config import default_state_dir
    from sensorstream.local.broker import LocalKafka, SaslSsl
    from sensorstream.local.topics import ensure_topics, specs_from_values

    secured = getattr(args, "sasl_ssl", None)
    cluster = LocalKafka(
        default_state_dir(),
        brokers=getattr(args, "brokers", 1),
        port=getattr(args, "port", None),
        host=getattr(args, "host", None),
        progress=lambda m: _say(f"local: {m}"),
        security=SaslSsl.from_settings(secured, settings) if secured else None,
    )
    if args.local_command == "up":
        started = cluster.up()
        specs = specs_from_values(max_replicas=len(cluster.status())).values()
        clients = cluster.client_settings(settings)
        created = ensure_topics(cluster.bootstrap, specs, clients)
        state = "started" if started else "already up"
        print(f"local Kafka {state} at {cluster.bootstrap}" + (" (SASL_SSL, SCRAM-SHA-512)" if secured else ""))
        print(f"topics: {', '.join(s.name for s in specs)}" + (f" (created {', '.join(created)})" if created else ""))
        exports = [
            (d.env, getattr(clients, d.name))
            for d in SETTINGS
            if not d.secret and getattr(clients, d.name) != getattr(settings, d.name)
        ]
        if exports:  # what the other commands need to reach it (the password is the user's own setting)
            print("use it with: export " + " ".join(f"{env}={value}" for env, value in exports))
        return 0
    if args.local_command == "down":
        stopped = cluster.down(purge=args.purge)
        print(
            f"stopped {stopped} broker(s)" if stopped else "local Kafka was not running",
            "(data deleted)" if args.purge else "",
        )
        return 0
    nodes = cluster.status()
    if not nodes:
        print("local Kafka: not created (run `sensorstream local up`)")
        return 3
    for node in nodes:
        state = f"running (pid {node.pid})" if node.running else "stopped"
        print(f"broker {node.node_id}: {cluster.bootstrap.split(',')[node.node_id - 1]} {state}")
    return 0 if all(n.running for n in nodes) else 3


def _produce(args, settings) -> int:
    from sensorstream import metrics
    from sensorstream.producer import DELIVERY_TIMEOUT_MS, STOP_TIMEOUT_S, produce, worker_count
    from sensorstream.simulator import Simulator

    stop = _stop_on_signals()
    simulator = Simulator(settings.sensors, settings.seed, bad_ratio=settings.bad_ratio, late_ratio=settings.late_ratio)
    total = settings.count or None
    interactive = sys.stderr.isatty()

    def show(stats) -> None:
        of = f"/{total}" if total else ""
        line = f"produce: sent {stats.sent}{of}, acked {stats.acked}, failed {stats.failed}, {stats.elapsed:.0f}s"
        if interactive:
            print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
        elif int(stats.elapsed) % 10 == 0:
            _say(line)

    watched = metrics.ProducerMetrics()
    endpoint = metrics.serve(watched.registry, settings)
    if endpoint:
        _say(f"metrics: {endpoint.url}")

    def progress(stats) -> None:
        watched.update(stats)
        show(stats)

    workers = worker_count(settings.producer_workers, settings.rate, settings.sensors, settings.count)
    _say(
        f"producing to {settings.input_topic} at {settings.bootstrap_servers}: {settings.sensors} sensors, "
        f"{total if total else 'unlimited'} readings, "
        f"{'as fast as possible' if not settings.rate else f'{settings.rate:g}/s'} with {settings.producer_client}"
        f"{f' from {workers} processes' if workers > 1 else ''} (Ctrl+C to stop)"
    )
    try:
        stats = produce(
            settings,
            simulator,
            duration=args.duration,
            stop=stop,
            progress=progress,
            heartbeat_file=args.heartbeat_file,
            workers=workers,
        )
    finally:
        if endpoint:
            endpoint.close()
    if interactive:
        print(file=sys.stderr)
    print(f"done: {stats.summary()}", flush=True)
    if stats.failed:
        print(
            f"{PROG}: error: {stats.failed:,} of {stats.sent:,} readings were not acknowledged (a reading fails "
            f"after {DELIVERY_TIMEOUT_MS // 1000} s without one, {STOP_TIMEOUT_S:.0f} s after a stop): brokers are "
            "down, a partition had no leader or too few in-sync replicas for that long, or the controller quorum "
            "is lost: start the stopped brokers (`sensorstream local up` restarts the local ones) and send again",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def _stream(args, settings) -> int:
    from sensorstream import metrics, streaming
    from sensorstream.spark import SPARK_METRICS_PATH, get_session

    streaming.preflight(settings)  # once per command: run() is handed what it found
    gaps = [] if args.reset_checkpoint else streaming.check_checkpoint(settings, args.skip_lost_records)
    _say("starting Spark...")
    spark = get_session(settings, serve_metrics=bool(settings.metrics_port))
    stop = _stop_on_signals()  # after the SparkContext, which installs a SIGINT handler of its own
    watched = metrics.StreamMetrics()
    endpoint = metrics.serve(watched.registry, settings)
    if endpoint:
        host = endpoint.url.split("//", 1)[1].split(":", 1)[0]
        _say(
            f"metrics: {endpoint.url} (sensorstream), "
            f"http://{host}:{settings.spark_ui_port}{SPARK_METRICS_PATH}/ (Spark)"
        )

    def on_progress(progress) -> None:  # a batch's figures: the metrics, and one line with them as fields
        watched.observe(progress)
        _say(streaming.progress_line(progress), **vars(progress))

    try:
        streaming.run(
            spark,
            settings,
            available_now=args.available_now,
            reset_checkpoint=args.reset_checkpoint,
            stop=stop,
            say=_say,
            on_progress=on_progress,
            skip_lost_records=args.skip_lost_records,
            on_pulse=watched.pulse,
            heartbeat_file=args.heartbeat_file,
            checked=gaps,
        )
    finally:
        if endpoint:
            endpoint.close()
    return 0


def _report(args, settings) -> int:
    from sensorstream import report
    from sensorstream.spark import get_session

    _exit_on_sigterm(report.abandon)
    alerts_topic_exists = report.preflight(settings)  # once per command: run() is handed what it found
    _say("starting Spark...")
    spark = get_session(settings)
    _say(f"reading {settings.input_topic} at {settings.bootstrap_servers} (earliest to latest)")
    result = report.run(
        spark, settings, since=args.since, until=args.until, alerts_topic_exists=alerts_topic_exists, say=_say
    )
    print(report.console_table(result))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items())) or "none"
    print(f"records {result.records}: valid {result.valid}, rejected {sum(result.rejected.values())} ({rejected})")
    if result.alerts_topic:
        alerts = ", ".join(f"{k} {v}" for k, v in result.alerts.items())
        print(f"alerts {sum(result.alerts.values())} from {result.alerts_topic} ({alerts})")
    print(f"report written to {result.folder}/")
    for path in result.files:
        print(f"  {path.name}")
    return 0


def _status(args, settings) -> int:
    from sensorstream import status
    from sensorstream.tables import format_table

    found = status.read_status(settings)
    lines, rows, behind = status.describe(found, settings.max_lag)
    print("\n".join(lines))
    if rows:
        print(format_table(("partition", "committed", "end", "lag"), rows))
    return status.BEHIND if behind else 0


def _config(args, settings) -> int:
    from sensorstream.tables import format_table

    print(format_table(("setting", "env var", "value", "source"), describe(settings)))
    return 0


_COMMANDS = {
    "local": _local,
    "produce": _produce,
    "stream": _stream,
    "report": _report,
    "status": _status,
    "config": _config,
}


if __name__ == "__main__":
    sys.exit(main())
