"""The chart against a real API server: strict decoding, the CRDs' schemas and CEL rules, PodSecurity
(`restricted`), RBAC, helm's install/upgrade/uninstall, and the Pods the controllers create from the
chart's Deployment and CronJob. Nothing runs: Pods are created and admitted, then stay Pending."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from support.chart import CHART, RELEASE

from .controlplane import wait_for
from .support import VALUES, assert_restricted_pod, component, dry_run, render, values_args, wait_for_pods

pytestmark = pytest.mark.apiserver


# --- the harness can fail ----------------------------------------------------------------------
def test_an_unknown_field_is_rejected(control_plane):
    ns = control_plane.create_namespace("negative-field")
    docs = render(control_plane, ns, "default")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    done = dry_run(control_plane, ns, [deployment])
    assert done.returncode != 0
    assert done.stderr.startswith("Error from server")
    assert "imagePullPolicyy: field not declared in schema" in done.stderr


def test_a_cel_rule_violation_is_rejected(control_plane):
    """Strimzi's Kafka CRD: a JMX Prometheus exporter needs valueFrom (an x-kubernetes-validations rule)."""
    ns = control_plane.create_namespace("negative-cel")
    docs = render(control_plane, ns, "default")
    kafka = next(d for d in docs if d["kind"] == "Kafka")
    kafka["spec"]["kafka"]["metricsConfig"] = {"type": "jmxPrometheusExporter"}
    done = dry_run(control_plane, ns, [kafka])
    assert done.returncode != 0
    assert (
        'The Kafka "sensorstream" is invalid: spec.kafka.metricsConfig: Invalid value: '
        "valueFrom property is required" in done.stderr
    )


def test_a_container_without_the_security_context_is_rejected(control_plane):
    """The report-fetching command NOTES.txt printed before: no container security context."""
    ns = control_plane.create_namespace("negative-pod")
    overrides = {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 185},
            "containers": [{"name": "fetch", "image": "sensorstream:0.1.0", "command": ["sleep", "600"]}],
        }
    }
    done = control_plane.kubectl(
        "-n",
        ns,
        "run",
        "fetch",
        "--image=sensorstream:0.1.0",
        "--restart=Never",
        f"--overrides={json.dumps(overrides)}",
        "--dry-run=server",
        check=False,
    )
    assert done.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in done.stderr
    for problem in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "seccompProfile"):
        assert problem in done.stderr


# --- the chart ---------------------------------------------------------------------------------
@pytest.mark.parametrize("values", VALUES)
def test_strict_server_side_dry_run(control_plane, values):
    """Every rendered object, as the server decodes it strictly: no error and no warning (a
    misspelt field or a pod template `restricted` would refuse shows up as one or the other)."""
    ns = control_plane.create_namespace(f"dry-run-{values}")
    docs = render(control_plane, ns, values)
    done = dry_run(control_plane, ns, docs)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert len(done.stdout.splitlines()) == len(docs)


