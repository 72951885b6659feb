"""The chart tests' support: helm, rendering, the operators' CRDs, the rehearsal module (k8s/rehearse.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .places import CHART, K8S, ROOT

#: Values sets the chart must render validly: name -> values files (none = the chart's defaults).
VALUES_SETS = {
    "default": [],
    "kind": [K8S / "values-kind.yaml"],
    "minikube": [K8S / "values-minikube.yaml"],
    "existing-kafka": [K8S / "values-existing-kafka.yaml"],
}


def load_rehearse():
    """k8s/rehearse.py as a module (k8s/ is not a package)."""
    spec = importlib.util.spec_from_file_location("sensorstream_rehearse", K8S / "rehearse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


REHEARSE = load_rehearse()
#: The release and namespace the chart is rendered with, the rehearsal's.
RELEASE, NAMESPACE = REHEARSE.RELEASE, REHEARSE.NAMESPACE
#: The Kubernetes version of kind's node image; rendered objects are validated against its schemas.
KUBE_VERSION = REHEARSE.KUBE_VERSION


def helm_path() -> str | None:
    """$HELM, else the one `make helm` builds, else PATH."""
    return REHEARSE.find_tool("helm")


def run_helm(helm: str, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, cwd=ROOT)


def template_args(values_files: list[Path], sets: list[str] = (), chart: Path = CHART,
                  set_json: list[str] = ()) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in values_files:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    for item in set_json:
        args += ["--set-json", item]
    return args


def render(helm: str, values_files: list[Path], sets: list[str] = (), chart: Path = CHART,
           set_json: list[str] = ()) -> list[dict]:
    done = run_helm(helm, *template_args(values_files, sets, chart, set_json))
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def crds_dir() -> Path | None:
    """$SENSORSTREAM_CRDS_DIR, else ../shared/crds next to the checkout."""
    override = os.environ.get("SENSORSTREAM_CRDS_DIR")
    for candidate in ([Path(override)] if override else []) + [ROOT.parent / "shared" / "crds"]:
        if candidate.is_dir():
            return candidate
    return None


def crd_schemas(folder: Path) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of every CRD in the folder."""
    schemas = {}
    for path in sorted(folder.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served"):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def pod_specs(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of the workloads in a rendered object."""
    kind = doc["kind"]
    if kind == "Deployment":
        return [("Deployment", doc["spec"]["template"]["spec"])]
    if kind == "CronJob":
        return [("CronJob", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "Pod":
        return [("Pod", doc["spec"])]
    return []


def workload_env(docs: list[dict]) -> dict[str, set[str]]:
    """Env var -> the values the rendered workloads give it (ConfigMaps they load, then their own env
    entries with a value; Secret references are left out)."""
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind(docs, "ConfigMap")}
    containers = [c for d in docs for _, pod in pod_specs(d) for c in pod["containers"]]
    containers += [app["spec"][role] for app in by_kind(docs, "SparkApplication") for role in ("driver", "executor")]
    env: dict[str, set[str]] = {}
    for container in containers:
        mine = {}
        for source in container.get("envFrom") or []:
            mine.update(configmaps.get((source.get("configMapRef") or {}).get("name"), {}))
        mine.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
        for name, value in mine.items():
            env.setdefault(name, set()).add(value)
    return env


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]
