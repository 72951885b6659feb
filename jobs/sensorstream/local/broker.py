"""A real Apache Kafka cluster in KRaft mode, run from the Maven jars as background processes.

    cluster = LocalKafka(state_dir, brokers=1, port=9092)
    cluster.up()        # format storage once, start, wait until every broker answers metadata
    cluster.down()      # stop only the processes this stack started (pid files)
    with cluster.running() as bootstrap: ...   # up, yield "127.0.0.1:PORT", down (tests)

Layout under <state_dir>/local/: cluster.json (host, ports, cluster id), node-N/{server.properties,
data/, broker.log, pid}. Broker N listens on host:port+N-1 (clients; host 127.0.0.1 unless asked
for another, such as a bridge address that Pods reach) and its controller on a port of its own on
127.0.0.1; every node is broker and controller, so any broker count forms a quorum. Host and ports
are written into the formatted storage: a later `up` asking for others is refused with one line.

Secured (`LocalKafka(..., security=SaslSsl.from_settings(dir, settings))`, `local up --sasl-ssl DIR`):
the client listener is SASL_SSL with SCRAM-SHA-512, its TLS from the caller's PEM files, and the
one SCRAM user (the clients' own user and password) is created when the storage is formatted.
Inter-broker and controller traffic stay PLAINTEXT on ports bound to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from kafka.errors import KafkaError

from sensorstream.brokers import accepts_connections, admin_client
from sensorstream.config import Secret, Settings, invalid, load_settings
from sensorstream.errors import BrokerUnavailableError, ConfigError, LocalStackError
from sensorstream.jvm import find_java, require_jars
from sensorstream.local.ports import free_port

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9092
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
HEAP = "-Xmx512m"

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.kafkaorg.name = org.apache.kafka
logger.kafkaorg.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


#: The files `local up --sasl-ssl DIR` reads from DIR: the broker's certificate (chain) and its
#: unencrypted PKCS#8 key, both PEM; the CA clients trust, unless KAFKA_SSL_CA_LOCATION names another.
BROKER_CERT, BROKER_KEY, CA_CERT = "broker.pem", "broker.key", "ca.pem"
SCRAM_MECHANISM = "SCRAM-SHA-512"
#: Characters that would break StorageTool's `SCRAM-SHA-512=[name=...,password=...]` argument.
_SCRAM_UNSAFE = re.compile(r'[,\[\]"=\s]')


@dataclass(frozen=True)
class SaslSsl:
    """The secured client listener: SASL_SSL, SCRAM-SHA-512, TLS from PEM files in `tls_dir`.

    The user and password are the ones the clients send (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD),
    so the broker and every command read them from the same settings.
    """

    tls_dir: Path
    username: str
    password: Secret
    ca: Path

    @classmethod
    def from_settings(cls, tls_dir: Path | str, settings: Settings) -> SaslSsl:
        """Checked: the certificate, key and CA files exist, a user and password are set."""
        tls_dir = Path(tls_dir).expanduser().resolve()
        for name in (BROKER_CERT, BROKER_KEY):
            if not (tls_dir / name).is_file():
                raise ConfigError(
                    "--sasl-ssl",
                    None,
                    f"{tls_dir / name} not found; DIR holds {BROKER_CERT} (the "
                    f"broker's certificate for 127.0.0.1/localhost) and {BROKER_KEY} (its key), PEM",
                )
        ca = Path(settings.ssl_ca_location or tls_dir / CA_CERT)
        if not ca.is_file():
            raise invalid(
                "ssl_ca_location",
                f"{ca} not found; name the CA certificate (PEM) that signed "
                f"{tls_dir / BROKER_CERT}, or put it in {tls_dir / CA_CERT}",
            )
        for name, value in (
            ("sasl_username", settings.sasl_username),
            ("sasl_password", settings.sasl_password.reveal()),
        ):
            if not value:
                raise invalid(
                    name,
                    "required with --sasl-ssl: the SCRAM user the local broker creates and every command logs in as",
                )
            if _SCRAM_UNSAFE.search(value):
                raise invalid(
                    name, "the local broker's SCRAM user and password take no spaces, commas, quotes, '=', '[' or ']'"
                )
        return cls(tls_dir, settings.sasl_username, settings.sasl_password, ca.resolve())

    def client_settings(self, settings: Settings) -> Settings:
        """`settings` with this listener's security: what a client needs to reach the broker."""
        return settings.replace(
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=self.username,
            sasl_password=self.password,
            ssl_ca_location=self.ca,
        )

    def keystore_pem(self) -> str:
        """Kafka's PEM key store in one file: the private key, then the certificate chain."""
        return (self.tls_dir / BROKER_KEY).read_text() + (self.tls_dir / BROKER_CERT).read_text()

    def scram_argument(self) -> str:
        """StorageTool's --add-scram value: the user, created with the storage."""
        return f"{SCRAM_MECHANISM}=[name={self.username},password={self.password.reveal()}]"

    def listener_properties(self, host: str, port: int, internal: int, controller: int, keystore: Path) -> dict:
        """server.properties entries: clients on SASL_SSL at host, brokers and controllers on 127.0.0.1 PLAINTEXT."""
        return {
            "listeners": f"SASL_SSL://{host}:{port},INTERNAL://127.0.0.1:{internal},"
            f"CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"SASL_SSL://{host}:{port},INTERNAL://127.0.0.1:{internal}",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            # the broker side of SCRAM reads the credentials from the metadata log: no user here
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": keystore,
        }


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    port: int
    pid: int | None
    running: bool


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if so.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


