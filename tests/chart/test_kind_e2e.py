"""End to end on a real kind cluster (`make e2e`): the Make targets build the cluster, install the
operators, build and load the image; the chart is installed with the kind values; then, through
kubectl and helm: Kafka ready, SparkApplication RUNNING, window rows of every sensor in the
driver's log, `helm test`, a Job created from the CronJob succeeds, and its report is copied out of
the reports volume by NOTES.txt's commands and by `make reports`. The checks are those of the node
test (tests/support/deployment.py). The cluster is deleted afterwards (keep it with
SENSORSTREAM_E2E_KEEP=1).

Needs a Docker engine and kind (`make kind`); skipped, with the reason, where either is missing.
Takes 15-30 minutes the first time (image build, operator and Kafka images pulled into the node).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support.chart import REHEARSE
from support.deployment import (
    check_report_folder,
    fetch_report_as_notes_say,
    get,
    kubectl_env,
    run_report_job,
    wait_for,
    wait_spark_running,
    wait_window_rows,
)
from support.places import CHART, K8S, ROOT

pytestmark = [pytest.mark.kind, pytest.mark.slow]

CLUSTER = os.environ.get("SENSORSTREAM_E2E_CLUSTER", "sensorstream-e2e")
NAMESPACE = "sensorstream"
RELEASE = "sensorstream"
DRIVER_POD = f"{RELEASE}-stream-driver"
SENSORS = 10


def docker_problem() -> str | None:
    if not shutil.which("docker"):
        return "docker is not installed"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if done.returncode != 0:
        return "the Docker engine does not answer (`docker info` fails)"
    return None


@pytest.fixture(scope="module")
def cluster(helm, tmp_path_factory):
    """A kind cluster with the operators, the image and the chart; deleted at the end."""
    problem = docker_problem()
    if problem:
        pytest.skip(f"kind e2e needs a Docker engine: {problem}")
    kind = REHEARSE.find_tool("kind")
    if not kind:
        pytest.skip("kind e2e needs kind: build it with `make kind` (or put kind on PATH)")
    if not shutil.which("kubectl"):
        pytest.skip("kind e2e needs kubectl: https://kubernetes.io/docs/tasks/tools/")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HELM=helm)
    make = [
        "make",
        "--no-print-directory",
        f"KIND_CLUSTER={CLUSTER}",
        f"K8S_NAMESPACE={NAMESPACE}",
        f"K8S_RELEASE={RELEASE}",
        f"HELM={helm}",
        f"KIND={kind}",
    ]

    def run(*args: str, timeout: float = 3600) -> None:
        done = subprocess.run([*args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    try:
        run(*make, "kind-up")
        run(*make, "operators")
        run(*make, "image")
        run(*make, "kind-load")
        run(
            helm,
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--values",
            str(K8S / "values-kind.yaml"),
            timeout=600,
        )
        yield env
    finally:
        if os.environ.get("SENSORSTREAM_E2E_KEEP") != "1":
            subprocess.run([kind, "delete", "cluster", "--name", CLUSTER], env=env, capture_output=True, timeout=600)


class KindCluster:
    """kubectl (from PATH) and helm pointed at the kind cluster: the `Kube` the shared checks take."""

    def __init__(self, env: dict[str, str], helm: str):
        self.env, self.helm_bin = env, helm

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["kubectl", *args], input=input, capture_output=True, text=True, env=self.env, timeout=300
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [self.helm_bin, *args], capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done


@pytest.fixture(scope="module")
def kube(cluster):
    return KindCluster(cluster, cluster["HELM"])


def conditions_ready(found: dict | None) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in ((found or {}).get("status") or {}).get("conditions") or []
    )


def test_kafka_is_ready(kube):
    wait_for(
        "the Strimzi Kafka cluster to be Ready",
        lambda: conditions_ready(get(kube, "-n", NAMESPACE, "kafka", RELEASE)),
        timeout=900,
        every=10,
    )


def test_topics_exist_as_kafkatopics(kube):
    def ready_topics():
        items = (get(kube, "-n", NAMESPACE, "kafkatopics") or {}).get("items", [])
        ready = {t["spec"].get("topicName") for t in items if conditions_ready(t)}
        return ready >= {"input_topic", "output_topic", "dead_letter_topic", "alerts_topic"}

    wait_for("the four KafkaTopics to be Ready", ready_topics, timeout=600, every=10)


def test_spark_application_runs_and_prints_window_rows(kube):
    wait_spark_running(kube, NAMESPACE, f"{RELEASE}-stream", timeout=900)
    rows = wait_window_rows(kube, NAMESPACE, DRIVER_POD, SENSORS, timeout=600)
    assert all("sensor_" in row for row in rows)


def test_helm_test_passes(kube):
    done = kube.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m", check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_job_from_the_cronjob_writes_a_report_into_the_volume(kube, cluster, tmp_path):
    run_report_job(kube, NAMESPACE, RELEASE, timeout=900)
    # NOTES.txt's commands copy it out of the volume ...
    folder = fetch_report_as_notes_say(kube, NAMESPACE, RELEASE, tmp_path / "notes", kubectl_env(cluster["KUBECONFIG"]))
    check_report_folder(folder, ["csv", "parquet", "json", "html"], SENSORS)
    # ... and so does `make reports`.
    image = get(kube, "-n", NAMESPACE, "cronjob", f"{RELEASE}-report")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]["containers"][0]["image"]
    done = subprocess.run(
        ["k8s/fetch-report.sh", str(tmp_path / "reports")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(cluster, K8S_NAMESPACE=NAMESPACE, K8S_RELEASE=RELEASE, K8S_IMAGE=image),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((tmp_path / "reports").glob("*/sensor_report.csv")), done.stdout
