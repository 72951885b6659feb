"""Shared by the apiserver tests: rendering the chart, strict dry runs, waiting for Pods."""

from __future__ import annotations

import yaml

from support.chart import CHART, RELEASE, VALUES_SETS

from .controlplane import ControlPlane, wait_for

#: Namespaces of the Spark Operator tests: the operator's webhook serves the first only.
SPARK_WEBHOOK_NS = "spark-webhook"
SPARK_PLAIN_NS = "spark-plain"
SPARK_UNTEMPLATED_NS = "spark-plain-untemplated"

VALUES = list(VALUES_SETS)


def values_args(name: str, *sets: str) -> list[str]:
    args = []
    for path in VALUES_SETS[name]:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


def render(plane: ControlPlane, namespace: str, values: str, *sets: str) -> list[dict]:
    done = plane.helm("template", RELEASE, str(CHART), "--namespace", namespace, *values_args(values, *sets))
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def manifest(docs: list[dict]) -> str:
    """Objects as a YAML stream. (Given a v1 List instead, kubectl validates on the client.)"""
    return yaml.safe_dump_all(docs, sort_keys=False)


def dry_run(plane: ControlPlane, namespace: str, docs: list[dict]):
    """A strict server-side dry run: the server refuses unknown or duplicate fields, and its
    warnings (PodSecurity's about workloads, deprecations) show on stderr."""
    return plane.kubectl(
        "-n",
        namespace,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=sensorstream-test",
        "-f",
        "-",
        input=manifest(docs),
        check=False,
    )


def events(plane: ControlPlane, namespace: str) -> str:
    return plane.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout


def pods(plane: ControlPlane, namespace: str, selector: str) -> list[dict]:
    return plane.get("pods", "-n", namespace, "-l", selector)["items"]


def wait_for_pods(plane: ControlPlane, namespace: str, selector: str, what: str, timeout: float = 120) -> list[dict]:
    """The Pods a controller created: there only if admission let them in."""
    try:
        return wait_for(what, lambda: pods(plane, namespace, selector), timeout, plane.processes)
    except TimeoutError as error:
        raise AssertionError(f"{error}; events of {namespace}:\n{events(plane, namespace)}") from None


def assert_restricted_pod(pod: dict) -> None:
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 185
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def component(name: str) -> str:
    return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={name}"
