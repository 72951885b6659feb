"""Monitoring in the chart: the metrics Services reach the pods that serve the metrics, the
ServiceMonitor reaches the Services' ports, the dashboard ships as the sidecar expects, and with
monitoring off none of it renders. (Each object is validated with the others in test_chart_render.)"""

from __future__ import annotations

import json

import pytest

from support.chart import by_kind, settings_configmap
from support.places import CHART

pytestmark = pytest.mark.chart

DASHBOARD = json.loads((CHART / "dashboards" / "sensorstream.json").read_text(encoding="utf-8"))


def _pod_labels(docs: list[dict]) -> dict[str, dict]:
    """Component -> the labels of its pods (the producer's template, the stream's driver)."""
    (deployment,) = by_kind(docs, "Deployment")
    (app,) = by_kind(docs, "SparkApplication")
    return {
        "producer": deployment["spec"]["template"]["metadata"]["labels"],
        "stream-driver": app["spec"]["driver"]["labels"],
    }


def _container_ports(docs: list[dict]) -> dict[str, set[int]]:
    (deployment,) = by_kind(docs, "Deployment")
    (app,) = by_kind(docs, "SparkApplication")
    return {
        "producer": {
            p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0].get("ports") or []
        },
        "stream-driver": {p["containerPort"] for p in app["spec"]["driver"].get("ports") or []},
    }


@pytest.mark.parametrize("values_set", ["default", "monitoring"])
def test_each_metrics_service_selects_the_pods_that_serve_its_ports(rendered, values_set):
    docs = rendered[values_set]
    settings = settings_configmap(docs)["data"]
    services = by_kind(docs, "Service")
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in services} == {"producer", "stream-driver"}
    pods, ports = _pod_labels(docs), _container_ports(docs)
    for service in services:
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        selector = service["spec"]["selector"]
        assert selector.items() <= pods[component].items(), f"{service['metadata']['name']} selects no {component} pod"
        targets = {p["targetPort"] for p in service["spec"]["ports"]}
        # spark-submit declares the driver's UI port itself (named spark-ui); declaring it again in the
        # SparkApplication makes the driver pod invalid (duplicate port name), as a real API server says
        declared = ports[component] | ({int(settings["SPARK_UI_PORT"])} if component == "stream-driver" else set())
        assert targets <= declared, f"{service['metadata']['name']}: no container port for {targets}"
        assert int(settings["METRICS_PORT"]) in targets
    (driver,) = [s for s in services if s["metadata"]["labels"]["app.kubernetes.io/component"] == "stream-driver"]
    assert int(settings["SPARK_UI_PORT"]) in {p["targetPort"] for p in driver["spec"]["ports"]}
    assert settings["METRICS_HOST"] == "0.0.0.0", "Prometheus scrapes the pod's address, not its loopback"


def test_the_service_monitor_scrapes_both_services(rendered):
    docs = rendered["monitoring"]
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    match, expressions = monitor["spec"]["selector"]["matchLabels"], monitor["spec"]["selector"]["matchExpressions"]
    (components,) = [e["values"] for e in expressions if e["key"] == "app.kubernetes.io/component"]
    selected = [
        s
        for s in by_kind(docs, "Service")
        if match.items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"] in components
    ]
    assert len(selected) == 2
    port_names = {p["name"] for s in selected for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == port_names
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics", "/metrics/prometheus/"}
    assert not by_kind(rendered["default"], "ServiceMonitor"), "off by default: it needs the operator's CRDs"


def test_the_dashboard_ships_for_grafanas_sidecar(rendered):
    (dashboard,) = [
        c for c in by_kind(rendered["default"], "ConfigMap") if c is not settings_configmap(rendered["default"])
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["sensorstream.json"]) == DASHBOARD
    assert DASHBOARD["uid"] and all(t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", []))


def _cells(grid: dict) -> set[tuple[int, int]]:
    """The cells of Grafana's grid (24 columns) a panel covers."""
    return {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}


def test_the_dashboards_panels_fit_its_grid_without_overlapping():
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD["panels"]:
        cells = _cells(panel["gridPos"])
        assert max(x for x, _ in cells) < 24, f"{panel['title']}: wider than Grafana's 24 columns"
        overlapped = {taken[c] for c in cells & taken.keys()}
        assert not overlapped, f"{panel['title']} overlaps {overlapped}"
        taken.update(dict.fromkeys(cells, panel["title"]))
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_the_dashboard_shows_the_detectors_alerts_by_kind():
    queries = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    assert [q for q in queries if "sensorstream_alerts_total" in q and q.startswith("sum by (kind) (rate(")]


def test_with_monitoring_off_nothing_of_it_renders(rendered):
    docs = rendered["no-metrics"]
    assert not by_kind(docs, "Service") and not by_kind(docs, "ServiceMonitor")
    assert [c["metadata"]["labels"]["app.kubernetes.io/component"] for c in by_kind(docs, "ConfigMap")] == ["settings"]
    assert _container_ports(docs) == {"producer": set(), "stream-driver": set()}
    assert settings_configmap(docs)["data"]["METRICS_PORT"] == ""
