"""Rehearse the chart's workloads as local processes, against a local Kafka broker.

    .venv/bin/python k8s/rehearse.py [--bootstrap HOST:PORT] [--values k8s/values-kind.yaml]
    (or: make rehearse)

What a cluster would run, run here instead, from the manifests `helm template` renders:

1. the topics the KafkaTopics declare, created on the broker;
2. the producer Deployment's container: command, args and env (ConfigMap refs resolved), run for a
   while as a subprocess;
3. the streaming SparkApplication: `spark-submit --master local[2]` of its main file with its
   arguments, its sparkConf as `--conf` and its driver's env, until window rows show in its log,
   then SIGTERM;
4. the report CronJob's container command, once.

Pass = window rows in the stream's log and a report file in the reports volume.

The only substitutions are the bootstrap address (the local broker's), image paths (where the
Dockerfile copies the repository's files) to repository paths, and volume mounts to temporary
folders. Secrets are absent (the kind values reference none). Without --bootstrap the local broker
is started with `sensorstream local up`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from sensorstream.config import default_state_dir
from sensorstream.jvm import jars_folder
from sensorstream.local.ports import free_port
from sensorstream.local.topics import TopicSpec, ensure_topics

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "sensorstream"
DEFAULT_VALUES = REPO / "k8s" / "values-kind.yaml"
RELEASE = "sensorstream"
NAMESPACE = "sensorstream"
#: The Kubernetes version the chart is rendered for: the node image of kind (k8s/kind-config.yaml).
KUBE_VERSION = "1.37.0"
#: Where the Dockerfile puts the repository's files in the image (COPY jobs/ /opt/sensorstream/jobs/).
IMAGE_PATHS = {"/opt/sensorstream/jobs": REPO / "jobs"}
VENV_BIN = Path(sys.executable).parent
CONNECTOR_JARS = jars_folder("spark")
#: The part of the developer's environment a subprocess keeps; everything else comes from the chart.
KEEP_ENV = ("HOME", "JAVA_HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "PYTHONPATH")  # PYTHONPATH: the code under test

HEADER_RE = re.compile(r"\bwindow_start\b")
ROW_RE = re.compile(r"\bsensor_\d+\b")


class RehearsalError(Exception):
    """The rehearsal could not run or did not pass; the message says which step and why."""


Say = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[rehearse] {message}", flush=True)


# --- rendering -------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """A tool `make` builds into .sensorstream/tools/bin (helm, kind): $<NAME> (e.g. $HELM), else the
    built one, else PATH; None when none of them is an executable file."""
    candidates = [os.environ.get(name.upper()), str(default_state_dir() / "tools" / "bin" / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_helm() -> str:
    """helm (see find_tool), or RehearsalError naming the make target."""
    helm = find_tool("helm")
    if not helm:
        raise RehearsalError("helm not found (not in $HELM, .sensorstream/tools/bin or PATH): run `make helm`")
    return helm


def render(
    values: Iterable[Path] = (DEFAULT_VALUES,),
    helm: str | None = None,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict]:
    """The chart's objects, as `helm template` renders them."""
    command = [
        helm or find_helm(),
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    for path in values:
        command += ["--values", str(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RehearsalError(f"helm template failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# --- what the cluster would run --------------------------------------------------------------


@dataclass
class Workload:
    """One container as the cluster would start it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    #: container path -> volume name, for every mount of a volume the rehearsal maps to a folder
    mounts: dict[str, str]
    #: env vars that read a Secret; absent in the rehearsal
    secret_env: list[str] = field(default_factory=list)


@dataclass
class SparkJob:
    name: str
    main_file: str
    arguments: list[str]
    spark_conf: dict[str, str]
    driver_memory: str | None
    env: dict[str, str]
    mounts: dict[str, str]
    secret_env: list[str] = field(default_factory=list)


@dataclass
class Plan:
    topics: list[TopicSpec]
    producer: Workload
    stream: SparkJob
    report: Workload


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise RehearsalError(f"expected one {kind} in the rendered chart, found {len(found)}")
    return found[0]


def _env(container: dict, configmaps: dict[str, dict]) -> tuple[dict[str, str], list[str]]:
    """A container's environment: envFrom ConfigMaps, then env (ConfigMap refs resolved)."""
    env: dict[str, str] = {}
    secrets: list[str] = []
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in configmaps:
                raise RehearsalError(f"envFrom refers to ConfigMap {name}, which the chart does not render")
            env.update({(source.get("prefix") or "") + k: str(v) for k, v in configmaps[name].items()})
        elif "secretRef" in source:
            secrets.append(f"(all of Secret {source['secretRef']['name']})")
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var.get("valueFrom") or {}
        if "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[var["name"]] = str(configmaps[key["name"]][key["key"]])
        elif "secretKeyRef" in ref:
            secrets.append(var["name"])
        else:
            raise RehearsalError(f"env {var['name']}: {sorted(ref)} cannot be resolved outside a cluster")
    return env, secrets


def _claim_or_scratch_mounts(mounts: list[dict], volumes: list[dict]) -> dict[str, str]:
    """Mounts of claims and emptyDirs (folders the workload writes); Secrets are absent."""
    kinds = {v["name"]: v for v in volumes or []}
    mapped = {}
    for mount in mounts or []:
        volume = kinds.get(mount["name"], {})
        if "persistentVolumeClaim" in volume or "emptyDir" in volume:
            mapped[mount["mountPath"]] = mount["name"]
    return mapped


def _pod_workload(name: str, pod_spec: dict, configmaps: dict[str, dict]) -> Workload:
    (container,) = pod_spec["containers"]
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if not argv:
        raise RehearsalError(f"{name}: the container sets no command; the rehearsal runs only explicit commands")
    env, secrets = _env(container, configmaps)
    mounts = _claim_or_scratch_mounts(container.get("volumeMounts"), pod_spec.get("volumes"))
    return Workload(name, argv, env, mounts, secrets)


def plan(docs: list[dict]) -> Plan:
    """Read the rendered chart into what the rehearsal runs."""
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    topics = [
        TopicSpec(
            name=d["spec"].get("topicName") or d["metadata"]["name"],
            partitions=int(d["spec"].get("partitions", 1)),
            replicas=int(d["spec"].get("replicas", 1)),
            config={str(k): str(v) for k, v in (d["spec"].get("config") or {}).items()},
        )
        for d in docs
        if d.get("kind") == "KafkaTopic"
    ]
    if not topics:
        raise RehearsalError("the rendered chart declares no KafkaTopics (kafka.manageTopics is false?)")
    deployment = _one(docs, "Deployment")
    producer = _pod_workload("producer", deployment["spec"]["template"]["spec"], configmaps)
    cronjob = _one(docs, "CronJob")
    report = _pod_workload("report", cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"], configmaps)

    app = _one(docs, "SparkApplication")["spec"]
    driver = app["driver"]
    env, secrets = _env(driver, configmaps)
    stream = SparkJob(
        name="stream",
        main_file=app["mainApplicationFile"],
        arguments=[str(a) for a in app.get("arguments") or []],
        spark_conf={str(k): str(v) for k, v in (app.get("sparkConf") or {}).items()},
        driver_memory=driver.get("memory"),
        env=env,
        mounts=_claim_or_scratch_mounts(driver.get("volumeMounts"), app.get("volumes")),
        secret_env=secrets,
    )
    return Plan(topics, producer, stream, report)


# --- the substitutions -----------------------------------------------------------------------


class Mapper:
    """The rehearsal's only substitutions: bootstrap, image paths, volume mounts."""

    def __init__(self, workdir: Path, bootstrap: str):
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.paths: dict[str, Path] = {k: Path(v) for k, v in IMAGE_PATHS.items()}

    def scoped(self, mounts: dict[str, str]) -> Mapper:
        """A mapper for one workload: the image paths plus that workload's mounts, each volume a
        folder under the work dir (the same volume name is the same folder across workloads)."""
        mapper = Mapper(self.workdir, self.bootstrap)
        for container_path, volume in mounts.items():
            folder = self.workdir / "volumes" / volume
            folder.mkdir(parents=True, exist_ok=True)
            mapper.paths[container_path] = folder
        return mapper

    def text(self, value: str) -> str:
        if value.startswith("local://"):
            value = value[len("local://") :]
        # One pass (a replacement is never rewritten again), longest paths first so /a/b wins
        # over /a, whole path components only.
        alternatives = "|".join(re.escape(p) for p in sorted(self.paths, key=len, reverse=True))
        pattern = r"(?<![\w/.-])(" + alternatives + r")(?=/|$|[\s\"',;:])"
        return re.sub(pattern, lambda m: str(self.paths[m.group(1)]), value)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        mapped = {k: self.text(v) for k, v in env.items()}
        mapped["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        if mapped.get("METRICS_PORT"):  # each pod has an address of its own; here they share 127.0.0.1
            mapped.update(METRICS_HOST="127.0.0.1", METRICS_PORT=str(free_port()), SPARK_UI_PORT=str(free_port()))
        return mapped


def base_env() -> dict[str, str]:
    """What a container gets from its image rather than the chart: the tools on PATH, Java."""
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- running ---------------------------------------------------------------------------------


class Process:
    """A subprocess whose combined output is copied to a log file and watched line by line."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        cwd: Path,
        watch: Callable[[str], None] | None = None,
    ):
        self.name = name
        self.log = log
        self.lines: list[str] = []
        self._watch = watch
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            raise RehearsalError(f"{name}: cannot start {argv[0]}: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self.log.open("w", encoding="utf-8") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                self.lines.append(line.rstrip("\n"))
                if self._watch:
                    self._watch(line.rstrip("\n"))

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM (what Kubernetes sends), then SIGKILL after `timeout` seconds."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Whatever the process left behind goes with it, as when a container exits.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reader.join(10)
        return self.proc.returncode

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.lines[-lines:])


class WindowRows:
    """Counts window rows: a line naming sensor_<N> after a header line naming window_start."""

    def __init__(self) -> None:
        self.header_seen = False
        self.rows: list[str] = []
        self.event = threading.Event()

    def __call__(self, line: str) -> None:
        if HEADER_RE.search(line):
            self.header_seen = True
        elif self.header_seen and ROW_RE.search(line):
            self.rows.append(line)
            self.event.set()


@dataclass
class Result:
    workdir: Path
    topics: list[str]
    window_rows: list[str]
    stream_exit: int | None
    producer_exit: int | None
    report_files: list[Path]
    logs: dict[str, Path]

    @property
    def passed(self) -> bool:
        return bool(self.window_rows) and bool(self.report_files)


def create_topics(bootstrap: str, topics: list[TopicSpec], say: Say) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="sensorstream-rehearsal")
    try:
        brokers = len(admin.describe_cluster()["brokers"])
    finally:
        admin.close()
    specs = [replace(t, replicas=min(t.replicas, brokers)) for t in topics]
    created = ensure_topics(bootstrap, specs)
    say(
        f"topics from the KafkaTopics: {', '.join(t.name for t in topics)} "
        f"({'created ' + ', '.join(created) if created else 'already there'}; replicas capped to {brokers} broker(s))"
    )


def _flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def spark_submit_argv(job: SparkJob, mapper: Mapper, jars: list[Path]) -> list[str]:
    argv = [str(VENV_BIN / "spark-submit"), "--master", "local[2]", "--jars", ",".join(str(j) for j in jars)]
    if job.driver_memory:
        argv += ["--driver-memory", job.driver_memory]
    for key, value in job.spark_conf.items():
        argv += ["--conf", f"{key}={mapper.text(value)}"]
    return argv + [mapper.text(job.main_file)] + [mapper.text(a) for a in job.arguments]


def rehearse(
    bootstrap: str,
    workdir: Path,
    values: Iterable[Path] = (DEFAULT_VALUES,),
    helm: str | None = None,
    say: Say = _say,
    produce_seconds: float = 5,
    rows_timeout: float = 300,
    report_timeout: float = 600,
) -> Result:
    """Render the chart, run its workloads locally against `bootstrap`; see the module docstring."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    values = [Path(v) for v in values]
    shown = ", ".join(str(v.relative_to(REPO)) if v.is_relative_to(REPO) else str(v) for v in values)
    say(f"rendering {CHART.relative_to(REPO)} with {shown}")
    the_plan = plan(render(values, helm))
    volumes = Mapper(workdir, bootstrap)
    logs = {name: workdir / f"{name}.log" for name in ("producer", "stream", "report")}
    say(f"broker {bootstrap}; logs and volumes under {workdir}")
    for workload in (the_plan.producer, the_plan.stream, the_plan.report):
        if workload.secret_env:
            say(f"{workload.name}: Secret-backed env absent in the rehearsal: {', '.join(workload.secret_env)}")

    create_topics(bootstrap, the_plan.topics, say)
    jars = sorted(CONNECTOR_JARS.glob("*.jar"))
    if not any("spark-sql-kafka" in j.name for j in jars):
        raise RehearsalError(f"no Spark Kafka connector jars in {CONNECTOR_JARS}: run `make jars`")

    # 1. producer
    p = the_plan.producer
    mapper = volumes.scoped(p.mounts)
    argv = [mapper.text(a) for a in p.argv]
    heartbeat = _flag_value(argv, "--heartbeat-file")
    say(f"producer: {' '.join(p.argv)}")
    producer = Process("producer", argv, base_env() | mapper.env(p.env), logs["producer"], cwd=workdir)
    stream: Process | None = None
    try:
        deadline = time.monotonic() + 90
        while heartbeat and not Path(heartbeat).exists():
            if not producer.running():
                raise RehearsalError(
                    f"producer exited with {producer.proc.returncode} before any delivery:\n{producer.tail()}"
                )
            if time.monotonic() > deadline:
                raise RehearsalError(
                    f"producer: no acknowledged delivery within 90 s (no {heartbeat}):\n{producer.tail()}"
                )
            time.sleep(0.5)
        say(
            f"producer: deliveries acknowledged (heartbeat file touched); producing {produce_seconds:g} s "
            "before the stream starts"
        )
        time.sleep(produce_seconds)

        # 2. stream
        job = the_plan.stream
        mapper = volumes.scoped(job.mounts)
        argv = spark_submit_argv(job, mapper, jars)
        say(
            f"stream: spark-submit --master local[2] {job.main_file} {' '.join(job.arguments)} "
            f"({len(job.spark_conf)} sparkConf entries as --conf)"
        )
        rows = WindowRows()
        stream = Process("stream", argv, base_env() | mapper.env(job.env), logs["stream"], cwd=workdir, watch=rows)
        deadline = time.monotonic() + rows_timeout
        while not rows.event.wait(1):
            if not stream.running():
                raise RehearsalError(
                    f"stream exited with {stream.proc.returncode} before any window row:\n{stream.tail(40)}"
                )
            if time.monotonic() > deadline:
                raise RehearsalError(f"stream: no window rows within {rows_timeout:g} s:\n{stream.tail(40)}")
        time.sleep(1)  # let the rest of the table reach the log
        say(f"stream: window rows in the log ({len(rows.rows)} so far), e.g. {rows.rows[0].strip()}")
        say("stream: SIGTERM")
        stream_exit = stream.stop()
        # In a pod, SIGTERM reaches spark-submit's JVM (tini forwards it), which stops the Python
        # driver it launched: 143 (128 + SIGTERM) is that path, 0 a stop the driver finished itself.
        how = {0: "stopped cleanly", 143: "stopped by SIGTERM, as in a pod"}.get(stream_exit, "unexpected")
        say(f"stream: exited with {stream_exit} ({how})")
    finally:
        if stream is not None and stream.running():
            stream.stop()
        say("producer: SIGTERM")
        producer_exit = producer.stop(timeout=30)
        summary = next((line for line in reversed(producer.lines) if line.startswith("done:")), "")
        say(f"producer: exited with {producer_exit} {summary}".rstrip())

    # 3. report
    r = the_plan.report
    mapper = volumes.scoped(r.mounts)
    argv = [mapper.text(a) for a in r.argv]
    say(f"report: {' '.join(r.argv)}")
    report = Process("report", argv, base_env() | mapper.env(r.env), logs["report"], cwd=workdir)
    try:
        report.proc.wait(report_timeout)
    except subprocess.TimeoutExpired:
        report.stop()
        raise RehearsalError(f"report: still running after {report_timeout:g} s:\n{report.tail(40)}") from None
    report.stop()
    if report.proc.returncode != 0:
        raise RehearsalError(f"report exited with {report.proc.returncode}:\n{report.tail(40)}")
    report_dir = mapper.text(_flag_value(r.argv, "--report-dir") or r.env.get("REPORT_DIR", ""))
    if not report_dir or not Path(report_dir).is_dir():
        raise RehearsalError(f"report: its report dir {report_dir!r} is not a mapped volume")
    files = sorted(p for p in Path(report_dir).rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
    say(f"report: {len(files)} file(s) in the reports volume ({report_dir})")
    for path in files[:10]:
        say(f"  {path.relative_to(report_dir)}")
    return Result(workdir, [t.name for t in the_plan.topics], rows.rows, stream_exit, producer_exit, files, logs)


def _local_broker(say: Say) -> str:
    """Start (or find) the local broker with the CLI, as `make up` does; returns its bootstrap."""
    done = subprocess.run([str(VENV_BIN / "sensorstream"), "local", "up"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RehearsalError(f"sensorstream local up failed: {(done.stderr or done.stdout).strip()}")
    match = re.search(r"\bat (\S+:\d+)", done.stdout)
    if not match:
        raise RehearsalError(f"cannot tell the local broker's address from: {done.stdout.strip()}")
    say(f"local broker: {done.stdout.splitlines()[0]} (it keeps running; `make down` stops it)")
    return match.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="broker to use (default: start the local one with `sensorstream local up`)")
    parser.add_argument(
        "--values",
        action="append",
        type=Path,
        help=f"values file(s) to render with (default {DEFAULT_VALUES.relative_to(REPO)})",
    )
    parser.add_argument("--workdir", type=Path, help="folder for logs and volumes (default: a new temporary folder)")
    parser.add_argument(
        "--produce-seconds", type=float, default=5, help="producing before the stream starts (default 5)"
    )
    args = parser.parse_args(argv)
    try:
        bootstrap = args.bootstrap or _local_broker(_say)
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sensorstream-rehearsal-"))
        result = rehearse(
            bootstrap, workdir, values=args.values or [DEFAULT_VALUES], produce_seconds=args.produce_seconds
        )
    except RehearsalError as exc:
        print(f"[rehearse] FAILED: {exc}", file=sys.stderr)
        return 1
    verdict = "PASSED" if result.passed else "FAILED"
    print(
        f"[rehearse] {verdict}: {len(result.window_rows)} window row(s) in the stream's log, "
        f"{len(result.report_files)} report file(s); logs in {result.workdir}"
    )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
