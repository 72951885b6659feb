"""charts/sensorstream/README.md is generated from values.yaml's `# --` comments (k8s/chart-readme.py):
it must be exactly what the script writes for the chart as it is, so a value and its documentation
cannot drift apart."""

from __future__ import annotations

import importlib.util

from support.places import CHART, K8S


def _chart_readme():
    spec = importlib.util.spec_from_file_location("chart_readme", K8S / "chart-readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_chart_readme_is_generated_from_values_yaml():
    written = (CHART / "README.md").read_text(encoding="utf-8")
    assert written == _chart_readme().current(), (
        "charts/sensorstream/README.md differs from values.yaml's comments: run .venv/bin/python k8s/chart-readme.py"
    )


def test_every_value_key_with_a_comment_has_a_row():
    module = _chart_readme()
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    _, docs = module.documented(text)
    rows = [line.split("|")[1].strip().strip("`") for line in module.current().splitlines() if line.startswith("| `")]
    assert rows == [".".join(path) for path, _ in docs]
    assert len(docs) == text.count("# --")  # no `# --` comment is lost to a blank line or a misplaced key
