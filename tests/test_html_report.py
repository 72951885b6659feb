"""The HTML report: one self-contained page (no network at view time) with per-sensor charts, the
data-quality counts and the table; and, rendered by a real browser (headless Chromium), not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from sensorstream import html_report, report
from sensorstream.producer import produce
from support.png import read_pixels
from support.readings import RecordingSimulator, stepping_clock

CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium (Debian; `make browser` does it)"
T = datetime(2026, 1, 31, 8, 0, tzinfo=timezone.utc)


def _series() -> dict:
    points = [html_report.Point(T + timedelta(minutes=5 * i), 20 + i, 18 + i, 23 + i) for i in range(6)]
    return {"sensor_1": {"temperature": points, "humidity": points}, "sensor_2": {}}


def test_the_page_is_self_contained_and_has_a_chart_per_sensor_and_metric():
    columns = ["sensor_id", "total_readings", "avg_temperature", "first_seen"]
    rows = [("sensor_1", 6, 22.5, T), ("sensor_2", 0, None, None)]
    quality = {"input_topic": "in", "records": 10, "valid": 6, "rejected": {"invalid JSON": 3, "out of range": 1}}
    page = html_report.render(columns, rows, quality, _series(), T)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing to fetch: no scripts, stylesheets, images or fonts from anywhere
    assert not re.search(r"<script|<link|<img|<iframe|url\(|@import|src=", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") == 2 * 3  # two sensors, three metrics each
    assert page.count("<polygon") == 2 and page.count("<polyline") == 2  # sensor_1's two metrics with data
    assert page.count("no readings") == 4
    for text in (
        "records read",
        "<b>10</b>",
        "rejected: invalid JSON",
        "<b>3</b>",
        "<th>avg_temperature</th>",
        "<td>22.500</td>",
        "2026-01-31 08:00:00",
    ):
        assert text in page, text


def _charts(page: str, sensor: str) -> dict[str, str]:
    """metric -> the SVG of that chart of the sensor."""
    section = page.split(f"<h3>{sensor}", 1)[1].split("</section>", 1)[0]
    return {re.search(r'aria-label="(\w+)', svg)[1]: svg for svg in section.split("</svg>")[:-1]}


def _alert(kind: str, minutes: float, metric: str | None = None, value: float | None = None, expected=(None, None)):
    return html_report.Alert(kind, metric, value, *expected, T + timedelta(minutes=minutes))


def test_alerts_are_marked_on_their_sensors_charts():
    alerts = {
        "sensor_1": [
            _alert("spike", 7, "temperature", 31.0, (19.5, 24.5)),
            _alert("stuck", 12, value=21.25),
            _alert("silent", 15),
            _alert("back", 35),  # after the last window's start: the time axis reaches it
        ],
        "sensor_2": [_alert("silent", 3)],  # no readings: no chart to mark
    }
    page = html_report.render(["sensor_id"], [("sensor_1",), ("sensor_2",)], {}, _series(), T, alerts)
    charts = _charts(page, "sensor_1")
    assert sorted(charts) == ["humidity", "pressure", "temperature"]
    kinds = {m: re.findall(r'class="alert (\w+)"', svg) for m, svg in charts.items()}
    assert kinds["temperature"] == ["silent", "spike", "stuck"]  # the silence behind the data, the rest over it
    assert kinds["humidity"] == ["silent", "stuck"]  # a spike of temperature is not humidity's
    assert kinds["pressure"] == []  # no readings of pressure: "no readings", no marks
    assert "<title>spike: temperature 31.00 °C, expected 19.50 to 24.50 °C, at 2026-01-31 08:07:00 UTC</title>" in page
    assert "<title>stuck: the same readings repeated (temperature 21.25 °C, ...), at 2026-01-31 08:12:00 UTC" in page
    assert (
        "<title>silent: no reading after 2026-01-31 08:15:00 UTC; back: a reading again at 2026-01-31 08:35:00 UTC"
        "</title>" in page
    )
    assert "01-31 08:35 UTC</text>" in charts["temperature"]  # the axis ends at the back, past the windows
    # every mark inside the plot: x from 52 to 350 (WIDTH 360, paddings 52 and 10)
    for x in re.findall(r'<g class="alert \w+"><title>[^<]*</title>(?:<path d="M|<rect x=")([\d.]+)', page):
        assert 52 - 5 <= float(x) <= 350, x
    assert "alerts: spike 1, stuck 1, silent 1, back 1</span>" in page
    assert "hover a mark" in page  # the legend, once
    assert not re.search(r"<script|<link|<img|url\(|@import|src=", page, re.IGNORECASE)


def test_no_alerts_no_marks():
    page = html_report.render(["sensor_id"], [("sensor_1",)], {"alerts_topic": None}, _series(), T)
    assert 'class="alert' not in page and "hover a mark" not in page and "; no alerts topic" in page


def test_markup_in_data_is_escaped():
    page = html_report.render(["sensor_id"], [("<script>x</script>",)], {"input_topic": "<b>"}, {}, T)
    assert "<script>" not in page and "&lt;script&gt;" in page


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip(f"chromium not found: {CHROMIUM_INSTALL}")
    return found


@pytest.mark.kafka
@pytest.mark.spark
@pytest.mark.slow
def test_a_browser_shows_the_report(kafka_settings, spark, tmp_path):
    browser = _chromium()
    simulator = RecordingSimulator(
        sensors=4, seed=11, clock=stepping_clock(step=timedelta(seconds=6)), bad_ratio=0.05, late_ratio=0.05
    )
    assert produce(kafka_settings, simulator, count=600, rate=0).acked == 600
    result = report.run(spark, kafka_settings.replace(report_formats=("csv", "html")))
    page = result.folder / "sensor_report.html"
    assert sorted(p.name for p in result.files) == ["quality.json", "sensor_report.csv", "sensor_report.html"]
    text = page.read_text(encoding="utf-8")
    assert text.count("<polyline") == 4 * 3  # every sensor has readings of every metric
    assert text.count("<circle") >= 4 * 3 * 10  # an hour of readings: a dozen 5-minute windows per chart

    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,1200",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    width, height, pixels = read_pixels(shot)
    assert (width, height) == (1280, 1200)
    white = sum(1 for p in pixels if min(p) >= 245)
    colours = {p for p in pixels[::7]}
    assert white < 0.97 * len(pixels), "the page is (nearly) blank"
    assert len(colours) > 50, "too few colours for charts and text"
    # the charts' colours are on screen: red-ish temperature and blue-ish humidity lines
    assert any(r > 180 and g < 120 and b < 120 for r, g, b in colours)
    assert any(b > 150 and r < 100 for r, g, b in colours)
