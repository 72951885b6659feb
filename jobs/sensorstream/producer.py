"""Send simulated readings to Kafka: paced, batched, every delivery accounted for.

Two clients, one behaviour: kafka-python (the default) or confluent-kafka (librdkafka, the optional
`fast` extra; setting `producer_client`, flag --client). Both send with the same guarantees, the
same keys and the same partitions per key, and count deliveries the same way.

The producer is idempotent with acks=all, so a retry never duplicates a reading. Every record's
delivery is counted once it completes (acked or failed), and a stop (Ctrl+C, SIGTERM, --count or
--duration reached) flushes what is in flight before the totals are reported: for 20 s at most,
then what is still unacknowledged fails, so a Pod prints its totals inside the 30 s Kubernetes
gives it to stop, even with brokers that no longer answer.

How it reaches its rate (jobs/README.md, "The producer"): kafka-python spends most of a record's
cost in Python, so the send path does as little per record as it can (key bytes and partition
computed once per sensor, with kafka-python's own default partitioner; deliveries counted from
the futures in order instead of two callbacks per record), and, at rate 0, several processes
(`workers`) each own a disjoint share of the sensors. A sensor's readings all go through one
process, one producer and one partition, so its order holds; the counts of all processes add up
to the totals, and --count is split exactly between them. confluent-kafka does its per-record
work in C (librdkafka) and serves its delivery reports in `poll()`, which this loop calls after
every chunk; its partitioner is set to murmur2_random, the Java client's and kafka-python's hash.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from kafka import KafkaProducer
from kafka.errors import IllegalStateError, KafkaError
from kafka.partitioner import DefaultPartitioner

from sensorstream.brokers import require_topics
from sensorstream.config import Settings, confluent_kafka_config, declaration
from sensorstream.errors import DependencyError, SensorstreamError
from sensorstream.kafka_producer import kafka_producer
from sensorstream.simulator import FAULT_HEADER, FAULT_KINDS, Simulator

log = logging.getLogger(__name__)

#: From a stop (Ctrl+C, SIGTERM, --count or --duration reached) to the totals: the flush waits this
#: long at most, then whatever is still unacknowledged fails. A Kubernetes Pod gets 30 s from SIGTERM
#: to SIGKILL (the chart's terminationGracePeriodSeconds): this leaves 10 s for the rest. The
#: delivery timeout alone cannot bound it: kafka-python expires a batch whose request is in flight
#: only once that request has timed out too (seen 45 s after its creation, brokers not answering).
STOP_TIMEOUT_S = 20.0
#: The kind of error of a reading given up at the stop, in the totals (`errors: StopTimeout x N`).
STOP_FAILURE = "StopTimeout"
#: Past it, how long the forcefully closed sender gets to fail what is pending (inside those 10 s).
ABORT_TIMEOUT_S = 3.0
FAILURE_LOG_INTERVAL_S = 5.0  # at most one 'delivery failed' line per kind of error this often
#: A record not acknowledged within this fails (counted as failed).
DELIVERY_TIMEOUT_MS = 25_000
#: At full speed, records sent between two looks at the clock, the stop flag and the deliveries.
CHUNK = 256
#: How often a producer process publishes its counts to the parent.
PUBLISH_INTERVAL_S = 0.2

#: Throughput-minded batching: wait up to 20 ms to fill batches of up to 256 KiB.
PRODUCER_TUNING = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 20,
    "batch_size": 256 * 1024,
    # kafka-python keeps ordering under idempotence only with one request in flight per broker
    # (it refuses any other value when enable_idempotence is on).
    "max_in_flight_requests_per_connection": 1,
    "retries": 2**31 - 1,
    "delivery_timeout_ms": DELIVERY_TIMEOUT_MS,
    "request_timeout_ms": 10_000,  # kafka-python wants delivery_timeout_ms >= linger_ms + this
}

#: The same guarantees and batching in librdkafka's names. murmur2_random hashes keys as the Java
#: client and kafka-python do (librdkafka's own default is CRC32), so a sensor's readings land on
#: the same partition whichever client sends them. librdkafka keeps the order per partition under
#: idempotence with up to 5 requests in flight, so it needs no limit of one.
CONFLUENT_TUNING = {
    "acks": "all",
    "enable.idempotence": True,
    "partitioner": "murmur2_random",
    "linger.ms": 20,
    "batch.size": 1024 * 1024,
    "queue.buffering.max.messages": 1_000_000,
    "message.timeout.ms": DELIVERY_TIMEOUT_MS,
}


@dataclass
class DeliveryStats:
    """Counts of one produce run. Updated by one thread only (the sending loop, or the parent
    adding up its processes' counts)."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    _said: dict[str, float] = field(default_factory=dict, repr=False, compare=False)  # error kind -> last line
    _unsaid: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # failures since then

    def record_sent(self, kind: str) -> None:
        self.sent += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def record_ack(self) -> None:
        self.acked += 1

    def record_failure(self, exc: BaseException | str, detail: object = None) -> None:
        """One failed delivery; `exc` is the exception, or the name of a client's error code.

        Logged as a warning, at most one line per kind of error every few seconds (with the count
        since the last line): with brokers down every record fails, tens of thousands of them."""
        self.failed += 1
        name = exc if isinstance(exc, str) else type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        now = time.monotonic()
        if now - self._said.get(name, float("-inf")) < FAILURE_LOG_INTERVAL_S:
            self._unsaid[name] = self._unsaid.get(name, 0) + 1
            return
        self._said[name] = now
        more = self._unsaid.pop(name, 0)
        log.warning(
            "delivery failed: %s%s",
            detail if detail is not None else exc,
            f" (and {more:,} more {name} since the last such line)" if more else "",
        )

    def add(self, other: DeliveryStats) -> None:
        """Add another run's counts to these (the parent summing its processes)."""
        self.sent += other.sent
        self.acked += other.acked
        self.failed += other.failed
        for mine, theirs in ((self.by_kind, other.by_kind), (self.errors, other.errors)):
            for name, n in theirs.items():
                mine[name] = mine.get(name, 0) + n

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Acknowledged readings per second."""
        return self.acked / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        text = f"sent {self.sent}, acked {self.acked}, failed {self.failed} in {self.elapsed:.1f}s ({self.rate:.0f}/s)"
        if kinds:
            text += f" [{kinds}]"
        if self.errors:
            text += " errors: " + ", ".join(f"{k} x{v}" for k, v in self.errors.items())
        return text


class _Heartbeat:
    """Touches a file at most once a second after an acknowledged delivery (liveness probe)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._last = 0.0

    def beat(self) -> None:
        if not self.path:
            return
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self.path.touch()


def worker_count(requested: int, rate: float, sensors: int, count: int) -> int:
    """How many producer processes to run: `requested`, or for 0 one per CPU core at rate 0 and one
    otherwise; never more than there are sensors (each process owns at least one) or readings."""
    workers = requested or ((os.cpu_count() or 1) if rate == 0 else 1)
    return max(1, min(workers, sensors, count or workers))


def produce(
    settings: Settings,
    simulator: Simulator,
    count: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[DeliveryStats], None] | None = None,
    heartbeat_file: Path | None = None,
    workers: int | None = None,
) -> DeliveryStats:
    """Send readings until `count` (0 = unlimited), `duration` seconds or `stop`; flush; return stats.

    `rate` readings per second paces the sends (0 = as fast as the client takes them), shared by
    the `workers` processes (default: the settings'; see `worker_count`). With more than one, the
    simulator is split (`Simulator.split`) and its parts go to other processes, so its clock must
    be picklable (the default clock is; with another one, the default is one process).
    """
    count = settings.count if count is None else count
    rate = settings.rate if rate is None else rate
    requested = settings.producer_workers if workers is None else workers
    if not requested and not simulator.portable:
        requested = 1  # a custom clock that cannot go to another process (tests' simulated clocks)
    workers = worker_count(requested, rate, len(simulator.sensors), count)
    stop = stop or threading.Event()
    send = _sender(settings)  # a missing optional client is one clear error before anything starts
    require_topics(settings, [settings.input_topic])
    heartbeat = _Heartbeat(heartbeat_file)
    if workers == 1:
        stats = send(settings, simulator, count, rate, duration, stop, progress, heartbeat.beat)
    else:
        stats = _send_in_processes(
            settings, simulator.split(workers), count, rate, duration, stop, progress, heartbeat.beat
        )
    if progress:
        progress(stats)
    return stats


