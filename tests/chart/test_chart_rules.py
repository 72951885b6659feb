"""The chart's alerting rules (PrometheusRule, values `metrics.prometheusRule`), run by Prometheus'
own `promtool test rules` on series that should and should not fire them. promtool is built from
the Go module proxy by `make promtool` (which `make test` runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sensorstream.readings import ALERT_KINDS
from support.chart import REHEARSE, VALUES_SETS, by_kind, render

pytestmark = pytest.mark.chart

#: Each rule's cases: promtool series (one sample a minute), then (minute, the alerts firing then).
DRIVER = 'instance="driver:9090"'
STREAM = 'namespace="iot", service="sensorstream-stream-metrics"'
CASES = {
    "SensorstreamStreamStopped": (
        # reported every minute for 4 minutes, then never again (stuck at 240 s)
        [(f"sensorstream_stream_last_progress_timestamp_seconds{{{DRIVER}}}", "0+60x4 240x12")],
        [
            (5, []),
            (9, []),  # 300 s since: not more than the 300 allowed
            (
                10,
                [
                    {
                        "exp_labels": {"severity": "critical", "instance": "driver:9090"},
                        "exp_annotations": {
                            "summary": "sensorstream's stream has not advanced for 300 s",
                            "description": "driver:9090: no micro-batch and no idle report from Spark for 6m 0s; "
                            "see the driver's log (kubectl logs) and `sensorstream status`.",
                        },
                    }
                ],
            ),
        ],
    ),
    "SensorstreamDeadLetters": (
        [
            (f'sensorstream_stream_dead_letters_total{{{STREAM}, reason="invalid_json"}}', "0+30x40"),
            (f'sensorstream_stream_dead_letters_total{{{STREAM}, reason="out_of_range"}}', "0+30x40"),
            (f"sensorstream_stream_input_records_total{{{STREAM}}}", "0+600x40"),  # 10 %
        ],
        [
            (5, []),  # above the ratio, not yet for 10 minutes
            (
                20,
                [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "namespace": "iot",
                            "service": "sensorstream-stream-metrics",
                        },
                        "exp_annotations": {
                            "summary": "More than 5 % of the input goes to the dead-letter topic",
                            "description": "10% of the records read in the last 10 minutes were rejected; the "
                            "dead-letter topic has each one with its reason.",
                        },
                    }
                ],
            ),
        ],
    ),
    "SensorstreamProducerFailing": (
        [('sensorstream_producer_records_failed_total{instance="producer:9090"}', "0x5 0+12x20")],
        [
            (5, []),
            (9, []),  # failing, not yet for 5 minutes
            (
                20,
                [
                    {
                        "exp_labels": {"severity": "warning", "instance": "producer:9090"},
                        "exp_annotations": {
                            "summary": "The producer's deliveries are failing",
                            "description": "producer:9090: 0.20 records/s failing delivery for 5m; "
                            "sensorstream_producer_errors_total says why.",
                        },
                    }
                ],
            ),
        ],
    ),
    "SensorstreamSensorAlerts": (
        [
            # from minute 6, two spikes a minute and a silent sensor coming back every minute
            (f'sensorstream_alerts_total{{{STREAM}, kind="spike"}}', "0x5 1+2x25"),
            (f'sensorstream_alerts_total{{{STREAM}, kind="back"}}', "0x5 1+1x25"),  # good news: never fires
            (f'sensorstream_alerts_total{{{STREAM}, kind="stuck"}}', "0x30"),
        ],
        [
            (5, []),
            (9, []),  # alerts since minute 6, not yet for 5 minutes
            (
                15,
                [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "namespace": "iot",
                            "service": "sensorstream-stream-metrics",
                            "kind": "spike",
                        },
                        "exp_annotations": {
                            "summary": "sensorstream's detector raises spike alerts",
                            "description": "19 spike alert(s) in the last 10 minutes. Which sensors: the log lines "
                            "of the stream driver starting with `alert:` (kubectl -n sensorstream logs "
                            "sensorstream-stream-driver | grep alert:), and every alert on the topic alerts_topic.",
                        },
                    }
                ],
            ),
        ],
    ),
}

#: Healthy series: no rule fires.
HEALTHY = [
    (f"sensorstream_stream_last_progress_timestamp_seconds{{{DRIVER}}}", "0+60x30"),
    (f'sensorstream_stream_dead_letters_total{{{STREAM}, reason="invalid_json"}}', "0+6x30"),  # 1 %
    (f"sensorstream_stream_input_records_total{{{STREAM}}}", "0+600x30"),
    ('sensorstream_producer_records_failed_total{instance="producer:9090"}', "3x30"),  # failed once, long ago
    *[(f'sensorstream_alerts_total{{{STREAM}, kind="{kind}"}}', "0x30") for kind in ALERT_KINDS],  # detector on
]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = REHEARSE.find_tool("promtool")
    if not path:
        pytest.fail("promtool not found ($PROMTOOL, .sensorstream/tools/bin or PATH): build it with `make promtool`")
    return path


@pytest.fixture(scope="module")
def rules_file(rendered, tmp_path_factory) -> Path:
    (rule,) = by_kind(rendered["monitoring"], "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid(promtool, rules_file):
    done = _promtool(promtool, "check", "rules", str(rules_file))
    assert done.returncode == 0, done.stdout + done.stderr


def _test_file(folder: Path, rules_file: Path, series, checks) -> Path:
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": name, "values": values} for name, values in series],
            "alert_rule_test": [
                {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": alerts}
                for alert, minute, alerts in checks
            ],
        }
    ]
    path = folder / "tests.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}))
    return path


@pytest.mark.parametrize("alert", sorted(CASES))
def test_each_rule_fires_when_it_should(promtool, rules_file, tmp_path, alert):
    series, evaluations = CASES[alert]
    checks = [(alert, minute, alerts) for minute, alerts in evaluations]
    done = _promtool(promtool, "test", "rules", str(_test_file(tmp_path, rules_file, series, checks)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_rule_fires_on_a_healthy_pipeline(promtool, rules_file, tmp_path):
    checks = [(alert, minute, []) for alert in CASES for minute in (5, 15, 29)]
    done = _promtool(promtool, "test", "rules", str(_test_file(tmp_path, rules_file, HEALTHY, checks)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_sensor_alerts_fire_above_the_values_threshold_only(helm, promtool, tmp_path):
    """The case above: 2 spikes a minute, 20 in any 10 minutes from minute 16 on; not more than 20."""
    docs = render(helm, VALUES_SETS["monitoring"], sets=["metrics.prometheusRule.sensorAlerts=20"])
    (rule,) = by_kind(docs, "PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    series, _ = CASES["SensorstreamSensorAlerts"]
    checks = [("SensorstreamSensorAlerts", minute, []) for minute in (15, 25, 30)]
    done = _promtool(promtool, "test", "rules", str(_test_file(tmp_path, rules_file, series, checks)))
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_rules_unless_asked(rendered):
    assert not by_kind(rendered["default"], "PrometheusRule")
