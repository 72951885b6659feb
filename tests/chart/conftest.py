"""Fixtures of the chart tests: helm (built by `make helm`), the rendered chart per values set, the
operators' CRD schemas (from ../shared/crds or $SENSORSTREAM_CRDS_DIR, never copied in, and the
Prometheus Operator's, which `make crds` generates into .sensorstream/crds)."""

from __future__ import annotations

import pytest

from support.chart import GENERATED_CRDS, VALUES_SETS, crd_schemas, crds_dir, helm_path, render


@pytest.fixture(scope="session")
def helm() -> str:
    path = helm_path()
    if not path:
        pytest.fail(
            "helm not found ($HELM, .sensorstream/tools/bin/helm or PATH): build it with `make helm`", pytrace=False
        )
    return path


@pytest.fixture(scope="session")
def rendered(helm) -> dict[str, list[dict]]:
    """values set name -> the rendered objects."""
    return {name: render(helm, files) for name, files in VALUES_SETS.items()}


@pytest.fixture(scope="session")
def crds() -> dict:
    folder = crds_dir()
    if folder is None:
        pytest.skip(
            "operator CRDs not found: neither $SENSORSTREAM_CRDS_DIR nor ../shared/crds exists "
            "(copies of the Strimzi 1.2.0 and Spark Operator 2.5.2 CRDs)"
        )
    schemas = crd_schemas(folder)
    if GENERATED_CRDS.is_dir():
        schemas.update(crd_schemas(GENERATED_CRDS))
    return schemas