def _sender(settings: Settings) -> Callable[..., DeliveryStats]:
    """The sending loop of the configured client; DependencyError if that client is not installed."""
    if settings.producer_client == "confluent-kafka":
        try:
            import confluent_kafka  # noqa: F401 - only to know it is there
        except ImportError:
            raise DependencyError(
                f"the confluent-kafka producer client ({declaration('producer_client').env}=confluent-kafka or "
                "--client) is not installed: install the `fast` extra (from a checkout: .venv/bin/pip install -e "
                "'.[fast]'), or use --client kafka-python"
            ) from None
        return _send_confluent
    return _send


#: A faulty reading's headers, by fault (--ground-truth headers): built once, shared by every record.
_FAULT_HEADERS: dict[str, list[tuple[str, str | bytes | None]]] = {
    kind: [(FAULT_HEADER, kind.encode())] for kind in FAULT_KINDS
}


def _fault_headers(settings: Settings) -> dict[str, list[tuple[str, str | bytes | None]]] | None:
    """Record.fault -> the record's headers, or None when the producer tells nothing (the default)."""
    return _FAULT_HEADERS if settings.ground_truth == "headers" else None


def _chunks(
    stats: DeliveryStats,
    count: int,
    rate: float,
    duration: float | None,
    stop,
    report: Callable[[DeliveryStats], None] | None,
    report_interval: float,
) -> Iterator[int]:
    """How many records a sending loop sends next, chunk by chunk, until `count` are sent, `duration`
    has passed or `stop` is set. Between chunks: `report(stats)` every `report_interval` s, and a
    wait that paces the sends to `rate` (0: no wait, chunks of CHUNK records; else one at a time)."""
    deadline = time.monotonic() + duration if duration else None
    next_report = time.monotonic() + report_interval
    while not stop.is_set():
        batch = CHUNK if rate == 0 else 1
        if count:
            batch = min(batch, count - stats.sent)
            if batch <= 0:
                return
        if deadline and time.monotonic() >= deadline:
            return
        yield batch
        if report and time.monotonic() >= next_report:
            report(stats)
            next_report = time.monotonic() + report_interval
        if rate > 0:
            wait = stats.started + stats.sent / rate - time.monotonic()
            if wait > 0:
                stop.wait(wait)


