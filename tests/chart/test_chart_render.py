"""The chart lints, renders for every values set, and every object is valid: Kubernetes objects
against the schemas of kind's Kubernetes version, custom resources against the operators' CRDs."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml

from support.chart import (
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VALUES_SETS,
    by_kind,
    pod_specs,
    render,
    run_helm,
    settings_configmap,
    template_args,
)
from support.places import CHART

pytestmark = pytest.mark.chart

#: Kinds the chart may create; a new kind needs a look at its validation here first.
BUILTIN_KINDS = {
    "ConfigMap",
    "Deployment",
    "CronJob",
    "PersistentVolumeClaim",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "Pod",
    "Service",
}
CUSTOM_KINDS = {
    ("kafka.strimzi.io/v1", "Kafka"),
    ("kafka.strimzi.io/v1", "KafkaNodePool"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # its rules themselves: promtool, test_chart_rules
}


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_helm_lint_strict(helm, values_set):
    args = ["lint", "--strict", str(CHART)]
    for path in VALUES_SETS[values_set]:
        args += ["--values", str(path)]
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_renders_only_known_kinds(rendered, values_set):
    kinds = {(d["apiVersion"], d["kind"]) for d in rendered[values_set]}
    unknown = {k for k in kinds if k[1] not in BUILTIN_KINDS and k not in CUSTOM_KINDS}
    assert not unknown, f"kinds without a validation rule here: {unknown}"
    assert ("sparkoperator.k8s.io/v1beta2", "SparkApplication") in kinds


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_builtin_objects_match_the_kubernetes_schemas(rendered, values_set):
    checked = 0
    for doc in rendered[values_set]:
        if doc["kind"] not in BUILTIN_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{doc['kind']}/{doc['metadata']['name']} ({values_set}): {exc.message} "
                f"at {'/'.join(str(p) for p in exc.path)}"
            )
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_custom_resources_match_the_operator_crds(rendered, crds, values_set):
    checked = 0
    for doc in rendered[values_set]:
        key = (doc["apiVersion"], doc["kind"])
        if key not in CUSTOM_KINDS:
            continue
        assert key in crds, f"{key} is not served by the pinned operators' CRDs (served: {sorted(crds)})" + (
            "; generate the Prometheus Operator's with `make crds`" if "coreos" in key[0] else ""
        )
        errors = sorted(jsonschema.Draft7Validator(crds[key]).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, "\n".join(
            f"{doc['kind']}/{doc['metadata']['name']} ({values_set}): {e.message} at {'/'.join(map(str, e.path))}"
            for e in errors
        )
        checked += 1
    assert checked >= 1


def test_crd_validation_catches_an_old_api_version(crds):
    """The CRDs really decide: Strimzi 1.2.0 no longer serves v1beta2."""
    assert ("kafka.strimzi.io/v1beta2", "KafkaTopic") not in crds
    assert ("kafka.strimzi.io/v1", "KafkaTopic") in crds


def test_crd_validation_catches_a_bad_field(rendered, crds):
    app = next(d for d in rendered["default"] if d["kind"] == "SparkApplication")
    broken = yaml.safe_load(yaml.safe_dump(app))
    broken["spec"]["type"] = "Pyhton"
    schema = crds[("sparkoperator.k8s.io/v1beta2", "SparkApplication")]
    assert any("Pyhton" in e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken))


def _security_checks(where: str, pod: dict, containers: list[dict]) -> list[str]:
    problems = []
    pod_ctx = pod.get("securityContext") or {}
    if pod_ctx.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod runAsNonRoot is not true")
    if (pod_ctx.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    for container in containers:
        ctx = container.get("securityContext") or {}
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}/{container.get('name')}: allowPrivilegeEscalation is not false")
        if (ctx.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{where}/{container.get('name')}: capabilities do not drop ALL")
    return problems


@pytest.mark.parametrize("values_set", VALUES_SETS)
def test_every_pod_is_non_root_without_capabilities(rendered, values_set):
    problems = []
    docs = rendered[values_set]
    for doc in docs:
        for where, pod in pod_specs(doc):
            problems += _security_checks(f"{where}/{doc['metadata']['name']}", pod, pod["containers"])
    for app in by_kind(docs, "SparkApplication"):
        for role in ("driver", "executor"):
            spec = app["spec"][role]
            problems += _security_checks(
                f"SparkApplication/{role}", {"securityContext": spec.get("podSecurityContext")}, [dict(spec, name=role)]
            )
    assert not problems, "\n".join(problems)


def test_existing_kafka_creates_no_cluster_and_reads_credentials_from_secrets(rendered):
    docs = rendered["existing-kafka"]
    assert not by_kind(docs, "Kafka") and not by_kind(docs, "KafkaNodePool")
    configmap = settings_configmap(docs)
    assert configmap["data"]["KAFKA_BOOTSTRAP_SERVERS"] == "my-cluster-kafka-bootstrap.kafka.svc:9094"
    assert "KAFKA_SASL_PASSWORD" not in configmap["data"]
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "sensorstream-kafka-credentials"
    (app,) = by_kind(docs, "SparkApplication")
    for role in ("driver", "executor"):
        names = {e["name"] for e in app["spec"][role]["env"]}
        assert {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"} <= names


def test_two_releases_in_one_namespace_name_their_kafka_node_pools_apart(helm):
    pools = {}
    for release in ("sensorstream", "other"):
        docs = render(helm, [], sets=[f"fullnameOverride={release}"])
        (pool,) = by_kind(docs, "KafkaNodePool")
        (kafka,) = by_kind(docs, "Kafka")
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        pools[release] = pool["metadata"]["name"]
    assert pools["sensorstream"] != pools["other"], pools


def test_kind_uses_ephemeral_kafka_storage_and_the_default_a_claim(rendered):
    (kind_pool,) = by_kind(rendered["kind"], "KafkaNodePool")
    assert kind_pool["spec"]["storage"]["type"] == "ephemeral"
    (default_pool,) = by_kind(rendered["default"], "KafkaNodePool")
    assert default_pool["spec"]["storage"]["volumes"][0]["type"] == "persistent-claim"
    (kafka,) = by_kind(rendered["default"], "Kafka")
    assert "topicOperator" in kafka["spec"]["entityOperator"]


def test_producer_liveness_reads_the_heartbeat_the_producer_writes(rendered):
    (deployment,) = by_kind(rendered["default"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    heartbeat = args[args.index("--heartbeat-file") + 1]
    assert container["command"] == ["sensorstream"] and args[:3] == ["produce", "--count", "0"]
    assert heartbeat in container["livenessProbe"]["exec"]["command"]
    assert heartbeat in container["startupProbe"]["exec"]["command"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(heartbeat.startswith(m + "/") for m in mounts), "the heartbeat file must be on a writable volume"


def driver_heartbeat(docs: list[dict]) -> tuple[str, dict]:
    """The heartbeat file the stream's driver is told to touch, and the driver's pod template."""
    (app,) = by_kind(docs, "SparkApplication")
    args = app["spec"]["arguments"]
    assert args[0] == "stream"
    return args[args.index("--heartbeat-file") + 1], app["spec"]["driver"]["template"]


def test_driver_liveness_reads_the_heartbeat_the_stream_writes(rendered):
    heartbeat, template = driver_heartbeat(rendered["default"])
    (container,) = template["spec"]["containers"]
    assert container["name"] == "spark-kubernetes-driver"
    assert heartbeat in container["livenessProbe"]["exec"]["command"]
    # Spark's first batch (JVM, executors, a backlog) must not count against the liveness probe; a
    # startup probe would keep the driver unready, out of its headless Service, away from executors
    assert "startupProbe" not in container and "readinessProbe" not in container
    assert container["livenessProbe"]["initialDelaySeconds"] >= 300
    # in the template, not in spec.volumes: those reach the pod only through the operator's webhook
    (mount,) = [m for m in container["volumeMounts"] if heartbeat.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume, "the heartbeat file must be on a volume uid 185 can write"


@pytest.mark.parametrize("behind, alive", [(None, True), (-10, True), (10, False), (3600, False)])
def test_the_driver_probe_fails_once_the_stream_stops_advancing(rendered, tmp_path, behind, alive):
    """The probe's command exactly as rendered, run against a heartbeat file just touched (None) or
    last touched `behind` seconds before or after the limit (stream.heartbeatMaxAgeSeconds) ran out:
    a stream that advances passes it; one whose query stopped advancing fails it, and is killed."""
    import os
    import subprocess
    import time

    heartbeat, template = driver_heartbeat(rendered["default"])
    command = template["spec"]["containers"][0]["livenessProbe"]["exec"]["command"]
    age = 0 if behind is None else float(command[-1]) + behind
    beat = tmp_path / "alive"
    beat.touch()
    os.utime(beat, (time.time() - age, time.time() - age))
    here = [str(beat) if part == heartbeat else part for part in command]
    assert here.count(str(beat)) == 1
    assert subprocess.run(here, timeout=30).returncode == (0 if alive else 1)


def test_report_cronjob_never_overlaps(rendered):
    (cronjob,) = by_kind(rendered["default"], "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "SPARK_MASTER", "value": "local[2]"} in container["env"]


def test_driver_role_grants_what_spark_on_kubernetes_needs(rendered):
    (role,) = by_kind(rendered["default"], "Role")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert {"pods", "services", "configmaps", "persistentvolumeclaims"} <= resources
    assert {"create", "get", "list", "watch", "delete"} <= verbs
    (app,) = by_kind(rendered["default"], "SparkApplication")
    (account,) = by_kind(rendered["default"], "ServiceAccount")
    (binding,) = by_kind(rendered["default"], "RoleBinding")
    assert app["spec"]["driver"]["serviceAccount"] == account["metadata"]["name"]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def render_notes(helm, tmp_path, *sets: str) -> str:
    """NOTES.txt is the named template sensorstream.notes; render it through a scratch copy."""
    import shutil

    chart = tmp_path / "chart"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        (chart / "templates" / "zz-notes.yaml").write_text(
            'apiVersion: v1\nkind: Notes\ntext: {{ include "sensorstream.notes" . | toJson }}\n'
        )
    done = run_helm(helm, *template_args([], sets, chart), "--show-only", "templates/zz-notes.yaml")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["text"]


def test_notes_tell_how_to_follow_the_stream_and_fetch_a_report(helm, tmp_path):
    notes = render_notes(helm, tmp_path)
    assert f"kubectl -n {NAMESPACE} logs -f {RELEASE}-stream-driver" in notes
    assert f"create job --from=cronjob/{RELEASE}-report" in notes
    assert "kubectl -n sensorstream cp" in notes and "make reports" in notes
    assert (CHART / "templates" / "NOTES.txt").read_text().strip() == '{{ include "sensorstream.notes" . }}'


def test_notes_say_where_the_detectors_alerts_are_when_it_is_on(helm, tmp_path):
    where = 'lines starting with "alert:"'
    off = render_notes(helm, tmp_path)
    assert "alerts_topic (the detector's alerts)" in off and where not in off
    on = render_notes(helm, tmp_path, "stream.detect.enabled=true", "topics.alerts.name=sensor_alerts")
    assert where in on and "every alert on the topic sensor_alerts" in on
