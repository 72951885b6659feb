"""End to end on a real kind cluster (`make e2e`): the Make targets build the cluster, install the
operators, build and load the image; the chart is installed with the kind values; then, through
the Kubernetes API: Kafka ready, SparkApplication RUNNING, window rows in the driver's log, a Job
created from the CronJob succeeds, and its report is in the reports volume (and `make reports`
copies it out). The cluster is deleted afterwards (keep it with SENSORSTREAM_E2E_KEEP=1).

Needs a Docker engine and kind (`make kind`); skipped, with the reason, where either is missing.
Takes 15-30 minutes the first time (image build, operator and Kafka images pulled into the node).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

from support.chart import REHEARSE
from support.places import CHART, K8S, ROOT

pytestmark = [pytest.mark.kind, pytest.mark.slow]

CLUSTER = os.environ.get("SENSORSTREAM_E2E_CLUSTER", "sensorstream-e2e")
NAMESPACE = "sensorstream"
RELEASE = "sensorstream"
DRIVER_POD = f"{RELEASE}-stream-driver"


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


def wait_for(what: str, check, timeout: float, every: float = 10):
    """Poll `check()` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)


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
    make = ["make", "--no-print-directory", f"KIND_CLUSTER={CLUSTER}", f"K8S_NAMESPACE={NAMESPACE}",
            f"K8S_RELEASE={RELEASE}", f"HELM={helm}", f"KIND={kind}"]

    def run(*args: str, timeout: float = 3600) -> None:
        done = subprocess.run([*args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    try:
        run(*make, "kind-up")
        run(*make, "operators")
        run(*make, "image")
        run(*make, "kind-load")
        run(helm, "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
            "--values", str(K8S / "values-kind.yaml"), timeout=600)
        yield env
    finally:
        if os.environ.get("SENSORSTREAM_E2E_KEEP") != "1":
            subprocess.run([kind, "delete", "cluster", "--name", CLUSTER], env=env, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def api(cluster):
    from kubernetes import client, config

    config.load_kube_config(config_file=cluster["KUBECONFIG"])
    return client


def test_kafka_is_ready(api):
    custom = api.CustomObjectsApi()

    def ready():
        kafka = custom.get_namespaced_custom_object("kafka.strimzi.io", "v1", NAMESPACE, "kafkas", RELEASE)
        conditions = (kafka.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for("the Strimzi Kafka cluster to be Ready", ready, timeout=900)


def test_topics_exist_as_kafkatopics(api):
    custom = api.CustomObjectsApi()

    def ready_topics():
        items = custom.list_namespaced_custom_object("kafka.strimzi.io", "v1", NAMESPACE, "kafkatopics")["items"]
        ready = {t["spec"].get("topicName") for t in items
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in (t.get("status") or {}).get("conditions") or [])}
        return ready >= {"input_topic", "output_topic", "dead_letter_topic"}

    wait_for("the three KafkaTopics to be Ready", ready_topics, timeout=600)


def test_spark_application_runs_and_prints_window_rows(api):
    custom = api.CustomObjectsApi()
    core = api.CoreV1Api()

    def state():
        app = custom.get_namespaced_custom_object("sparkoperator.k8s.io", "v1beta2", NAMESPACE, "sparkapplications",
                                                  f"{RELEASE}-stream")
        current = ((app.get("status") or {}).get("applicationState") or {}).get("state")
        if current in ("FAILED", "SUBMISSION_FAILED"):
            pytest.fail(f"SparkApplication {current}: {app['status'].get('applicationState')}", pytrace=False)
        return current == "RUNNING"

    wait_for("the SparkApplication to be RUNNING", state, timeout=900)

    def window_rows():
        try:
            log = core.read_namespaced_pod_log(DRIVER_POD, NAMESPACE)
        except api.ApiException:  # the driver pod may be between restarts
            return None
        rows = REHEARSE.WindowRows()  # the rehearsal's reading of the same log
        for line in log.splitlines():
            rows(line)
        return rows.rows

    rows = wait_for(f"window rows in the log of {DRIVER_POD}", window_rows, timeout=600)
    assert all("sensor_" in row for row in rows)


def test_a_job_from_the_cronjob_writes_a_report_into_the_volume(api, cluster, tmp_path):
    batch = api.BatchV1Api()
    core = api.CoreV1Api()
    cronjob = batch.read_namespaced_cron_job(f"{RELEASE}-report", NAMESPACE)
    name = f"{RELEASE}-report-e2e-{uuid.uuid4().hex[:6]}"
    job = api.V1Job(
        metadata=api.V1ObjectMeta(name=name, annotations={"cronjob.kubernetes.io/instantiate": "manual"},
                                  labels=cronjob.spec.job_template.metadata.labels),
        spec=cronjob.spec.job_template.spec,
    )
    batch.create_namespaced_job(NAMESPACE, job)

    def finished():
        status = batch.read_namespaced_job_status(name, NAMESPACE).status
        if (status.failed or 0) > (cronjob.spec.job_template.spec.backoff_limit or 0):
            pytest.fail(f"report job {name} failed", pytrace=False)
        return (status.succeeded or 0) >= 1

    wait_for(f"the report job {name} to succeed", finished, timeout=900)

    # A pod that lists the newest report folder of the reports claim.
    lister = f"{RELEASE}-list-reports-{uuid.uuid4().hex[:6]}"
    image = cronjob.spec.job_template.spec.template.spec.containers[0].image
    core.create_namespaced_pod(NAMESPACE, api.V1Pod(
        metadata=api.V1ObjectMeta(name=lister),
        spec=api.V1PodSpec(
            restart_policy="Never",
            security_context=api.V1PodSecurityContext(run_as_non_root=True, run_as_user=185, fs_group=185,
                                                      seccomp_profile=api.V1SeccompProfile(type="RuntimeDefault")),
            containers=[api.V1Container(
                name="ls", image=image, image_pull_policy="IfNotPresent",
                command=["sh", "-c", "d=$(ls -1 /reports | grep -E '^[0-9]{8}T[0-9]{6}Z$' | tail -n 1); "
                                     "echo \"folder $d\"; ls -1 \"/reports/$d\""],
                security_context=api.V1SecurityContext(allow_privilege_escalation=False,
                                                       capabilities=api.V1Capabilities(drop=["ALL"])),
                volume_mounts=[api.V1VolumeMount(name="reports", mount_path="/reports", read_only=True)])],
            volumes=[api.V1Volume(name="reports", persistent_volume_claim=api.V1PersistentVolumeClaimVolumeSource(
                claim_name=f"{RELEASE}-reports", read_only=True))],
        )))
    wait_for("the listing pod to finish",
             lambda: core.read_namespaced_pod_status(lister, NAMESPACE).status.phase in ("Succeeded", "Failed"),
             timeout=300, every=5)
    listing = core.read_namespaced_pod_log(lister, NAMESPACE)
    core.delete_namespaced_pod(lister, NAMESPACE)
    assert re.search(r"folder \d{8}T\d{6}Z", listing), listing
    assert "sensor_report.csv" in listing, listing

    # `make reports` copies the same folder out of the volume.
    done = subprocess.run(["k8s/fetch-report.sh", str(tmp_path / "reports")], cwd=ROOT, capture_output=True, text=True,
                          env=dict(cluster, K8S_NAMESPACE=NAMESPACE, K8S_RELEASE=RELEASE, K8S_IMAGE=image), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((tmp_path / "reports").glob("*/sensor_report.csv")), done.stdout