def _send(
    settings: Settings,
    simulator: Simulator,
    count: int,
    rate: float,
    duration: float | None,
    stop,
    report: Callable[[DeliveryStats], None] | None,
    beat: Callable[[], None],
    report_interval: float = 1.0,
) -> DeliveryStats:
    """The sending loop of one process, with kafka-python; `report(stats)` every `report_interval` s."""
    topic = settings.input_topic
    producer = kafka_producer(settings, **PRODUCER_TUNING, client_id="sensorstream-producer")
    stats = DeliveryStats()
    # The partition of each key, as kafka-python's default partitioner would pick it for every
    # record (murmur2 of the key): computed once per sensor instead of once per record.
    try:
        partitions = sorted(producer.partitions_for(topic))
    except KafkaError as exc:  # a broker answered the preflight, but no partition metadata came
        producer.close(timeout=0)  # nothing sent yet
        raise SensorstreamError(
            f"Kafka at {settings.bootstrap_servers} gave no partitions for {topic} ({type(exc).__name__}): brokers "
            "are down or the controller quorum is lost; start the stopped brokers (`sensorstream local up` "
            "restarts the local ones) and retry"
        ) from None
    partitioner = DefaultPartitioner()
    routes: dict[str, tuple[bytes, int]] = {}
    pending: deque = deque()  # futures of the records not yet counted, oldest first

    def settle() -> None:
        """Count the completed deliveries, oldest first, up to the first one still in flight."""
        acked = stats.acked
        while pending and pending[0].is_done:
            future = pending.popleft()
            if future.exception is None:
                stats.acked += 1
            else:
                stats.record_failure(future.exception)
        if stats.acked > acked:
            beat()

    send, next_record, by_kind = producer.send, simulator.next_record, stats.by_kind
    faults = _fault_headers(settings)
    try:
        for batch in _chunks(stats, count, rate, duration, stop, report, report_interval):
            # A chunk of records first, then their sends: alternating the simulator's code and the
            # client's record by record costs about half as much again (measured; caches).
            for record in [next_record() for _ in range(batch)]:
                route = routes.get(record.key)
                if route is None:
                    key = record.key.encode()
                    route = routes[record.key] = (key, partitioner(key, partitions, partitions))
                stats.sent += 1
                by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
                headers = faults[record.fault] if faults and record.fault else None
                try:
                    pending.append(send(topic, value=record.value, key=route[0], partition=route[1], headers=headers))
                except KafkaError as exc:  # buffer full past max_block_ms, or the producer is closing
                    stats.record_failure(exc)
            settle()
    finally:
        _close(producer, pending)
        # Every delivery counted, in any order now (one partition's may have come after another's
        # failed); one given up at the stop (still pending, or failed by the forced close) says so.
        for future in pending:
            if not future.is_done or isinstance(future.exception, IllegalStateError):
                stats.record_failure(STOP_FAILURE, f"not acknowledged within {STOP_TIMEOUT_S:.0f} s of the stop")
            elif future.exception is None:
                stats.acked += 1
            else:
                stats.record_failure(future.exception)
        pending.clear()
        stats.finished = time.monotonic()
    return stats


