"""The chart, the image and the package agree: one image, one set of topic names, claims that
exist, a main file where the Dockerfile puts it, one Spark and one Kafka version everywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from support.chart import KUBE_VERSION, REHEARSE, VALUES_SETS, by_kind, pod_specs, settings_configmap
from support.places import CHART, K8S, ROOT, pom_property

pytestmark = pytest.mark.chart

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    return value


def dockerfile_copies() -> dict[str, str]:
    """Image folder -> repository folder, for the COPY of repository folders into the runtime (the
    last stage; the build stages copy sources they compile)."""
    runtime = DOCKERFILE[[m.start() for m in re.finditer(r"^FROM ", DOCKERFILE, re.MULTILINE)][-1] :]
    copies = {}
    for source, target in re.findall(r"^COPY (?!--)(\S+/) (\S+/)$", runtime, re.MULTILINE):
        copies[target.rstrip("/")] = source.rstrip("/")
    return copies


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def images(docs: list[dict]) -> set[str]:
    found = set()
    for doc in docs:
        for _, pod in pod_specs(doc):
            found |= {c["image"] for c in pod["containers"]}
        if doc["kind"] == "SparkApplication":
            spec = doc["spec"]
            found |= {spec["image"]} | {spec[r]["image"] for r in ("driver", "executor") if "image" in spec[r]}
    return found


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_one_image_everywhere(rendered, values_set):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert images(rendered[values_set]) == {f"sensorstream:{chart['appVersion']}"}


def test_image_tag_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (version,) = re.findall(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert chart["appVersion"] == version


@pytest.mark.parametrize("values_set", ["default", "kind", "minikube"])
def test_topic_names_in_kafkatopics_are_the_ones_the_workloads_use(rendered, values_set):
    docs = rendered[values_set]
    declared = {d["spec"]["topicName"] for d in by_kind(docs, "KafkaTopic")}
    configmap = settings_configmap(docs)
    keys = ("KAFKA_INPUT_TOPIC", "KAFKA_OUTPUT_TOPIC", "KAFKA_DEAD_LETTER_TOPIC", "KAFKA_ALERTS_TOPIC")
    used = {configmap["data"][k] for k in keys}
    assert declared == used and len(used) == 4


def test_kafkatopic_names_are_dns_names_and_topic_names_are_kept(rendered):
    for doc in by_kind(rendered["default"], "KafkaTopic"):
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert (
            doc["metadata"]["labels"]["strimzi.io/cluster"]
            == by_kind(rendered["default"], "Kafka")[0]["metadata"]["name"]
        )
    assert {d["spec"]["topicName"] for d in by_kind(rendered["default"], "KafkaTopic")} == {
        "input_topic",
        "output_topic",
        "dead_letter_topic",
        "alerts_topic",
    }


def run_helm_test_pod(tmp_path, docs: list[dict], on_the_broker: set[str]) -> subprocess.CompletedProcess:
    """Runs the `helm test` pod's script with the rendered ConfigMap as its environment and a
    stand-in for kafka-python's admin client that lists the given topics."""
    (pod,) = [d for d in by_kind(docs, "Pod") if d["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python3", "-c"]
    stand_in = tmp_path / "stand-in"
    (stand_in / "kafka").mkdir(parents=True, exist_ok=True)
    (stand_in / "kafka" / "__init__.py").write_text(
        "import json, os\n"
        "class KafkaAdminClient:\n"
        "    def __init__(self, **options): pass\n"
        "    def list_topics(self): return json.loads(os.environ['BROKER_TOPICS'])\n"
        "    def close(self): pass\n"
    )
    env = {
        **settings_configmap(docs)["data"],
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(stand_in), str(ROOT / "jobs")]),
        "BROKER_TOPICS": json.dumps(sorted(on_the_broker)),
    }
    return subprocess.run(
        [sys.executable, "-c", *container["args"]], env=env, capture_output=True, text=True, timeout=60
    )


