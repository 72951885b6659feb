"""Fixtures of the node tests (`make test-node`, marker `node`): one real node for the session
(node.py), a Kafka broker on the node's bridge address, the real Spark Operator, the project's
image in containerd, and the chart installed as a user installs it.

They need root (a bridge, containerd, the kubelet), `make node-tools` and `make image-archive`
first; without them the tests fail with the command that builds what is missing (a skipped test
is not a passing one). A plain `pytest` (make test) leaves them out, unless asked for by marker
or by path.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

import pytest

from apiserver.controlplane import SparkOperator, missing_binaries
from sensorstream.local.broker import LocalKafka
from sensorstream.local.ports import free_port
from sensorstream.local.topics import ensure_topics, specs_from_values
from support.chart import RELEASE, crds_dir
from support.places import K8S, KAFKA_JARS, ROOT

from .node import HOST_IP, NODE_BINARIES, PAUSE_ARCHIVE, Node

HERE = Path(__file__).resolve().parent
NAMESPACE = "sensorstream"
#: The image `make image-archive` exports for containerd (tag: the chart's appVersion).
IMAGE_ARCHIVE_DIR = ROOT / ".sensorstream" / "image"


def pytest_collection_modifyitems(config, items):
    """Leave the node tests out of a run that did not ask for them (-m node, or a path here)."""
    if "node" in (config.getoption("markexpr") or ""):
        return
    if any(p == HERE or HERE in p.parents for p in (Path(a.split("::")[0]).resolve() for a in config.args)):
        return
    keep, left_out = [], []
    for item in items:
        (left_out if item.get_closest_marker("node") else keep).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep


def image_archive() -> Path:
    archives = sorted(IMAGE_ARCHIVE_DIR.glob("sensorstream-*.tar"), key=lambda p: p.stat().st_mtime)
    if not archives:
        pytest.fail(
            f"the project's image is not exported: no {IMAGE_ARCHIVE_DIR}/sensorstream-*.tar; run "
            "`make image-archive` (builds the image with buildah when there is no Docker)",
            pytrace=False,
        )
    return archives[-1]


class Figures:
    """Figures the suite prints: as they come (with -s) and in the terminal summary at the end."""

    lines: ClassVar[list[str]] = []  # the session's, for pytest_terminal_summary

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(f"[node] {line}", flush=True)


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


def pytest_terminal_summary(terminalreporter):
    if Figures.lines:
        terminalreporter.write_sep("-", "node figures")
        for line in Figures.lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def node(tmp_path_factory, figures) -> Node:
    if os.geteuid() != 0:
        pytest.fail("the node tests need root (a bridge, containerd, the kubelet)", pytrace=False)
    missing = missing_binaries(
        (*NODE_BINARIES, "etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm", "spark-operator")
    )
    if missing or not PAUSE_ARCHIVE.is_file():
        pytest.fail(f"not built: {', '.join(missing) or PAUSE_ARCHIVE}; run `make node-tools`", pytrace=False)
    archive = image_archive()
    crds = crds_dir()
    if crds is None:
        pytest.fail("operator CRDs not found: neither $SENSORSTREAM_CRDS_DIR nor ../shared/crds exists", pytrace=False)
    started = time.monotonic()
    cluster = Node(tmp_path_factory.mktemp("node")).start()
    try:
        figures.add(
            "node Ready in {:.0f} s ({})".format(
                time.monotonic() - started, ", ".join(f"{k} {v:.1f} s" for k, v in cluster.timings.items())
            )
        )
        begun = time.monotonic()
        cluster.plane.apply_crds(crds)
        cluster.import_image(archive)
        figures.add(
            f"image {archive.name} ({archive.stat().st_size / 2**20:.0f} MiB) imported in "
            f"{time.monotonic() - begun:.0f} s (with the CRDs)"
        )
        yield cluster
    finally:
        differences = cluster.stop()
        if differences:  # the last test says so too; this covers a run that ended before it
            figures.add(f"the host differs from before the node: {differences}")


@pytest.fixture(scope="session")
def kafka(node, tmp_path_factory) -> str:
    """A broker on the node's bridge address, where Pods reach it, with the chart's topics."""
    cluster = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), host=HOST_IP, jars_dir=KAFKA_JARS)
    with cluster.running() as bootstrap:
        ensure_topics(bootstrap, specs_from_values(max_replicas=1).values(), cluster.client_settings())
        yield bootstrap


@pytest.fixture(scope="session")
def spark_operator(node) -> SparkOperator:
    node.plane.create_namespace(NAMESPACE)
    operator = SparkOperator(node.plane, [NAMESPACE], webhook_namespaces=[NAMESPACE]).start()
    try:
        yield operator
    finally:
        operator.stop()


def install_args(bootstrap: str) -> list[str]:
    return [
        "upgrade",
        "--install",
        RELEASE,
        str(ROOT / "charts" / "sensorstream"),
        "--namespace",
        NAMESPACE,
        "--values",
        str(K8S / "values-node.yaml"),
        "--set",
        f"kafka.bootstrapServers={bootstrap}",
    ]