def _close(producer: KafkaProducer, pending: Iterable) -> None:
    """Wait for the `pending` deliveries, then close, within STOP_TIMEOUT_S; a record still
    unacknowledged then fails.

    Not `flush(timeout)`: kafka-python 2.3 waits up to `timeout` for each batch in turn, so with
    brokers that do not answer a flush lasts a multiple of it (past the 30 s a Pod gets to stop);
    and its `close()` flushes first and raises KafkaTimeoutError while any record is unacknowledged,
    leaving its sender thread running and its `__del__` raising again at exit. So the wait is on the
    records' own futures against one deadline; past it, the sender is closed forcefully, which
    fails what is pending, and what it has not failed within ABORT_TIMEOUT_S the loop counts as
    failed. A failed record may still
    have reached the topic: one whose acknowledgement never came has an unknown outcome, and is
    counted as failed, never as acked. `_sender` and `_closed` are kafka-python's private attributes:
    `kafka_producer()` checks them on start (`sensorstream.kafka_producer.INTERNALS`), so another
    kafka-python cannot break this unnoticed.
    """
    deadline = time.monotonic() + STOP_TIMEOUT_S

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    settled = True
    for future in pending:  # oldest first; one that is done costs nothing
        if future.is_done:
            continue
        try:
            future.get(timeout=left())
        except KafkaError:
            if not future.is_done:  # the deadline passed, not its delivery
                settled = False
                break
    if not settled:
        log.warning("stop: readings still unacknowledged after %.0f s; giving up on them", STOP_TIMEOUT_S)
        sender = producer._sender  # no public way to stop it without another flush
        if sender is not None:
            sender.force_close()
            sender.join(ABORT_TIMEOUT_S)
    try:
        producer.close(timeout=left() if settled else 0)
    except KafkaError as exc:  # unsettled, it raises for the records just given up on: said already
        if settled:
            log.warning("close: %s", exc)
        # its sender is closed; left unmarked, `__del__` would close (and raise) again at exit
        producer._closed = True