def test_helm_test_checks_every_topic_the_chart_declares(rendered, tmp_path):
    docs = rendered["default"]
    declared = {d["spec"]["topicName"] for d in by_kind(docs, "KafkaTopic")}
    done = run_helm_test_pod(tmp_path, docs, declared | {"__consumer_offsets"})
    assert done.returncode == 0, done.stdout + done.stderr
    for topic in sorted(declared):
        done = run_helm_test_pod(tmp_path, docs, declared - {topic})
        assert done.returncode == 1 and f"missing ['{topic}']" in done.stdout, done.stdout + done.stderr


def test_the_local_broker_reads_the_same_topics_as_the_chart(rendered):
    from sensorstream.local.topics import specs_from_values

    local = {(s.name, s.partitions) for s in specs_from_values(CHART / "values.yaml").values()}
    chart = {(d["spec"]["topicName"], d["spec"]["partitions"]) for d in by_kind(rendered["default"], "KafkaTopic")}
    assert local == chart


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_every_mounted_claim_and_configmap_exists(rendered, values_set):
    docs = rendered[values_set]
    claims = {d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")}
    configmaps = {d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")}
    pods = [
        (f"{d['kind']}/{d['metadata']['name']}", pod.get("volumes") or [], pod["containers"])
        for d in docs
        for _, pod in pod_specs(d)
    ]
    for app in by_kind(docs, "SparkApplication"):
        spec = app["spec"]
        pods += [
            (f"SparkApplication/{role}", spec.get("volumes") or [], [spec[role]]) for role in ("driver", "executor")
        ]
    for where, volumes, containers in pods:
        names = {v["name"] for v in volumes}
        for volume in volumes:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{where}: claim missing"
        for container in containers:
            for mount in container.get("volumeMounts") or []:
                assert mount["name"] in names, f"{where}: mounts undeclared volume {mount['name']}"
            for source in container.get("envFrom") or []:
                assert source["configMapRef"]["name"] in configmaps, f"{where}: ConfigMap missing"


def test_checkpoint_and_reports_claims_are_where_the_settings_point(rendered):
    docs = rendered["default"]
    configmap = settings_configmap(docs)
    (app,) = by_kind(docs, "SparkApplication")
    driver_mounts = {m["mountPath"] for m in app["spec"]["driver"]["volumeMounts"]}
    executor_mounts = {m["mountPath"] for m in app["spec"]["executor"]["volumeMounts"]}
    assert configmap["data"]["CHECKPOINT_LOCATION"] in driver_mounts & executor_mounts
    (cronjob,) = by_kind(docs, "CronJob")
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert configmap["data"]["REPORT_DIR"] in {m["mountPath"] for m in container["volumeMounts"]}


def test_main_application_file_is_where_the_dockerfile_puts_it(rendered):
    (app,) = by_kind(rendered["default"], "SparkApplication")
    main_file = app["spec"]["mainApplicationFile"]
    assert main_file.startswith("local://")
    image_path = main_file[len("local://") :]
    copies = dockerfile_copies()
    folder = next(f for f in copies if image_path.startswith(f + "/"))
    repo_file = ROOT / copies[folder] / image_path[len(folder) + 1 :]
    assert repo_file == ROOT / "jobs" / "spark_entrypoint.py" and repo_file.is_file()
    # The rehearsal maps image paths the same way.
    assert {k: str(v.relative_to(ROOT)) for k, v in REHEARSE.IMAGE_PATHS.items()} == copies


def test_image_paths_in_spark_conf_exist_in_the_repository(rendered):
    (app,) = by_kind(rendered["default"], "SparkApplication")
    copies = dockerfile_copies()
    for key, value in app["spec"]["sparkConf"].items():
        for folder, source in copies.items():
            for path in re.findall(re.escape(folder) + r"/\S+", value):
                assert (ROOT / source / path[len(folder) + 1 :]).is_file(), f"{key}: {path} is not in the image"


def test_spark_version_agrees_everywhere(rendered):
    spark = pom_property("spark.version")
    assert dockerfile_arg("SPARK_VERSION") == spark
    # pyspark 4 is built for Scala 2.13; the image checks the connector jar by this name.
    assert dockerfile_arg("SCALA_BINARY_VERSION") == pom_property("scala.binary.version")
    assert chart_values()["stream"]["sparkVersion"] == spark
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    assert schema["properties"]["stream"]["properties"]["sparkVersion"]["const"] == spark
    for docs in rendered.values():
        assert {a["spec"]["sparkVersion"] for a in by_kind(docs, "SparkApplication")} == {spark}
    assert f'"pyspark=={spark}"' in (ROOT / "pyproject.toml").read_text()


def test_kafka_version_agrees_with_the_local_broker(rendered):
    kafka = pom_property("kafka.version")
    assert chart_values()["kafka"]["version"] == kafka
    for name in ("default", "kind", "minikube"):
        assert {k["spec"]["kafka"]["version"] for k in by_kind(rendered[name], "Kafka")} == {kafka}


def test_kind_node_image_is_the_validated_kubernetes_version():
    config = yaml.safe_load((K8S / "kind-config.yaml").read_text())
    assert {n["image"].split("@")[0] for n in config["nodes"]} == {f"kindest/node:v{KUBE_VERSION}"}


def test_configmap_keys_are_settings_the_package_reads(rendered):
    from sensorstream.config import SETTINGS

    known = {s.env for s in SETTINGS}
    for name, docs in rendered.items():
        configmap = settings_configmap(docs)
        assert set(configmap["data"]) <= known, f"{name}: unknown settings {set(configmap['data']) - known}"
        assert "SPARK_MASTER" not in configmap["data"], "spark-submit decides the master of the stream"


def test_the_cli_accepts_every_command_the_chart_runs(rendered):
    from sensorstream.cli import build_parser

    docs = rendered["default"]
    commands = [
        c["command"] + c["args"]
        for d in docs
        for _, pod in pod_specs(d)
        for c in pod["containers"]
        if c.get("command") == ["sensorstream"]
    ]
    (app,) = by_kind(docs, "SparkApplication")
    commands.append(["sensorstream"] + app["spec"]["arguments"])
    assert {c[1] for c in commands} == {"produce", "report", "stream"}
    parser = build_parser()
    for command in commands:
        parser.parse_args(command[1:])


def test_image_runs_as_the_spark_user():
    assert re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)[-1] == "185"
    # A passwd entry for 185 (Hadoop's login in Spark fails without one).
    assert re.search(r"useradd [^;]*--uid 185 --gid 185 ", DOCKERFILE)
    for values in (CHART / "values.yaml",):
        ctx = yaml.safe_load(values.read_text())["podSecurityContext"]
        assert ctx["runAsUser"] == 185 and ctx["runAsNonRoot"] is True


def test_every_stage_is_debian_bookworm_slim():
    """Users pull debian:bookworm-slim; without a registry, k8s/image/debian-base.sh makes the same
    release under that name. Java and Python are Debian's (17 and bookworm's 3.11)."""
    stages: list[str] = []
    for image, name in re.findall(r"^FROM (\S+)(?: AS (\S+))?", DOCKERFILE, re.MULTILINE):
        assert image == "debian:bookworm-slim" or image in stages, image  # or a stage built before
        stages.append(name)
    assert stages
    assert "openjdk-17-jre-headless" in DOCKERFILE and "openjdk-17-jdk-headless" in DOCKERFILE
    assert f"--mount=type=secret,id={'build-ca'},required=false" in DOCKERFILE
    base_script = (K8S / "image" / "debian-base.sh").read_text()
    assert "docker.io/library/debian:bookworm-slim" in base_script


def test_image_installs_the_package_with_the_pinned_pyspark():
    """The `spark` extra is pyspark at the Spark version, and the image installs the package with it
    (pip fails the build if the pin and the pyspark installed before it differ)."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["spark"] == [f"pyspark=={pom_property('spark.version')}"]
    assert 'pip install --no-cache-dir --disable-pip-version-check "/opt/sensorstream[spark]"' in DOCKERFILE
    assert 'pip install --no-cache-dir --disable-pip-version-check "pyspark==${SPARK_VERSION}"' in DOCKERFILE


def dockerfile_entrypoint() -> list[str]:
    (entry,) = re.findall(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE, re.MULTILINE)
    return json.loads(entry)


def test_entrypoint_is_the_repository_script_under_tini():
    entry = dockerfile_entrypoint()
    assert entry[:2] == ["/usr/bin/tini", "--"]
    (source,) = [
        src for src, dst in re.findall(r"^COPY (?!--)(\S+) (\S+)$", DOCKERFILE, re.MULTILINE) if dst == entry[2]
    ]
    assert source == "k8s/image/entrypoint.sh" and os.access(ROOT / source, os.X_OK)


def run_entrypoint(tmp_path, args: list[str], env: dict[str, str]) -> list[str]:
    """Runs k8s/image/entrypoint.sh with stand-ins for java and spark-submit that print the
    arguments they get, one per line."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    for name in ("java", "spark-submit"):
        tool = fake_bin / name
        tool.write_text(f'#!/bin/sh\necho {name}\nfor a in "$@"; do echo "$a"; done\n')
        tool.chmod(0o755)
    full_env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "SPARK_HOME": "/opt/spark", **env}
    out = subprocess.run(
        ["bash", str(ROOT / "k8s" / "image" / "entrypoint.sh"), *args],
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


def test_entrypoint_passes_other_commands_through(tmp_path):
    assert run_entrypoint(tmp_path, ["echo", "hi", "there"], {}) == ["hi there"]


def test_entrypoint_runs_the_driver_as_spark_submit_in_client_mode(tmp_path):
    args = [
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        "local:///opt/sensorstream/jobs/spark_entrypoint.py",
        "stream",
    ]
    assert run_entrypoint(tmp_path, ["driver", *args], {"SPARK_DRIVER_BIND_ADDRESS": "10.244.0.7"}) == [
        "spark-submit",
        "--conf",
        "spark.driver.bindAddress=10.244.0.7",
        "--deploy-mode",
        "client",
        *args,
    ]


def test_entrypoint_runs_the_executor_backend_from_spark_env(tmp_path):
    env = {
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "1",
        "SPARK_EXECUTOR_MEMORY": "1024m",
        "SPARK_APPLICATION_ID": "spark-abc",
        "SPARK_EXECUTOR_POD_IP": "10.244.0.9",
        "SPARK_EXECUTOR_POD_NAME": "stream-exec-3",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_CONF_DIR": "/opt/spark/conf",
        "SPARK_CLASSPATH": "/extra/a.jar",
        # one option per variable, kept whole, in numeric order (10 after 2)
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_2": "-Dx=a b",
        "SPARK_JAVA_OPT_10": "-Dlast=1",
        "SPARK_JAVA_OPT_1": "-Dlog4j2.configurationFile=/x.properties",
    }
    assert run_entrypoint(tmp_path, ["executor"], env) == [
        "java",
        "-Xms1024m",
        "-Xmx1024m",
        "-Dspark.driver.port=7078",
        "-Dlog4j2.configurationFile=/x.properties",
        "-Dx=a b",
        "-Dlast=1",
        "-cp",
        "/opt/spark/conf:/extra/a.jar:/opt/spark/jars/*",
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url",
        env["SPARK_DRIVER_URL"],
        "--executor-id",
        "3",
        "--cores",
        "1",
        "--app-id",
        "spark-abc",
        "--hostname",
        "10.244.0.9",
        "--resourceProfileId",
        "0",
        "--podName",
        "stream-exec-3",
    ]
