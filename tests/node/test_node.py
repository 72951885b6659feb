"""The chart on a real Kubernetes node built on this machine (`make test-node`), used as its users
use it: `helm install`, Pods running the project's image, `kubectl logs` for the windows, a report
Job from the CronJob copied out as NOTES.txt says, `helm test`, the faults any cluster brings (a
driver Pod deleted, a producer Pod deleted), `helm uninstall` and a new install adopting the claims.
The last test stops the node and checks that the host is as it was.

The tests run in file order and share one release; each prints its figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition

from support.broker import read_all
from support.chart import RELEASE
from support.deployment import (
    check_report_folder,
    fetch_report_as_notes_say,
    get,
    kubectl_env,
    pods,
    ready,
    run_report_job,
    running_pods,
    spark_state,
    wait_for,
    wait_spark_running,
    wait_window_rows,
    window_rows,
)
from support.readings import assert_stats_equal, decode, reference_reason, reference_windows

from .conftest import NAMESPACE, install_args

pytestmark = [pytest.mark.node, pytest.mark.slow]

APP = f"{RELEASE}-stream"
DRIVER = f"{APP}-driver"
SENSORS = 10
WINDOW = timedelta(minutes=1)
WATERMARK = timedelta(minutes=2)
DONE = re.compile(r"done: sent (\d+), acked (\d+), failed (\d+)")
#: When `helm install` returned (time.monotonic()): the figures count from it.
INSTALLED: list[float] = []


def component(name: str) -> str:
    return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={name}"


@pytest.fixture(scope="module")
def release(node, kafka, spark_operator, figures):
    """The chart, installed as a user installs it (no --wait: the claims bind when a Pod uses them)."""
    started = time.monotonic()
    node.plane.helm(*install_args(kafka))
    INSTALLED[:] = [time.monotonic()]
    figures.add(f"helm install in {INSTALLED[0] - started:.1f} s")
    return node.plane


def since_install() -> float:
    return time.monotonic() - INSTALLED[0]


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def service_url(kube, service: str, port_name: str, path: str) -> str:
    found = get(kube, "-n", NAMESPACE, "service", service)
    port = next(p["port"] for p in found["spec"]["ports"] if p["name"] == port_name)
    return f"http://{found['spec']['clusterIP']}:{port}{path}"


def answers(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode(errors="replace")
    except OSError:
        return None


# --- the workloads run --------------------------------------------------------------------------
def test_producer_pod_is_ready_and_its_readings_are_acknowledged(release, kafka, figures):
    wait_for(
        "the producer Pod Ready",
        lambda: [p for p in running_pods(release, NAMESPACE, component("producer")) if ready(p)],
        300,
    )
    ready_after = since_install()
    first = wait_for("readings in the input topic", lambda: end_offsets(kafka, "input_topic"), 120, every=2)
    time.sleep(10)
    second = end_offsets(kafka, "input_topic")
    assert second > first, (first, second)
    # Its metrics, through its Service's ClusterIP (kube-proxy routes it to the Pod on the bridge).
    url = service_url(release, f"{RELEASE}-producer-metrics", "metrics", "/metrics")
    text = wait_for(f"the producer's metrics at {url}", lambda: answers(url), 60, every=2)
    acked = re.search(r"^sensorstream_producer_records_acked_total (\S+)$", text, re.M)
    assert acked and float(acked.group(1)) > 0, text[:2000]
    figures.add(
        f"producer Ready {ready_after:.0f} s after install; input topic {first} -> {second} records in "
        f"10 s; its metrics through the Service: acked {float(acked.group(1)):.0f}"
    )


def test_stream_runs_on_a_driver_and_an_executor_and_logs_windows(release, figures):
    wait_spark_running(release, NAMESPACE, APP, timeout=600)
    running_after = since_install()
    executors = wait_for(
        "an executor Pod Running", lambda: running_pods(release, NAMESPACE, component("stream-executor")), 300
    )
    assert running_pods(release, NAMESPACE, component("stream-driver"))
    rows = wait_window_rows(release, NAMESPACE, DRIVER, SENSORS, timeout=600)
    url = service_url(release, f"{RELEASE}-stream-metrics", "metrics", "/metrics")
    text = wait_for(f"the driver's metrics at {url}", lambda: answers(url), 120, every=2)
    assert "sensorstream_stream_" in text
    figures.add(
        f"SparkApplication RUNNING {running_after:.0f} s after install, {len(executors)} executor(s); "
        f"window rows of all {SENSORS} sensors {since_install():.0f} s after install "
        f"({len(rows)} rows so far); driver metrics through the Service"
    )


def test_helm_test_passes(release, figures):
    started = time.monotonic()
    done = release.helm("test", RELEASE, "--namespace", NAMESPACE, "--timeout", "5m", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    figures.add(f"helm test passed in {time.monotonic() - started:.0f} s")


def test_a_report_job_writes_every_format_and_notes_copy_it_out(release, node, tmp_path, figures):
    started = time.monotonic()
    job, _log = run_report_job(release, NAMESPACE, RELEASE, timeout=900)
    took = time.monotonic() - started
    formats = ["csv", "parquet", "json", "html"]
    folder = fetch_report_as_notes_say(
        release, NAMESPACE, RELEASE, tmp_path, kubectl_env(node.plane.kubeconfig, node.plane.bin)
    )
    rows = check_report_folder(folder, formats, SENSORS)
    figures.add(
        f"report Job {job} completed in {took:.0f} s; NOTES' commands copied {folder.name} "
        f"({', '.join(sorted(p.name for p in folder.iterdir()))}); "
        f"{sum(int(r['total_readings']) for r in rows)} readings over {len(rows)} sensors"
    )


# --- faults a cluster brings ----------------------------------------------------------------------
def truth(bootstrap: str) -> tuple[dict, datetime]:
    """Every window computed in plain Python from the valid readings of the input topic, and the
    newest event time among them."""
    readings = [decode(r.value) for r in read_all(bootstrap, "input_topic") if reference_reason(r.value) is None]
    newest = max(datetime.fromisoformat(r["timestamp"]) for r in readings)
    return reference_windows(readings, WINDOW), newest


def output_windows(bootstrap: str) -> dict[tuple, dict]:
    """The output topic's last value per key, as {(window_start, sensor_id): value}."""
    latest = {}
    for record in read_all(bootstrap, "output_topic"):
        sensor, start = record.key.decode().split("|")
        latest[(datetime.fromisoformat(start).astimezone(timezone.utc), sensor)] = json.loads(record.value)
    return latest