def _send_confluent(
    settings: Settings,
    simulator: Simulator,
    count: int,
    rate: float,
    duration: float | None,
    stop,
    report: Callable[[DeliveryStats], None] | None,
    beat: Callable[[], None],
    report_interval: float = 1.0,
) -> DeliveryStats:
    """`_send` with confluent-kafka: the same loop, deliveries counted by librdkafka's reports."""
    from confluent_kafka import KafkaError as ConfluentError
    from confluent_kafka import KafkaException, Producer

    topic = settings.input_topic
    stats = DeliveryStats()

    purged = (ConfluentError._PURGE_QUEUE, ConfluentError._PURGE_INFLIGHT)  # only by the stop below

    def delivered(error, _message) -> None:  # served by poll()/flush() in this thread
        if error is None:
            stats.acked += 1
        elif error.code() in purged:
            stats.record_failure(STOP_FAILURE, f"not acknowledged within {STOP_TIMEOUT_S:.0f} s of the stop")
        else:
            stats.record_failure(error.name(), error)

    try:
        producer = Producer(
            {
                **confluent_kafka_config(settings),
                **CONFLUENT_TUNING,
                "client.id": "sensorstream-producer",
                "on_delivery": delivered,
            }
        )
    except KafkaException as exc:  # librdkafka refused a setting: a certificate file, a SASL mechanism
        raise SensorstreamError(
            f"confluent-kafka cannot create a producer: {exc.args[0].str()}; check the "
            "KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_* settings, "
            "or use --client kafka-python"
        ) from None
    keys: dict[str, bytes] = {}
    send, poll, next_record, by_kind = producer.produce, producer.poll, simulator.next_record, stats.by_kind
    faults = _fault_headers(settings)
    try:
        for batch in _chunks(stats, count, rate, duration, stop, report, report_interval):
            for record in [next_record() for _ in range(batch)]:
                key = keys.get(record.key)
                if key is None:
                    key = keys[record.key] = record.key.encode()
                stats.sent += 1
                by_kind[record.kind] = by_kind.get(record.kind, 0) + 1
                headers = faults[record.fault] if faults and record.fault else None
                while True:
                    try:
                        send(topic, record.value, key, headers=headers)
                        break
                    except BufferError as exc:  # librdkafka's queue is full: serve deliveries to make room
                        if stop.is_set():  # ...unless asked to stop (the broker may be gone): give up on it
                            stats.record_failure(exc)
                            break
                        poll(0.05)
                    except KafkaException as exc:
                        stats.record_failure(exc.args[0].name() if exc.args else exc, exc)
                        break
            acked = stats.acked
            poll(0)
            if stats.acked > acked:
                beat()
    finally:
        acked = stats.acked
        if producer.flush(STOP_TIMEOUT_S):  # librdkafka's timeout is for the whole flush
            # Still unacknowledged: purge them, so their reports say failed.
            log.warning("stop: readings still unacknowledged after %.0f s; giving up on them", STOP_TIMEOUT_S)
            producer.purge()
            producer.flush(0)
        producer.close()  # nothing left to send: stops librdkafka's threads and sockets now
        # Anything neither acked nor failed by now was lost with the closing client: say so.
        for _ in range(stats.in_flight):
            stats.record_failure(STOP_FAILURE, f"not acknowledged within {STOP_TIMEOUT_S:.0f} s of the stop")
        stats.finished = time.monotonic()
        if stats.acked > acked:
            beat()
    return stats


