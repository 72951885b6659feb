"""Fixtures of the apiserver tests: one control plane for the session (etcd, kube-apiserver,
kube-controller-manager, the operators' CRDs), and the Spark Operator when a test asks for it.

These tests run with `make test-k8s` (pytest -m apiserver) after `make k8s-tools`; a plain
`pytest` (make test) leaves them out, unless asked for by marker or by path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.chart import GENERATED_CRDS, crds_dir

from .controlplane import BIN, BUILD_COMMAND, ControlPlane, SparkOperator, missing_binaries
from .support import SPARK_PLAIN_NS, SPARK_UNTEMPLATED_NS, SPARK_WEBHOOK_NS

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Leave the apiserver tests out of a run that did not ask for them (-m apiserver, or a path in
    this folder): they need `make k8s-tools` first and take minutes."""
    if "apiserver" in (config.getoption("markexpr") or ""):
        return
    if any(p == HERE or HERE in p.parents for p in (Path(a.split("::")[0]).resolve() for a in config.args)):
        return
    keep, left_out = [], []
    for item in items:
        (left_out if item.get_closest_marker("apiserver") else keep).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep


def skip_unless_built(*names: str) -> None:
    missing = missing_binaries(*names)
    if missing:
        pytest.skip(
            f"not built: {', '.join(missing)} in {BIN}. Build them with `{BUILD_COMMAND}` (once; 10-20 minutes)"
        )


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> ControlPlane:
    skip_unless_built()
    crds = crds_dir()
    if crds is None:
        pytest.skip("operator CRDs not found: neither $SENSORSTREAM_CRDS_DIR nor ../shared/crds exists")
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    try:
        plane.apply_crds(crds, *([GENERATED_CRDS] if GENERATED_CRDS.is_dir() else []))  # + the ServiceMonitor's
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def spark_operator(control_plane) -> SparkOperator:
    skip_unless_built(["spark-operator"])
    namespaces = [SPARK_WEBHOOK_NS, SPARK_PLAIN_NS, SPARK_UNTEMPLATED_NS]
    for name in namespaces:
        control_plane.create_namespace(name)
    operator = SparkOperator(control_plane, namespaces, webhook_namespaces=[SPARK_WEBHOOK_NS])
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
