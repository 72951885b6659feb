"""What a user checks of the installed chart, through kubectl and helm only: shared by the kind
end-to-end test (tests/chart/test_kind_e2e.py, needs Docker) and the node test (tests/node/, a real
node built on this machine). Each check takes a `Kube`: anything with `kubectl(*args)` and
`helm(*args)` returning a CompletedProcess, pointed at one cluster.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .chart import REHEARSE

#: The report's CSV columns, in the README's order ("sensorstream report").
REPORT_COLUMNS = [
    "sensor_id",
    "total_readings",
    *(f"{stat}_{m}" for m in ("temperature", "humidity", "pressure") for stat in ("avg", "min", "max")),
    "stddev_temperature",
    "stddev_humidity",
    "stddev_pressure",
    "first_seen",
    "last_seen",
    "missing_seq",
    "invalid_records",
    "alerts_spike",
    "alerts_stuck",
    "alerts_silent",
    "alerts_back",
]
REPORT_FOLDER = re.compile(r"^\d{8}T\d{6}Z$")


class Kube(Protocol):
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess: ...

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess: ...


class CheckFailed(AssertionError):
    pass


def wait_for(what: str, check: Callable, timeout: float, every: float = 5, details: Callable[[], str] | None = None):
    """Poll check() until truthy; fail naming `what` (and `details()`, e.g. events) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(
                f"timed out after {timeout:g} s waiting for {what}" + (f"\n{details()}" if details else "")
            )
        time.sleep(every)


def get(kube: Kube, *args: str) -> dict | None:
    done = kube.kubectl("get", "-o", "json", *args, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def events(kube: Kube, namespace: str) -> str:
    return kube.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-6000:]


# --- the stream ----------------------------------------------------------------------------------
def spark_state(kube: Kube, namespace: str, app: str) -> str | None:
    found = get(kube, "-n", namespace, "sparkapplication", app)
    return (((found or {}).get("status") or {}).get("applicationState") or {}).get("state")


def wait_spark_running(kube: Kube, namespace: str, app: str, timeout: float = 600) -> None:
    def running():
        state = spark_state(kube, namespace, app)
        if state in ("FAILED", "SUBMISSION_FAILED"):
            found = get(kube, "-n", namespace, "sparkapplication", app)
            raise CheckFailed(f"SparkApplication {app} {state}: {found['status'].get('applicationState')}")
        return state == "RUNNING"

    wait_for(f"SparkApplication {app} RUNNING", running, timeout, details=lambda: events(kube, namespace))


def pods(kube: Kube, namespace: str, selector: str) -> list[dict]:
    return (get(kube, "-n", namespace, "pods", "-l", selector) or {}).get("items", [])


def running_pods(kube: Kube, namespace: str, selector: str) -> list[dict]:
    return [
        p
        for p in pods(kube, namespace, selector)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def window_rows(kube: Kube, namespace: str, pod: str) -> list[str]:
    """The window rows the console sink printed so far in a driver's log."""
    done = kube.kubectl("-n", namespace, "logs", pod, check=False)
    if done.returncode != 0:
        return []
    rows = REHEARSE.WindowRows()  # the rehearsal's reading of the same log
    for line in done.stdout.splitlines():
        rows(line)
    return rows.rows


def wait_window_rows(kube: Kube, namespace: str, pod: str, sensors: int, timeout: float = 600) -> list[str]:
    """Until the driver's log has window rows naming each of the `sensors` sensors."""
    wanted = {f"sensor_{n}" for n in range(1, sensors + 1)}

    def complete():
        rows = window_rows(kube, namespace, pod)
        named = {m for row in rows for m in re.findall(r"sensor_\d+", row)}
        return rows if wanted <= named else None

    return wait_for(
        f"window rows of all {sensors} sensors in the log of {pod}",
        complete,
        timeout,
        details=lambda: kube.kubectl("-n", namespace, "logs", pod, "--tail=40", check=False).stdout,
    )


# --- the report ----------------------------------------------------------------------------------
def run_report_job(kube: Kube, namespace: str, release: str, timeout: float = 900) -> tuple[str, str]:
    """A Job from the report CronJob, as NOTES.txt says (`kubectl create job --from=cronjob/...`),
    waited for; its name and its log."""
    name = f"{release}-report-{uuid.uuid4().hex[:6]}"
    kube.kubectl("-n", namespace, "create", "job", f"--from=cronjob/{release}-report", name)

    def finished():
        job = get(kube, "-n", namespace, "job", name) or {}
        status = job.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition["type"] == "Failed" and condition["status"] == "True":
                log = kube.kubectl("-n", namespace, "logs", f"job/{name}", "--tail=40", check=False).stdout
                raise CheckFailed(f"report job {name} failed: {condition.get('message')}\n{log}")
        return status.get("succeeded", 0) >= 1

    wait_for(f"report job {name} to complete", finished, timeout, details=lambda: events(kube, namespace))
    return name, kube.kubectl("-n", namespace, "logs", f"job/{name}", check=False).stdout


def notes_fetch_commands(kube: Kube, namespace: str, release: str) -> str:
    """The shell lines NOTES.txt gives for copying the latest report out of the volume by hand."""
    notes = kube.helm("get", "notes", release, "--namespace", namespace).stdout
    lines = notes.splitlines()
    start = next(i for i, line in enumerate(lines) if "or by hand:" in line) + 1
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line.strip())
    return "\n".join(block).replace("\\\n", " ")


def fetch_report_as_notes_say(kube: Kube, namespace: str, release: str, workdir: Path, env: dict[str, str]) -> Path:
    """Run NOTES.txt's fetch commands in `workdir` (kubectl on env's PATH, env's KUBECONFIG): the
    report folder they copy to ./data/k8s-reports/<stamp>."""
    script = "set -euo pipefail\n" + notes_fetch_commands(kube, namespace, release) + "\n"
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        kube.kubectl("-n", namespace, "delete", "pod", f"{release}-fetch", "--ignore-not-found", check=False)
        raise CheckFailed(
            f"NOTES.txt's fetch commands failed ({done.returncode}):\n{script}\n{done.stdout}\n{done.stderr}"
        )
    folders = [p for p in (workdir / "data" / "k8s-reports").iterdir() if REPORT_FOLDER.match(p.name)]
    assert len(folders) == 1, f"expected one report folder, got {folders}"
    return folders[0]


def check_report_folder(folder: Path, formats: list[str], sensors: int) -> list[dict]:
    """Every format's file is there; the CSV has the README's columns and one row per sensor."""
    names = {p.name for p in folder.iterdir()}
    expected = {
        "csv": "sensor_report.csv",
        "parquet": "sensor_report.parquet",
        "json": "sensor_report.json",
        "html": "sensor_report.html",
    }
    missing = [expected[f] for f in formats if expected[f] not in names]
    assert not missing, f"{folder} lacks {missing}; it has {sorted(names)}"
    with open(folder / "sensor_report.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames == REPORT_COLUMNS, reader.fieldnames
    assert sorted(r["sensor_id"] for r in rows) == sorted(f"sensor_{n}" for n in range(1, sensors + 1)), rows
    assert all(int(r["total_readings"]) > 0 for r in rows)
    return rows


def kubectl_env(kubeconfig: Path | str, kubectl_dir: Path | str | None = None) -> dict[str, str]:
    """An environment for the NOTES commands: this cluster's kubeconfig, kubectl on PATH."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env["KUBECONFIG"] = str(kubeconfig)
    if kubectl_dir:
        env["PATH"] = f"{kubectl_dir}{os.pathsep}{env.get('PATH', '')}"
    return env