def closed(windows: dict, newest: datetime) -> list[tuple]:
    """Windows the watermark has closed for sure: their end plus the watermark (and one window of
    margin, for the batch that moves it) before the newest event time."""
    return sorted(key for key in windows if key[0] + WINDOW + WATERMARK + WINDOW < newest)


def mismatches(bootstrap: str) -> tuple[list[str], int]:
    expected, newest = truth(bootstrap)
    output = output_windows(bootstrap)
    keys = closed(expected, newest)
    wrong = []
    for key in keys:
        if key not in output:
            wrong.append(f"{key}: missing")
            continue
        try:
            assert_stats_equal(output[key], expected[key])
        except AssertionError as error:
            wrong.append(f"{key}: {error}")
    return wrong, len(keys)


def wait_new_driver(release, old_uid: str) -> None:
    """Until a driver Pod other than `old_uid` runs and the application is RUNNING again."""

    def running():
        pod = get(release, "-n", NAMESPACE, "pod", DRIVER)
        return (
            pod
            and pod["metadata"]["uid"] != old_uid
            and pod["status"].get("phase") == "Running"
            and spark_state(release, NAMESPACE, APP) == "RUNNING"
        )

    wait_for("a new driver Pod Running and the application RUNNING", running, 600)


def test_driver_pod_deleted_resumes_from_its_checkpoint(release, kafka, figures):
    """The operator restarts the application; the new driver resumes from the checkpoint on the
    claim; closed windows keep their values on the output topic and every window closed after the
    restart is exact (nothing counted twice, nothing lost)."""
    wait_for(
        "three closed windows on the output topic, exact",
        lambda: (lambda w, n: not w and n >= 3 * SENSORS)(*mismatches(kafka)),
        600,
        every=10,
    )
    before = output_windows(kafka)
    _, newest = truth(kafka)
    finals = {key: before[key] for key in closed(before, newest)}
    old = get(release, "-n", NAMESPACE, "pod", DRIVER)["metadata"]["uid"]
    started = time.monotonic()
    release.kubectl("-n", NAMESPACE, "delete", "pod", DRIVER, "--wait=true")

    wait_new_driver(release, old)
    restarted = time.monotonic() - started
    wait_for("window rows in the new driver's log", lambda: window_rows(release, NAMESPACE, DRIVER), 600)
    resumed = time.monotonic() - started
    app = get(release, "-n", NAMESPACE, "sparkapplication", APP)
    attempts = app["status"].get("executionAttempts")
    # Past the restart: windows open at the kill have closed since, and every closed window is exact.
    kill_time = datetime.now(timezone.utc)

    def exact_past_the_kill():
        wrong, count = mismatches(kafka)
        _, newest = truth(kafka)
        return not wrong and newest - (WINDOW + WATERMARK + 2 * WINDOW) > kill_time and count

    checked = wait_for(
        "the windows open at the kill closed and exact",
        exact_past_the_kill,
        900,
        every=15,
        details=lambda: "\n".join(mismatches(kafka)[0][:20]),
    )
    after = output_windows(kafka)
    changed = [key for key, value in finals.items() if after[key] != value]
    assert not changed, f"closed windows changed after the restart: {changed[:10]}"
    figures.add(
        f"driver Pod deleted: new driver Running after {restarted:.0f} s, window rows again after "
        f"{resumed:.0f} s (execution attempts {attempts}); {len(finals)} windows closed before the kill "
        f"unchanged; {checked} closed windows exact against the input topic"
    )


