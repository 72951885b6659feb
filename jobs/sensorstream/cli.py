"""The `sensorstream` command: argument parsing, progress, one-line errors, exit codes. No logic.

Exit codes: 0 done, 1 a sensorstream error (one line on stderr), 2 bad usage or setting,
130 interrupted before a clean stop was possible.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from sensorstream import __version__
from sensorstream.config import (PRODUCER_CLIENTS, REPORT_FORMATS, SINKS, describe, load_settings, setting_flag,
                                 setting_help)
from sensorstream.errors import ConfigError, SensorstreamError

PROG = "sensorstream"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _flag(parser: argparse.ArgumentParser, setting: str, **kwargs) -> None:
    """The flag that overrides a setting; its help names the env var and the default."""
    parser.add_argument(setting_flag(setting), dest=setting, default=None, help=setting_help(setting), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Simulated IoT sensor readings through Apache Kafka into Spark windows and reports.",
        epilog="Settings come from defaults < --env-file < environment < flags; `sensorstream config show` "
               "prints the result. Start here: `sensorstream local up`, then `produce`, `stream`, `report`.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--env-file", metavar="PATH",
                        help="KEY=VALUE settings file (like the original config.env) [env SENSORSTREAM_ENV_FILE]")
    _flag(parser, "bootstrap_servers", metavar="HOST:PORT")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    local = commands.add_parser("local", help="run a real Kafka broker (KRaft) on this machine",
                                description="The embedded local Kafka: real Apache Kafka brokers from the "
                                            "Maven jars, as background processes on 127.0.0.1.")
    local_cmds = local.add_subparsers(dest="local_command", metavar="ACTION")
    local_cmds.required = True
    up = local_cmds.add_parser("up", help="start the broker(s) and create the chart's topics")
    up.add_argument("--brokers", type=int, default=1, help="number of brokers (default 1)")
    up.add_argument("--port", type=int, default=9092, help="port of broker 1; broker N uses port+N-1 (default 9092)")
    down = local_cmds.add_parser("down", help="stop the broker(s) this stack started")
    down.add_argument("--purge", action="store_true", help="also delete the local cluster's data")
    local_cmds.add_parser("status", help="show whether the local broker(s) run")

    produce = commands.add_parser("produce", help="send simulated sensor readings to the input topic",
                                  description="Send simulated readings (JSON, key = sensor_id) with an "
                                              "idempotent producer, acks=all. Ctrl+C flushes and prints totals.")
    _flag(produce, "sensors", metavar="N")
    _flag(produce, "count", metavar="N")
    _flag(produce, "rate", metavar="PER_S")
    produce.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    _flag(produce, "seed", metavar="N")
    _flag(produce, "producer_workers", metavar="N")
    _flag(produce, "producer_client", metavar="|".join(PRODUCER_CLIENTS))
    produce.add_argument("--bad-ratio", type=float, default=0.0, metavar="F",
                         help="share of malformed records (broken JSON, wrong types, missing fields, out of range)")
    produce.add_argument("--late-ratio", type=float, default=0.0, metavar="F",
                         help="share of readings with out-of-order timestamps (30 s to 15 min late)")
    produce.add_argument("--heartbeat-file", type=Path, metavar="PATH",
                         help="touched after acknowledged deliveries (for a liveness probe)")
    _flag(produce, "input_topic", metavar="NAME")

    stream = commands.add_parser("stream", help="Spark Structured Streaming: per-sensor event-time windows",
                                 description="Read the input topic, send rejects to the dead-letter topic, and "
                                             "write per-sensor window statistics to the chosen sinks.")
    _flag(stream, "sinks", metavar=",".join(SINKS))
    stream.add_argument("--available-now", action="store_true",
                        help="process what is in the topic now, then stop (demos, tests)")
    _flag(stream, "window_duration", metavar="DURATION")
    _flag(stream, "slide_duration", metavar="DURATION")
    _flag(stream, "watermark_delay", metavar="DURATION")
    _flag(stream, "trigger_interval", metavar="DURATION")
    _flag(stream, "starting_offsets", metavar="earliest|latest")
    _flag(stream, "max_offsets_per_trigger", metavar="N")
    _flag(stream, "checkpoint_location", metavar="DIR")
    _flag(stream, "parquet_dir", metavar="DIR")
    stream.add_argument("--reset-checkpoint", action="store_true",
                        help="delete this job's checkpoints first and start from --starting-offsets")

    report = commands.add_parser("report", help="Spark batch: per-sensor report of the whole input topic",
                                 description="Read the input topic (earliest to latest), validate with the "
                                             "stream's rules, write a per-sensor report and print it.")
    _flag(report, "report_formats", metavar=",".join(REPORT_FORMATS))
    _flag(report, "report_dir", metavar="DIR")
    report.add_argument("--from", dest="since", type=_when, metavar="ISO",
                        help="only readings at or after this time (e.g. 2026-01-31T08:00:00+00:00)")
    report.add_argument("--to", dest="until", type=_when, metavar="ISO", help="only readings before this time")

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


_SETTING_ARGS = ("bootstrap_servers", "sensors", "count", "rate", "seed", "producer_workers", "producer_client",
                 "input_topic", "sinks", "window_duration", "slide_duration", "watermark_delay", "trigger_interval",
                 "starting_offsets", "max_offsets_per_trigger", "checkpoint_location", "parquet_dir", "report_formats",
                 "report_dir")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = {name: getattr(args, name, None) for name in _SETTING_ARGS}
        settings = load_settings(env_file=args.env_file, overrides=overrides)
        return _COMMANDS[args.command](args, settings)
    except SensorstreamError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _local(args, settings) -> int:
    from sensorstream.config import default_state_dir
    from sensorstream.local.broker import LocalKafka
    from sensorstream.local.topics import ensure_topics, specs_from_values

    cluster = LocalKafka(default_state_dir(), brokers=getattr(args, "brokers", 1), port=getattr(args, "port", 9092),
                         progress=lambda m: _say(f"local: {m}"))
    if args.local_command == "up":
        started = cluster.up()
        specs = specs_from_values(max_replicas=len(cluster.status())).values()
        created = ensure_topics(cluster.bootstrap, specs, settings)
        state = "started" if started else "already up"
        print(f"local Kafka {state} at {cluster.bootstrap}")
        print(f"topics: {', '.join(s.name for s in specs)}" + (f" (created {', '.join(created)})" if created else ""))
        if cluster.bootstrap != settings.bootstrap_servers:
            print(f"use it with: export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}")
        return 0
    if args.local_command == "down":
        stopped = cluster.down(purge=args.purge)
        print(f"stopped {stopped} broker(s)" if stopped else "local Kafka was not running",
              "(data deleted)" if args.purge else "")
        return 0
    nodes = cluster.status()
    if not nodes:
        print("local Kafka: not created (run `sensorstream local up`)")
        return 3
    for node in nodes:
        state = f"running (pid {node.pid})" if node.running else "stopped"
        print(f"broker {node.node_id}: 127.0.0.1:{node.port} {state}")
    return 0 if all(n.running for n in nodes) else 3


def _produce(args, settings) -> int:
    from sensorstream.producer import produce, worker_count
    from sensorstream.simulator import Simulator

    for name, value in (("bad-ratio", args.bad_ratio), ("late-ratio", args.late_ratio)):
        if not 0 <= value <= 1:
            raise ConfigError(f"--{name}", None, f"{value} must be between 0 and 1")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration", None, f"{args.duration} must be more than 0 seconds")
    stop = _stop_on_signals()
    simulator = Simulator(settings.sensors, settings.seed, bad_ratio=args.bad_ratio, late_ratio=args.late_ratio)
    total = settings.count or None
    interactive = sys.stderr.isatty()

    def progress(stats) -> None:
        of = f"/{total}" if total else ""
        line = f"produce: sent {stats.sent}{of}, acked {stats.acked}, failed {stats.failed}, {stats.elapsed:.0f}s"
        if interactive:
            print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
        elif int(stats.elapsed) % 10 == 0:
            _say(line)

    workers = worker_count(settings.producer_workers, settings.rate, settings.sensors, settings.count)
    _say(f"producing to {settings.input_topic} at {settings.bootstrap_servers}: {settings.sensors} sensors, "
         f"{'unlimited' if not total else total} readings, "
         f"{'as fast as possible' if not settings.rate else f'{settings.rate:g}/s'} with {settings.producer_client}"
         f"{f' from {workers} processes' if workers > 1 else ''} (Ctrl+C to stop)")
    stats = produce(settings, simulator, duration=args.duration, stop=stop, progress=progress,
                    heartbeat_file=args.heartbeat_file, workers=workers)
    if interactive:
        print(file=sys.stderr)
    print(f"done: {stats.summary()}")
    return 0 if stats.failed == 0 else 1


def _stream(args, settings) -> int:
    from sensorstream import streaming
    from sensorstream.spark import get_session

    streaming.preflight(settings)
    _say("starting Spark...")
    spark = get_session(settings)
    stop = _stop_on_signals()  # after the SparkContext, which installs a SIGINT handler of its own
    streaming.run(spark, settings, available_now=args.available_now, reset_checkpoint=args.reset_checkpoint,
                  stop=stop, say=_say)
    return 0


def _report(args, settings) -> int:
    from sensorstream import report
    from sensorstream.spark import get_session

    report.preflight(settings)
    _say("starting Spark...")
    spark = get_session(settings)
    _say(f"reading {settings.input_topic} at {settings.bootstrap_servers} (earliest to latest)")
    result = report.run(spark, settings, since=args.since, until=args.until)
    print(report.console_table(result))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items())) or "none"
    print(f"records {result.records}: valid {result.valid}, rejected {sum(result.rejected.values())} ({rejected})")
    print(f"report written to {result.folder}/")
    for path in result.files:
        print(f"  {path.name}")
    return 0


def _config(args, settings) -> int:
    from sensorstream.tables import format_table

    print(format_table(("setting", "env var", "value", "source"), describe(settings)))
    return 0


_COMMANDS = {"local": _local, "produce": _produce, "stream": _stream, "report": _report, "config": _config}


if __name__ == "__main__":
    sys.exit(main())