class LocalKafka:
    """The embedded broker(s). Ports are fixed once the storage is formatted (cluster.json)."""

    def __init__(
        self,
        state_dir: Path,
        brokers: int = 1,
        port: int | None = None,
        jars_dir: Path | None = None,
        progress: Callable[[str], None] = lambda _: None,
        security: SaslSsl | None = None,
        host: str | None = None,
    ):
        """`port` and `host` None: those the cluster was formatted with, else 9092 and 127.0.0.1."""
        if brokers < 1:
            raise ConfigError("--brokers", None, f"{brokers} must be 1 or more")
        self.home = Path(state_dir) / "local"
        self.jars_dir = Path(jars_dir) if jars_dir else Path(state_dir) / "jars" / "kafka"
        self.brokers = brokers
        self.asked_port, self.asked_host = port, host
        self.port = port if port is not None else DEFAULT_PORT
        self.host = host or DEFAULT_HOST
        self.progress = progress
        self.security = security

    # --- layout ---------------------------------------------------------------------------------

    @property
    def meta_file(self) -> Path:
        return self.home / "cluster.json"

    def node_dir(self, node_id: int) -> Path:
        return self.home / f"node-{node_id}"

    def _pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "pid"

    def _meta(self) -> dict | None:
        try:
            return json.loads(self.meta_file.read_text())
        except (OSError, ValueError):
            return None

    @property
    def keystore(self) -> Path:
        """The secured listener's key store (key + certificate chain), copied from the caller's files."""
        return self.home / "keystore.pem"

    def client_settings(self, settings: Settings | None = None) -> Settings:
        """`settings` (default: defaults only) pointed at this cluster, with its listener's security."""
        settings = (settings or load_settings(environ={})).replace(bootstrap_servers=self.bootstrap)
        return self.security.client_settings(settings) if self.security else settings

    @property
    def bootstrap(self) -> str:
        meta = self._meta()
        ports = meta["ports"] if meta else [self.port + i for i in range(self.brokers)]
        return ",".join(f"{self._host(meta)}:{p}" for p in ports)

    def _host(self, meta: dict | None) -> str:
        """The client listeners' address: the formatted cluster's, else the one asked for."""
        return meta.get("host", DEFAULT_HOST) if meta else self.host

    # --- lifecycle ------------------------------------------------------------------------------

    def status(self) -> list[NodeStatus]:
        meta = self._meta()
        if not meta:
            return []
        result = []
        for node_id, port in enumerate(meta["ports"], start=1):
            pid = self._read_pid(node_id)
            result.append(NodeStatus(node_id, port, pid, bool(pid and _alive(pid))))
        return result

    def is_up(self) -> bool:
        nodes = self.status()
        return bool(nodes) and all(n.running for n in nodes)

    def up(self) -> bool:
        """Start the cluster and wait until it serves metadata. False if it was already up."""
        if self.is_up():
            return False
        java = find_java()
        jars = require_jars(self.jars_dir, "Kafka broker", "kafka_2.13-")
        classpath = os.pathsep.join(str(j) for j in jars)
        meta = self._prepare(java, classpath)
        if self.security:  # each start reads the caller's files again (a renewed certificate, say)
            self._write_private(self.keystore, self.security.keystore_pem())
        started: list[int] = []
        try:
            for node_id in range(1, len(meta["ports"]) + 1):
                pid = self._read_pid(node_id)
                if pid and _alive(pid):
                    continue
                self._start_node(java, classpath, node_id)
                started.append(node_id)
            self._wait_ready(len(meta["ports"]))
        except BaseException:  # a broker that exited, a timeout, Ctrl+C: stop the ones this call started
            self._stop(started)
            raise
        return True

    def down(self, purge: bool = False) -> int:
        """Stop the processes this stack started; returns how many were running."""
        stopped = self._stop([node.node_id for node in self.status()])
        if purge and self.home.exists():
            shutil.rmtree(self.home)
        return stopped

    def _stop(self, node_ids: list[int]) -> int:
        """SIGTERM these nodes, SIGKILL those still alive after STOP_TIMEOUT_S; how many were running."""
        nodes = [node for node in self.status() if node.node_id in node_ids]
        stopped = 0
        for node in nodes:
            if node.pid and node.running:
                os.kill(node.pid, signal.SIGTERM)
                stopped += 1
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in nodes:
            while node.pid and _alive(node.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if node.pid and _alive(node.pid):
                os.kill(node.pid, signal.SIGKILL)
            self._pid_file(node.node_id).unlink(missing_ok=True)
        return stopped

    @contextmanager
    def running(self) -> Iterator[str]:
        """Up for the duration of the block (stopped after, even on error); yields the bootstrap."""
        self.up()
        try:
            yield self.bootstrap
        finally:
            self.down()

    # --- internals ------------------------------------------------------------------------------

    def _read_pid(self, node_id: int) -> int | None:
        try:
            return int(self._pid_file(node_id).read_text().strip())
        except (OSError, ValueError):
            return None

    def _prepare(self, java: str, classpath: str) -> dict:
        """Write configs and format storage once; later `up`s reuse data and ports."""
        meta = self._meta()
        if meta and len(meta["ports"]) != self.brokers:
            raise LocalStackError(
                f"the local cluster in {self.home} was created with {len(meta['ports'])} broker(s), not "
                f"{self.brokers}; run `sensorstream local down --purge` first to start over"
            )
        if meta:
            self._check_security(meta)
            self._check_address(meta)
            return meta
        host = self.host
        ports = [self.port + i for i in range(self.brokers)]
        controllers = [free_port() for _ in ports]
        internals = [free_port() for _ in ports] if self.security else []
        for port in ports:
            if accepts_connections(host, port):
                raise LocalStackError(
                    f"port {port} on {host} is taken by another program; stop it or choose another "
                    "with `sensorstream local up --port N`"
                )
        self.progress("formatting storage (KRaft)")
        cluster_id = (
            self._run_tool(java, classpath, ["kafka.tools.StorageTool", "random-uuid"]).strip().splitlines()[-1]
        )
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, c in enumerate(controllers, start=1))
        replicas = min(3, len(ports))
        for node_id, (port, controller) in enumerate(zip(ports, controllers), start=1):
            node = self.node_dir(node_id)
            (node / "data").mkdir(parents=True, exist_ok=True)
            (node / "log4j2.properties").write_text(_LOG4J2)
            props = {
                "process.roles": "broker,controller",
                "node.id": node_id,
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://127.0.0.1:{controller}",
                "advertised.listeners": f"PLAINTEXT://{host}:{port}",
                "controller.listener.names": "CONTROLLER",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "log.dirs": node / "data",
                "num.partitions": 3,
                "auto.create.topics.enable": "false",
                "offsets.topic.replication.factor": replicas,
                "transaction.state.log.replication.factor": replicas,
                "transaction.state.log.min.isr": 1,
                "share.coordinator.state.topic.replication.factor": replicas,
                "share.coordinator.state.topic.min.isr": 1,
                "group.initial.rebalance.delay.ms": 0,
                "log.segment.bytes": 64 * 1024 * 1024,
            }
            if self.security:
                props.update(
                    self.security.listener_properties(host, port, internals[node_id - 1], controller, self.keystore)
                )
            config = node / "server.properties"
            config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            format_args = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)]
            if self.security:
                format_args += ["--add-scram", self.security.scram_argument()]
            self._run_tool(java, classpath, format_args)
        meta = {"cluster_id": cluster_id, "host": host, "ports": ports, "controller_ports": controllers}
        if self.security:
            meta.update(
                internal_ports=internals,
                sasl_ssl={"tls_dir": str(self.security.tls_dir), "user": self.security.username},
            )
        self.meta_file.write_text(json.dumps(meta, indent=2))
        return meta

    def _check_security(self, meta: dict) -> None:
        """A cluster keeps the security it was formatted with: say so when `up` is asked for another."""
        formatted = meta.get("sasl_ssl")
        if bool(formatted) != bool(self.security):
            how = (
                "with --sasl-ssl DIR: start it with `sensorstream local up --sasl-ssl DIR`"
                if formatted
                else "without --sasl-ssl: start it without"
            )
            raise LocalStackError(
                f"the local cluster in {self.home} was created {how}, or run "
                "`sensorstream local down --purge` first to start over"
            )
        if formatted and self.security and formatted["user"] != self.security.username:
            raise LocalStackError(
                f"the local cluster in {self.home} has the SCRAM user {formatted['user']!r} (created with its "
                f"storage), not {self.security.username!r}; set KAFKA_SASL_USERNAME to it, or run "
                "`sensorstream local down --purge` first to start over"
            )

    def _check_address(self, meta: dict) -> None:
        """Host and ports are fixed in the formatted storage: one line when `up` asks for others."""
        host, port = self._host(meta), meta["ports"][0]
        if (self.asked_host not in (None, host)) or (self.asked_port not in (None, port)):
            asked = f"{self.asked_host or host}:{self.asked_port if self.asked_port is not None else port}"
            raise LocalStackError(
                f"the local cluster in {self.home} was created listening on {host}:{port}, not {asked}; "
                f"start it as it is with `sensorstream local up`, or run `sensorstream local down --purge` "
                "first to start over there (its topics and data are deleted)"
            )

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        """A file only its owner can read (a key, a password), written whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)

    def _run_tool(self, java: str, classpath: str, args: list[str]) -> str:
        """Run a Kafka tool. Its arguments go in a file only the owner can read (`java @file`), so a
        SCRAM password never shows in the process list, and never in the error line."""
        argfile = self.home / "tool.args"
        self._write_private(argfile, "\n".join(_quoted(a) for a in ["-cp", classpath, *args]) + "\n")
        try:
            out = subprocess.run(
                [java, HEAP, "-Dlog4j2.level=WARN", f"@{argfile}"], capture_output=True, text=True, timeout=120
            )
        finally:
            argfile.unlink(missing_ok=True)
        if out.returncode != 0:
            detail = (out.stderr or out.stdout).strip().splitlines()
            line = detail[-1] if detail else str(out.returncode)
            if self.security and self.security.password:
                line = line.replace(self.security.password.reveal(), "********")
            raise LocalStackError(f"{args[0]} {args[1]} failed: {line}")
        return out.stdout

    def _start_node(self, java: str, classpath: str, node_id: int) -> None:
        node = self.node_dir(node_id)
        self.progress(f"starting broker {node_id}")
        with open(node / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                [
                    java,
                    HEAP,
                    "-Xms128m",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={node / 'log4j2.properties'}",
                    f"-Dkafka.logs.dir={node}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(node / "server.properties"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl+C in the terminal does not reach the broker
            )
        self._pid_file(node_id).write_text(str(proc.pid))

    def _wait_ready(self, expected: int) -> None:
        self.progress("waiting for the broker to answer")
        settings = self.client_settings().replace(connect_timeout=timedelta(seconds=5))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            dead = [n for n in self.status() if not n.running]
            if dead:
                raise LocalStackError(
                    f"broker {dead[0].node_id} exited during start; see {self.node_dir(dead[0].node_id)}/broker.log "
                    f"and stdout.log ({self._last_error(dead[0].node_id)})"
                )
            if self._all_answer(settings, expected):
                return
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"the local broker did not answer at {self.bootstrap} within {READY_TIMEOUT_S:.0f}s; "
                    f"see {self.home}/node-*/broker.log"
                )
            time.sleep(0.5)

    def _all_answer(self, settings, expected: int) -> bool:
        """Every node answers on its own port and sees `expected` brokers. Asking one node is not
        enough: a broker killed a moment ago stays in the others' metadata until its session times
        out, so the cluster would look whole while that broker is still starting."""
        meta = self._meta()
        if meta is None:  # up() formats the storage before it waits
            return False
        host, ports = self._host(meta), meta["ports"]
        if not all(accepts_connections(host, port) for port in ports):
            return False
        for port in ports:
            try:
                with admin_client(settings.replace(bootstrap_servers=f"{host}:{port}")) as admin:
                    if len(admin.describe_cluster()["brokers"]) < expected:
                        return False
            # a node still in the metadata but not answering (its port held by another program, its
            # process gone): the request times out; not ready yet, and the caller sees the dead node
            except (BrokerUnavailableError, KafkaError):
                return False
        return True

    def _last_error(self, node_id: int) -> str:
        for name in ("stdout.log", "broker.log"):
            try:
                lines = (self.node_dir(node_id) / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            errors = [line for line in lines if "ERROR" in line or "Exception" in line]
            if errors:
                return errors[-1].strip()[:300]
        return "no error logged"


def _quoted(arg: str) -> str:
    """One argument of a `java @file` argument file: quoted, with its backslashes and quotes escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