def test_a_stream_that_stops_advancing_is_restarted_by_its_liveness_probe(release, figures):
    """The driver's Python process stopped (SIGSTOP: the query waits on it and Spark's reports stop
    reaching the heartbeat file): the kubelet's liveness probe fails, the driver is killed and the
    operator restarts the application, which resumes and prints windows again."""
    old = get(release, "-n", NAMESPACE, "pod", DRIVER)["metadata"]["uid"]
    attempts = get(release, "-n", NAMESPACE, "sparkapplication", APP)["status"].get("executionAttempts", 0)
    release.kubectl(
        "-n",
        NAMESPACE,
        "exec",
        DRIVER,
        "--",
        "pkill",
        "-STOP",
        "-f",
        "python3? /opt/sensorstream/jobs/spark_entrypoint.py",
    )
    started = time.monotonic()

    def probe_failed():
        found = get(release, "-n", NAMESPACE, "events", "--field-selector", f"involvedObject.uid={old}") or {}
        return [e for e in found.get("items", []) if e.get("reason") == "Unhealthy" and "Liveness" in e["message"]]

    failures = wait_for("the driver's liveness probe failing", probe_failed, 300, every=5)
    failed_after = time.monotonic() - started

    wait_new_driver(release, old)
    restarted = time.monotonic() - started
    wait_for("window rows in the new driver's log", lambda: window_rows(release, NAMESPACE, DRIVER), 600)
    now = get(release, "-n", NAMESPACE, "sparkapplication", APP)["status"].get("executionAttempts", 0)
    assert now > attempts, (attempts, now)
    figures.add(
        f"driver's Python stopped: liveness probe failed after {failed_after:.0f} s "
        f"({failures[0]['message'][:80]!r}), the application restarted with a new driver after "
        f"{restarted:.0f} s, window rows again after {time.monotonic() - started:.0f} s"
    )


