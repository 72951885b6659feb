"""What the real Spark Operator (v2.5.2, controller and webhook as local processes, spark-submit
from the project's pyspark) makes of the chart's SparkApplication: the driver Pod, admitted in a
namespace enforcing `restricted`, with the operator's webhook and without it."""

from __future__ import annotations

import json

import pytest

from support.chart import CHART, RELEASE

from .controlplane import wait_for
from .support import (
    SPARK_PLAIN_NS,
    SPARK_UNTEMPLATED_NS,
    SPARK_WEBHOOK_NS,
    assert_restricted_pod,
    events,
    manifest,
    render,
)

pytestmark = pytest.mark.apiserver

DRIVER = f"{RELEASE}-stream-driver"
APP = f"{RELEASE}-stream"


def app_state(plane, ns: str) -> dict:
    app = plane.get("sparkapplication", "-n", ns, APP)
    return app.get("status", {}).get("applicationState", {})


def wait_for_driver(operator, ns: str) -> dict:
    plane = operator.plane

    def driver():
        found = plane.kubectl("-n", ns, "get", "pod", DRIVER, "-o", "json", check=False)
        if found.returncode == 0:
            return json.loads(found.stdout)
        if app_state(plane, ns).get("state") in ("SUBMISSION_FAILED", "FAILED"):
            raise AssertionError(f"the SparkApplication failed: {app_state(plane, ns)}")
        return None

    try:
        # spark-submit starts a JVM on a shared machine: give it time.
        return wait_for("the Spark driver Pod", driver, 300, operator.processes + operator.plane.processes, 1)
    except TimeoutError as error:
        raise AssertionError(
            f"{error}; application state: {app_state(plane, ns)}; events:\n{events(plane, ns)}\n"
            f"controller log:\n{operator.processes[-1].tail()}"
        ) from None


def wait_for_submitted(operator, ns: str) -> str:
    """The operator records SUBMITTED once spark-submit is back, which is after the Pod exists."""
    return wait_for(
        "the SparkApplication SUBMITTED",
        lambda: app_state(operator.plane, ns).get("state") == "SUBMITTED",
        120,
        operator.processes + operator.plane.processes,
        1,
    )


def driver_container(pod: dict) -> dict:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "spark-kubernetes-driver")


def assert_driver_basics(pod: dict) -> None:
    """What Spark itself (from the operator's spark-submit) and the pod template give the driver."""
    assert_restricted_pod(pod)
    assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-spark"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "stream-driver"
    container = driver_container(pod)
    assert container["image"] == "sensorstream:0.1.0"
    resources = container["resources"]
    assert resources["limits"]["cpu"] == "1" and resources["requests"]["cpu"] == "1"
    # spark.driver.memory 1g plus Spark's overhead for a Python application
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert int(resources["requests"]["memory"].removesuffix("Mi")) > 1024
    assert_driver_probes(pod)


def assert_driver_probes(pod: dict) -> None:
    """The pod template's probes reach the driver, on the heartbeat file the stream is told to touch,
    which lies on the template's emptyDir (no kubelet here: the Pod is admitted, never run)."""
    container = driver_container(pod)
    args = container["args"]
    heartbeat = args[args.index("--heartbeat-file") + 1]
    liveness = container["livenessProbe"]
    assert heartbeat in liveness["exec"]["command"] and "startupProbe" not in container
    assert liveness["exec"]["command"][-1] == "180" and liveness["periodSeconds"] == 15
    (mount,) = [m for m in container["volumeMounts"] if heartbeat.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"


def test_driver_pod_with_the_webhook(spark_operator):
    """The operator's usual set-up: its webhook adds the claim, the ConfigMap and the security contexts."""
    plane, ns = spark_operator.plane, SPARK_WEBHOOK_NS
    plane.helm("install", RELEASE, str(CHART), "--namespace", ns)
    pod = wait_for_driver(spark_operator, ns)
    assert_driver_basics(pod)
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"checkpoints": f"{RELEASE}-checkpoints"}
    container = driver_container(pod)
    assert {"name": "checkpoints", "mountPath": "/checkpoints"}.items() <= next(
        m for m in container["volumeMounts"] if m["name"] == "checkpoints"
    ).items()
    assert {"configMapRef": {"name": f"{RELEASE}-settings"}} in container["envFrom"]
    assert wait_for_submitted(spark_operator, ns)


def test_driver_pod_without_the_webhook(spark_operator):
    """No webhook for this namespace: the pod template alone carries the security contexts, and
    `restricted` admits the driver. (The claim and the ConfigMap are the webhook's to add.)"""
    plane, ns = spark_operator.plane, SPARK_PLAIN_NS
    plane.helm("install", RELEASE, str(CHART), "--namespace", ns)
    pod = wait_for_driver(spark_operator, ns)
    assert_driver_basics(pod)
    assert wait_for_submitted(spark_operator, ns)


def test_without_webhook_nor_pod_template_the_submission_is_refused(spark_operator):
    """The negative control of the test above: the same SparkApplication minus its pod templates,
    as the chart had it before, ends in SUBMISSION_FAILED because PodSecurity refuses the driver."""
    plane, ns = spark_operator.plane, SPARK_UNTEMPLATED_NS
    docs = render(plane, ns, "default", "producer.enabled=false", "report.enabled=false", "tests.enabled=false")
    for doc in docs:
        if doc["kind"] == "SparkApplication":
            for role in ("driver", "executor"):
                del doc["spec"][role]["template"]
            doc["spec"]["restartPolicy"] = {"type": "Never"}
    plane.kubectl("-n", ns, "apply", "-f", "-", input=manifest(docs))

    def failed():
        # SUBMISSION_FAILED, then at once FAILED (restartPolicy Never): the error message stays.
        state = app_state(plane, ns)
        return state if state.get("state") in ("SUBMISSION_FAILED", "FAILED") else None

    try:
        state = wait_for("the submission to fail", failed, 300, spark_operator.processes + plane.processes, 1)
    except TimeoutError as error:
        raise AssertionError(
            f"{error}; application state: {app_state(plane, ns)}; controller log:\n"
            f"{spark_operator.processes[-1].tail()}"
        ) from None
    message = state.get("errorMessage", "")
    assert message.startswith("failed to submit spark application"), state
    assert 'violates PodSecurity "restricted:latest"' in message, message[-3000:]
    assert plane.kubectl("-n", ns, "get", "pod", DRIVER, check=False).returncode != 0
