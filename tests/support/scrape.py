"""Reading Prometheus endpoints and the dashboard's queries: the metric names on both sides."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)
#: What a dashboard query names: our metrics and Spark's (metrics_<namespace>_...).
_QUERIED = re.compile(r"\b((?:sensorstream|metrics_sensorstream)_[A-Za-z0-9_]+)\b")


def scrape(url: str, timeout: float = 5) -> dict[str, list[tuple[str, float]]]:
    """name -> [(labels text, value)] of every sample an endpoint serves; {} when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            text = answer.read().decode("utf-8")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}
    samples: dict[str, list[tuple[str, float]]] = {}
    for name, labels, number in _SAMPLE.findall(text):
        try:
            sample = (labels, float(number))
        except ValueError:  # not a sample: the UI answers with a page of text while it starts
            continue
        samples.setdefault(name, []).append(sample)
    return samples


def value(samples: dict, name: str, labels: str = "") -> float:
    """The sum of a metric's samples whose labels contain `labels` (0 when absent)."""
    return sum(v for text, v in samples.get(name, []) if labels in text)


def dashboard_metrics(path: Path) -> set[str]:
    """Every metric name the dashboard's queries (and template variables) name."""
    text = json.dumps(json.loads(path.read_text(encoding="utf-8")))
    return set(_QUERIED.findall(text))