def follow_log(release, pod: str) -> subprocess.Popen:
    env = kubectl_env(release.kubeconfig)
    return subprocess.Popen(
        [str(release.bin / "kubectl"), "-n", NAMESPACE, "logs", "-f", pod],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def totals(follower: subprocess.Popen, what: str) -> tuple[int, int, int, list[str]]:
    """The totals line a producer Pod prints when it stops, and its 'delivery failed' lines."""
    try:
        out, _ = follower.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        follower.kill()
        out, _ = follower.communicate()
    found = DONE.findall(out)
    assert found, f"no totals line in the log of {what}:\n{out[-3000:]}"
    sent, acked, failed = map(int, found[-1])
    return sent, acked, failed, [line for line in out.splitlines() if "delivery failed" in line]


def pod_events(release, pod: str) -> str:
    """A Pod's events (reason: message) and its previous container's last log lines: what a failed
    check shows of why it restarted."""
    out = release.kubectl(
        "-n", NAMESPACE, "get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json", check=False
    )
    items = json.loads(out.stdout).get("items", []) if out.returncode == 0 else []
    events = [f"{e.get('reason')}: {(e.get('message') or '')[:200]}" for e in items]
    previous = release.kubectl("-n", NAMESPACE, "logs", pod, "--previous", "--tail", "15", check=False)
    return f"{events}; previous container's log: {previous.stdout[-1500:]!r}"


def test_producer_pod_deleted_loses_no_acknowledged_reading(release, kafka, figures):
    """The Deployment replaces the Pod; every reading either Pod had acknowledged is in the topic:
    with both Pods stopped (the second by scaling to 0), the topic holds at least what they acked
    and at most what they sent (a reading counted as failed may still have been written)."""
    [first] = running_pods(release, NAMESPACE, component("producer"))
    restarted = [c for c in first["status"]["containerStatuses"] if c["restartCount"]]
    assert not restarted, (
        "the producer's first Pod restarted: its totals would not cover the whole topic; "
        + "; ".join(f"{c['name']}: {c['restartCount']} restart(s), last {c.get('lastState')}" for c in restarted)
        + f"; events: {pod_events(release, first['metadata']['name'])}"
    )
    follower = follow_log(release, first["metadata"]["name"])
    time.sleep(2)
    started = time.monotonic()
    release.kubectl("-n", NAMESPACE, "delete", "pod", first["metadata"]["name"], "--wait=false")
    sent1, acked1, failed1, errors1 = totals(follower, "the deleted producer Pod")

    def replaced():
        return [
            p
            for p in running_pods(release, NAMESPACE, component("producer"))
            if p["metadata"]["uid"] != first["metadata"]["uid"] and ready(p)
        ]

    [second] = wait_for("the replacement producer Pod Ready", replaced, 300)
    replaced_after = time.monotonic() - started
    follower = follow_log(release, second["metadata"]["name"])
    time.sleep(15)
    release.kubectl("-n", NAMESPACE, "scale", "deployment", f"{RELEASE}-producer", "--replicas=0")
    sent2, acked2, failed2, errors2 = totals(follower, "the replacement producer Pod")
    in_topic = end_offsets(kafka, "input_topic")
    release.kubectl("-n", NAMESPACE, "scale", "deployment", f"{RELEASE}-producer", "--replicas=1")
    assert acked1 + acked2 <= in_topic <= sent1 + sent2, (in_topic, acked1, acked2, sent1, sent2)
    figures.add(
        f"producer Pod deleted: it acked {acked1} of {sent1} ({failed1} failed); replaced and Ready after "
        f"{replaced_after:.0f} s; the replacement acked {acked2} of {sent2} ({failed2} failed); input topic "
        f"{in_topic} (acked {acked1 + acked2}, sent {sent1 + sent2})"
        + (f"; failures: {sorted(set(errors1 + errors2))[:3]}" if errors1 or errors2 else "")
    )


# --- the release's life -------------------------------------------------------------------------
def claims(release) -> dict[str, dict]:
    found = get(release, "-n", NAMESPACE, "pvc") or {"items": []}
    return {c["metadata"]["name"]: c for c in found["items"]}


def test_uninstall_keeps_the_claims_and_a_new_install_adopts_them(release, kafka, figures):
    names = {f"{RELEASE}-checkpoints", f"{RELEASE}-reports"}
    before = claims(release)
    assert names <= before.keys() and all(before[n]["status"]["phase"] == "Bound" for n in names), before.keys()
    started = time.monotonic()
    release.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    wait_for(
        "the release's Pods gone", lambda: not pods(release, NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"), 300
    )
    uninstalled = time.monotonic() - started
    kept = claims(release)
    assert names <= kept.keys(), kept.keys()
    release.helm(*install_args(kafka))
    adopted = claims(release)
    for name in names:
        assert adopted[name]["metadata"]["uid"] == before[name]["metadata"]["uid"], name
        assert adopted[name]["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
    wait_spark_running(release, NAMESPACE, APP, timeout=600)
    wait_for("window rows from the reinstalled stream", lambda: window_rows(release, NAMESPACE, DRIVER), 600)
    figures.add(
        f"helm uninstall in {uninstalled:.0f} s kept {sorted(names)}; a new install adopted them "
        f"(same uids) and the stream runs again ({time.monotonic() - started:.0f} s in all)"
    )


def test_the_host_is_as_it_was_after_the_node_stops(node, spark_operator, figures):
    """Last: the node stopped (every process by pid), then what the kubelet, kube-proxy, containerd
    and CNI changed is put back; the sysctls, nftables tables, links, mounts, fixed folders and
    cgroups are as they were before the node started."""
    spark_operator.stop()
    started = time.monotonic()
    differences = node.stop()
    figures.add(node.memory.line())
    figures.add(
        f"node stopped and the host put back in {time.monotonic() - started:.0f} s: "
        f"{'; '.join(node.restore_actions) or 'nothing to put back'}"
    )
    assert not differences, differences
    assert not node.alive()
    with open("/proc/sys/net/ipv4/ip_forward") as forward:  # never turned on: nothing was routed off
        assert forward.read().strip() == node.before.sysctls["net.ipv4.ip_forward"]