def _send_in_processes(
    settings: Settings,
    parts: list[Simulator],
    count: int,
    rate: float,
    duration: float | None,
    stop,
    progress: Callable[[DeliveryStats], None] | None,
    beat: Callable[[], None],
) -> DeliveryStats:
    """Run one `_send` per simulator part in its own process; add up their counts as they go.

    Each process gets an exact share of `count` and of `rate`. A stop (the `stop` event, or
    SIGINT/SIGTERM in any of the processes) reaches all of them; each flushes and reports its totals.
    """
    context = multiprocessing.get_context("spawn")  # no threads or sockets inherited
    n = len(parts)
    halt = context.Event()
    counts = context.Array("q", 3 * n, lock=False)  # sent, acked, failed of each process, live
    shares = [count // n + (i < count % n) for i in range(n)] if count else [0] * n
    pipes = [context.Pipe(duplex=False) for _ in range(n)]
    processes = [
        context.Process(
            target=_worker,
            name=f"sensorstream-producer-{i + 1}",
            daemon=True,
            args=(i, settings, parts[i], shares[i], rate / n, duration, halt, counts, pipes[i][1]),
        )
        for i in range(n)
    ]
    total = DeliveryStats()
    finals: dict[int, DeliveryStats] = {}
    problems: list[str] = []
    try:
        for process in processes:
            process.start()
        for _, writer in pipes:
            writer.close()  # the child holds its own end; EOF here means it is gone
        readers = {pipes[i][0]: i for i in range(n)}
        next_report = time.monotonic() + 1.0
        while readers:
            if stop.is_set():
                halt.set()
            for reader in multiprocessing.connection.wait(list(readers), timeout=0.2):
                index = readers.pop(cast(multiprocessing.connection.Connection, reader))
                try:
                    outcome, payload = pipes[index][0].recv()
                except EOFError:
                    outcome, payload = "error", f"exited with code {processes[index].exitcode}"
                if outcome == "done":
                    finals[index] = payload
                else:
                    problems.append(f"producer process {index + 1}: {payload}")
                    halt.set()
            live = [finals.get(i) or _published(counts, i) for i in range(n)]
            acked = total.acked
            total.sent, total.acked, total.failed = (
                sum(s.sent for s in live),
                sum(s.acked for s in live),
                sum(s.failed for s in live),
            )
            if total.acked > acked:
                beat()
            if progress and time.monotonic() >= next_report:
                progress(total)
                next_report = time.monotonic() + 1.0
    finally:
        halt.set()
        for process in processes:
            if process.pid is None:  # never started
                continue
            process.join(timeout=STOP_TIMEOUT_S + 5)
            if process.is_alive():  # still stuck after its flush timeout: stop it
                process.terminate()
                process.join()
    result = DeliveryStats(started=total.started)
    for index in range(n):
        if index in finals:
            result.add(finals[index])
        else:  # a process that failed: what it had sent and not counted is lost
            last = _published(counts, index)
            result.add(last)
            for _ in range(last.in_flight):
                result.record_failure(RuntimeError("producer process failed"))
    result.finished = time.monotonic()
    if problems:
        raise SensorstreamError(f"{problems[0]} (totals: {result.summary()})")
    return result


def _published(counts, index: int) -> DeliveryStats:
    base = 3 * index
    return DeliveryStats(sent=counts[base], acked=counts[base + 1], failed=counts[base + 2])


def _worker(
    index: int,
    settings: Settings,
    simulator: Simulator,
    count: int,
    rate: float,
    duration: float | None,
    halt,
    counts,
    pipe,
) -> None:
    """One producer process: send its share, publish its counts, hand its totals to the parent."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C reaches the whole process group
        signal.signal(signum, lambda *_: halt.set())
    base = 3 * index

    def publish(stats: DeliveryStats) -> None:
        counts[base], counts[base + 1], counts[base + 2] = stats.sent, stats.acked, stats.failed

    try:
        stats = _sender(settings)(
            settings, simulator, count, rate, duration, halt, publish, lambda: None, report_interval=PUBLISH_INTERVAL_S
        )
        publish(stats)
        pipe.send(("done", stats))
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()