@pytest.mark.parametrize("values", VALUES)
def test_install_upgrade_uninstall_reinstall(control_plane, values):
    """helm install into a namespace enforcing `restricted`; upgrade; uninstall keeps the claims; a
    new install adopts them. A claim's size cannot change on upgrade (values.yaml says so)."""
    plane = control_plane
    ns = plane.create_namespace(f"release-{values}")
    release = ["--namespace", ns, *values_args(values)]
    plane.helm("install", RELEASE, str(CHART), *release)
    claims = {c["metadata"]["name"]: c["metadata"]["uid"] for c in plane.get("pvc", "-n", ns)["items"]}
    assert set(claims) == {f"{RELEASE}-checkpoints", f"{RELEASE}-reports"}

    plane.helm("upgrade", RELEASE, str(CHART), *release, "--set", "producer.rate=3")
    assert plane.get("configmap", "-n", ns, f"{RELEASE}-settings")["data"]["PRODUCER_RATE"] == "3"

    resized = plane.helm("upgrade", RELEASE, str(CHART), *release, "--set", "stream.checkpoint.size=2Gi", check=False)
    assert resized.returncode != 0
    assert "spec is immutable" in resized.stderr or "Forbidden" in resized.stderr, resized.stderr

    plane.helm("uninstall", RELEASE, "--namespace", ns, "--wait")
    kept = {c["metadata"]["name"]: c["metadata"]["uid"] for c in plane.get("pvc", "-n", ns)["items"]}
    assert kept == claims
    assert plane.get("deployments", "-n", ns)["items"] == []

    plane.helm("install", RELEASE, str(CHART), *release)
    adopted = {c["metadata"]["name"]: c for c in plane.get("pvc", "-n", ns)["items"]}
    assert {name: c["metadata"]["uid"] for name, c in adopted.items()} == claims
    for claim in adopted.values():
        assert claim["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE


@pytest.mark.parametrize("values", VALUES)
def test_controllers_create_admitted_pods(control_plane, values):
    """The Deployment and ReplicaSet controllers make the producer Pod, the Job controller the report
    Pod of `kubectl create job --from=cronjob/...`, and `restricted` admits both."""
    plane = control_plane
    ns = plane.create_namespace(f"pods-{values}")
    plane.helm("install", RELEASE, str(CHART), "--namespace", ns, *values_args(values))
    (producer,) = wait_for_pods(plane, ns, component("producer"), "the producer Pod")
    assert_restricted_pod(producer)
    assert producer["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"

    plane.kubectl("-n", ns, "create", "job", f"--from=cronjob/{RELEASE}-report", f"{RELEASE}-report-manual")
    (report,) = wait_for_pods(plane, ns, f"job-name={RELEASE}-report-manual", "the manual report Job's Pod")
    assert_restricted_pod(report)
    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in report["spec"]["volumes"] if "persistentVolumeClaim" in v
    }
    assert f"{RELEASE}-reports" in claims


def test_report_cronjob_schedules_a_job_and_forbids_a_second(control_plane):
    """From the schedule (every minute here): the CronJob controller creates a Job, whose Pod is
    admitted; the Pod never runs, so the Job stays active and concurrencyPolicy Forbid must stop the
    next scheduled run."""
    plane = control_plane
    ns = plane.create_namespace("cronjob")
    plane.helm("install", RELEASE, str(CHART), "--namespace", ns, "--set", "report.schedule=* * * * *")

    def scheduled_jobs():
        return [
            j
            for j in plane.get("jobs", "-n", ns)["items"]
            if any(o["kind"] == "CronJob" for o in j["metadata"].get("ownerReferences", []))
        ]

    (job,) = wait_for("a Job from the schedule", scheduled_jobs, 150, plane.processes)
    (pod,) = wait_for_pods(plane, ns, f"job-name={job['metadata']['name']}", "the scheduled Job's Pod")
    assert_restricted_pod(pod)

    def refused():
        listed = plane.get("events", "-n", ns, "--field-selector", "reason=JobAlreadyActive")["items"]
        return listed

    wait_for("the CronJob controller to skip a run (JobAlreadyActive)", refused, 150, plane.processes)
    assert [j["metadata"]["name"] for j in scheduled_jobs()] == [job["metadata"]["name"]]
    assert plane.get("cronjob", "-n", ns, f"{RELEASE}-report")["spec"]["concurrencyPolicy"] == "Forbid"


def notes_fetch_command(notes: str) -> list[str]:
    """The `kubectl ... run ...-fetch` command of NOTES.txt (continued lines joined), as argv."""
    match = re.search(r"^\s*(kubectl -n \S+ run \S+-fetch .*?\\\n.*?)$", notes, re.MULTILINE)
    assert match, notes
    return shlex.split(match.group(1).replace("\\\n", " "))


def test_notes_report_fetch_command_is_admitted(control_plane):
    """The command NOTES.txt prints to fetch a report, run with --dry-run=server in a restricted namespace."""
    plane = control_plane
    ns = plane.create_namespace("notes")
    plane.helm("install", RELEASE, str(CHART), "--namespace", ns)
    notes = plane.helm("get", "notes", RELEASE, "--namespace", ns).stdout
    argv = notes_fetch_command(notes)
    assert argv[:3] == ["kubectl", "-n", ns]
    done = plane.kubectl(*argv[1:], "--dry-run=server", "-o", "json", check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    pod = json.loads(done.stdout)
    assert_restricted_pod(pod)
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == f"{RELEASE}-reports"
