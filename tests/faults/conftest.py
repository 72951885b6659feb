"""The fault tests' own cluster: three real brokers (the code of `sensorstream local up --brokers 3`)
on free ports, for the whole session, stopped at the end by the pids it wrote."""

from __future__ import annotations

import pytest

from support.cluster import FaultCluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    faults = FaultCluster(tmp_path_factory.mktemp("faults-cluster"))
    faults.up()
    try:
        yield faults
    finally:
        faults.down()


@pytest.fixture(autouse=True)
def all_brokers_up(cluster):
    """Every test starts, and leaves, with all three brokers running."""
    cluster.up()
    yield
    cluster.up()


_FIGURES: list[str] = []


@pytest.fixture
def figures(request):
    """figures("...") records one line of a test's figures; all are printed at the end of the run."""

    def say(line: str) -> None:
        text = f"{request.node.name}: {line}"
        _FIGURES.append(text)
        print(text)

    return say


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("fault figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
